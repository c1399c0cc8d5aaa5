#pragma once
/// \file
/// A pipeline is a hana::tuple of pass values, validated at compile time by a
/// type-changing fold over an "available facts" hana::set: each pass's
/// `consumes` must be available, then `available = (available − invalidates) ∪ produces`.
/// The fold also remembers, in a hana::map, which pass last dropped each fact, so
/// that a missing fact's compile error names the pass that invalidated it.
/// Reordering, inserting or dropping a pass builds a new pipeline, validated again.

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/facts.hpp>
#include <torchlens/pipeline/instrumentation.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <boost/hana/at.hpp>
#include <boost/hana/at_key.hpp>
#include <boost/hana/contains.hpp>
#include <boost/hana/difference.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/intersection.hpp>
#include <boost/hana/map.hpp>
#include <boost/hana/pair.hpp>
#include <boost/hana/set.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/union.hpp>
#include <boost/hana/unpack.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace torchlens {

namespace detail {

template <class...>
inline constexpr bool always_false = false;

/// The failure type of pipeline validation: `Pass` consumes `Fact`, but no pass
/// before it produces it.
template <class Pass, class Fact>
struct unmet_requirement {
  // ===========================================================================
  // READ THIS IF YOUR COMPILE BREAKS HERE
  //
  // A pipeline lists a pass whose `consumes` names a fact that is not available
  // at that point. The two template arguments of `unmet_requirement<Pass, Fact>`
  // in the "required from" line of the error are the pass and the missing fact.
  // Fix it by running a pass that `produces` Fact earlier, or by moving Pass
  // later.
  // ===========================================================================
  static_assert(always_false<Pass, Fact>, // READ THIS IF YOUR COMPILE BREAKS HERE (comment above)
                "torchlens: a pass consumes a fact that no earlier pass produces "
                "(see the types in unmet_requirement<Pass, Fact>)");
  static constexpr bool value = false;
};

/// The failure type of pipeline validation: `Pass` consumes `Fact`, which an
/// earlier pass produced but `InvalidatedBy` (the last pass to drop it) invalidated.
template <class Pass, class Fact, class InvalidatedBy>
struct invalidated_requirement {
  // ===========================================================================
  // READ THIS IF YOUR COMPILE BREAKS HERE
  //
  // A pipeline lists a pass whose `consumes` names a fact that an earlier pass
  // produced, but a pass in between `invalidates` it (a pass invalidating
  // facts::Topology — the default of a pass that declares nothing — drops every
  // topology-dependent fact). The three template arguments of
  // `invalidated_requirement<Pass, Fact, InvalidatedBy>` in the "required from"
  // line of the error are the pass, the missing fact and the pass that dropped it.
  // Fix it by moving InvalidatedBy after Pass, by running a pass that `produces`
  // Fact again between the two, or — if InvalidatedBy keeps Fact true — by
  // declaring what it really invalidates (`using invalidates = facts::none;` for
  // a pass that adds or removes no vertex or edge and changes no fact).
  // ===========================================================================
  static_assert(always_false<Pass, Fact, InvalidatedBy>, // READ THIS (comment above)
                "torchlens: a pass consumes a fact that an earlier pass invalidated "
                "(see the types in invalidated_requirement<Pass, Fact, InvalidatedBy>)");
  static constexpr bool value = false;
};

/// The failure type when a pipeline edit names a pass the pipeline lacks.
template <class Pass, class... InPipeline>
struct pass_not_in_pipeline {
  // READ THIS IF YOUR COMPILE BREAKS HERE: insert_before/insert_after/drop/get
  // named a pass type (first template argument) that the pipeline does not hold.
  static_assert(always_false<Pass, InPipeline...>,
                "torchlens: the pipeline holds no pass of this type "
                "(see the first type in pass_not_in_pipeline<Pass, ...>)");
  static constexpr std::size_t value = 0;
};

/// The failure type when something that is not a Pass is put in a pipeline.
template <class NotAPass>
struct not_a_pass {
  // READ THIS IF YOUR COMPILE BREAKS HERE: the template argument lacks part of
  // the Pass shape (static name/description, consumes/produces/invalidates,
  // Options, options member, is_required/is_idempotent, run(ModelGraph&, PassContext&) const).
  static_assert(always_false<NotAPass>,
                "torchlens: this type is not a pass (see torchlens::Pass in pipeline/pass.hpp)");
  static constexpr bool value = false;
};

/// Checks one consumed fact of P against the available set (a dependent failure
/// if missing: invalidated_requirement when a pass dropped it, else unmet_requirement).
template <class P, class Fact, class Available, class DroppedBy>
constexpr bool check_consumed() {
  if constexpr (is_fact_set<Fact>::value) {
    return true; // its members are checked one by one
  } else if constexpr (decltype(boost::hana::contains(std::declval<Available>(),
                                                      boost::hana::type_c<Fact>))::value) {
    return true;
  } else if constexpr (decltype(boost::hana::contains(std::declval<DroppedBy>(),
                                                      boost::hana::type_c<Fact>))::value) {
    using By = typename std::remove_cvref_t<decltype(boost::hana::at_key(
        std::declval<DroppedBy>(), boost::hana::type_c<Fact>))>::type;
    return invalidated_requirement<P, Fact, By>::value;
  } else {
    return unmet_requirement<P, Fact>::value;
  }
}

/// One fold step. The state is a hana::pair of the available facts (a set) and,
/// for every fact a pass dropped while it was available, the last such pass (a
/// map fact → pass). Checks P's consumes and returns the state after P.
template <class P, class State>
constexpr auto fact_step(State state) {
  using Available = std::remove_cvref_t<decltype(boost::hana::first(state))>;
  using DroppedBy = std::remove_cvref_t<decltype(boost::hana::second(state))>;
  boost::hana::for_each(fact_set_of<typename P::consumes>(), [](auto fact) {
    (void)check_consumed<P, typename decltype(fact)::type, Available, DroppedBy>();
  });
  const auto invalidated = fact_set_of<typename P::invalidates>();
  const auto dropped_now = boost::hana::unpack(
      boost::hana::intersection(boost::hana::first(state), invalidated), [](auto... fact) {
        return boost::hana::make_map(boost::hana::make_pair(fact, boost::hana::type_c<P>)...);
      });
  return boost::hana::make_pair(
      boost::hana::union_(boost::hana::difference(boost::hana::first(state), invalidated),
                          fact_set_of<typename P::produces>()),
      boost::hana::union_(boost::hana::second(state), dropped_now)); // P replaces older entries
}

/// The fold state after running Ps... in order (validated fold; see fact_step).
template <class... Ps>
constexpr auto fold_facts() {
  return boost::hana::fold_left(
      boost::hana::tuple_t<Ps...>,
      boost::hana::make_pair(boost::hana::make_set(), boost::hana::make_map()),
      [](auto state, auto pass) { return fact_step<typename decltype(pass)::type>(state); });
}

/// The facts available after running Ps... in order (a hana::set of hana::type).
template <class... Ps>
using available_facts_t = std::remove_cvref_t<decltype(boost::hana::first(fold_facts<Ps...>()))>;

/// Index of the first P among Ts..., or a dependent failure.
template <class P, class... Ts>
constexpr std::size_t index_of() {
  constexpr std::array<bool, sizeof...(Ts)> same{std::is_same_v<P, Ts>...};
  for (std::size_t i = 0; i < same.size(); ++i) {
    if (same[i]) return i;
  }
  return sizeof...(Ts);
}

template <class P, class... Ts>
constexpr std::size_t checked_index_of() {
  constexpr std::size_t i = index_of<P, Ts...>();
  if constexpr (i == sizeof...(Ts)) {
    return pass_not_in_pipeline<P, Ts...>::value;
  } else {
    return i;
  }
}

template <class P>
constexpr bool check_is_pass() {
  if constexpr (Pass<P>) {
    return true;
  } else {
    return not_a_pass<P>::value;
  }
}

} // namespace detail

template <class... Ps>
class Pipeline;

/// Builds a pipeline from pass values; fails to compile if a pass consumes a
/// fact that no earlier pass produces.
template <class... Ps>
auto make_pipeline(Ps... passes) {
  static_assert((detail::check_is_pass<Ps>() && ...));
  return Pipeline<Ps...>(std::move(passes)...);
}

/// An ordered, statically validated list of passes.
template <class... Ps>
class Pipeline {
 public:
  /// The facts available after the whole pipeline (validated on instantiation).
  using available = detail::available_facts_t<Ps...>;
  /// Number of passes.
  static constexpr std::size_t size = sizeof...(Ps);

  /// Holds the given pass values.
  explicit Pipeline(Ps... passes) : passes_(std::move(passes)...) {}

  /// True when fact F holds after the whole pipeline.
  template <class F>
  static constexpr bool provides =
      decltype(boost::hana::contains(std::declval<available>(), boost::hana::type_c<F>))::value;

  /// True when the pipeline holds a pass of type P.
  template <class P>
  static constexpr bool contains = detail::index_of<P, Ps...>() < sizeof...(Ps);

  /// The passes, as a hana::tuple.
  [[nodiscard]] const boost::hana::tuple<Ps...>& passes() const { return passes_; }

  /// The first pass of type P.
  template <class P>
  [[nodiscard]] const P& get() const {
    return boost::hana::at_c<detail::checked_index_of<P, Ps...>()>(passes_);
  }

  /// Runs every pass on g; returns the per-pass records.
  std::vector<PassRecord> run(ModelGraph& g) const {
    PassContext ctx;
    run(g, ctx);
    return std::move(ctx.records);
  }

  /// Runs every pass on g with a caller-provided context (hooks, cached analyses).
  void run(ModelGraph& g, PassContext& ctx) const {
    ctx.records.reserve(ctx.records.size() + size);
    std::size_t index = 0;
    // without hooks, one clock read per pass: a pass's end is the next one's start
    auto clock = std::chrono::steady_clock::now();
    boost::hana::for_each(passes_,
                          [&](const auto& pass) { run_one(pass, index++, g, ctx, clock); });
  }

  /// A new pipeline with `pass` inserted before the first pass of type P.
  template <class P, class X>
  [[nodiscard]] auto insert_before(X pass) const {
    constexpr std::size_t pos = detail::checked_index_of<P, Ps...>();
    return splice<pos, 0>(std::make_index_sequence<pos>{}, std::make_index_sequence<size - pos>{},
                          std::move(pass));
  }

  /// A new pipeline with `pass` inserted after the first pass of type P.
  template <class P, class X>
  [[nodiscard]] auto insert_after(X pass) const {
    constexpr std::size_t pos = detail::checked_index_of<P, Ps...>() + 1;
    return splice<pos, 0>(std::make_index_sequence<pos>{}, std::make_index_sequence<size - pos>{},
                          std::move(pass));
  }

  /// A new pipeline without the first pass of type P (P must not be required).
  template <class P>
  [[nodiscard]] auto drop() const {
    static_assert(!P::is_required,
                  "torchlens: drop<P>() names a required pass (P::is_required is true)");
    constexpr std::size_t pos = detail::checked_index_of<P, Ps...>();
    return splice<pos, 1>(std::make_index_sequence<pos>{},
                          std::make_index_sequence<size - pos - 1>{});
  }

  /// A new pipeline with `pass` appended.
  template <class X>
  [[nodiscard]] auto append(X pass) const {
    return splice<size, 0>(std::make_index_sequence<size>{}, std::make_index_sequence<0>{},
                           std::move(pass));
  }

  /// Prints `name,name(opt=value),...` (options only where they differ from defaults).
  void print_pipeline(std::ostream& os) const { os << to_string(); }

  /// The print_pipeline text.
  [[nodiscard]] std::string to_string() const {
    std::string out;
    boost::hana::for_each(passes_, [&](const auto& pass) {
      if (!out.empty()) out += ",";
      out += pass_to_string(pass);
    });
    return out;
  }

 private:
  template <std::size_t Pos, std::size_t Skip, std::size_t... I, std::size_t... J, class... Xs>
  auto splice(std::index_sequence<I...>, std::index_sequence<J...>, Xs... inserted) const {
    return make_pipeline(boost::hana::at_c<I>(passes_)..., std::move(inserted)...,
                         boost::hana::at_c<Pos + Skip + J>(passes_)...);
  }

  template <class P>
  static void run_one(const P& pass, std::size_t index, ModelGraph& g, PassContext& ctx,
                      std::chrono::steady_clock::time_point& clock) {
    PassRecord record;
    record.name = P::name;
    record.vertices_before = boost::num_vertices(g);
    record.edges_before = boost::num_edges(g);
    const bool hooks = !ctx.instrumentation.empty();
    std::string printed = hooks ? pass_to_string(pass) : std::string();
    if (hooks) {
      ctx.instrumentation.run_before(PassEvent{P::name, printed, index, g});
      clock = std::chrono::steady_clock::now(); // the hook's time is not the pass's
    }
    record.result = pass.run(g, ctx);
    const auto t1 = std::chrono::steady_clock::now();
    record.ms = std::chrono::duration<double, std::milli>(t1 - clock).count();
    clock = t1;
    ctx.invalidate<typename P::invalidates>(record.result);
    record.vertices_after = boost::num_vertices(g);
    record.edges_after = boost::num_edges(g);
    ctx.records.push_back(std::move(record));
    if (hooks) {
      const PassRecord& done = ctx.records.back();
      ctx.instrumentation.run_after(PassEvent{P::name, printed, index, g, done.ms}, done.result);
    }
  }

  boost::hana::tuple<Ps...> passes_;
};

namespace detail {

template <class P, class X>
struct InsertBefore {
  X pass;
};
template <class P, class X>
struct InsertAfter {
  X pass;
};
template <class P>
struct Drop {};

} // namespace detail

/// Pipe closure: `pipeline | insert_before<TrimOrphansPass>(MyPass{})`.
template <class P, class X>
detail::InsertBefore<P, X> insert_before(X pass) {
  return {std::move(pass)};
}
/// Pipe closure: `pipeline | insert_after<TrimOrphansPass>(MyPass{})`.
template <class P, class X>
detail::InsertAfter<P, X> insert_after(X pass) {
  return {std::move(pass)};
}
/// Pipe closure: `pipeline | drop<ComputeDistancesPass>()`.
template <class P>
detail::Drop<P> drop() {
  return {};
}

template <class... Ps, class P, class X>
auto operator|(const Pipeline<Ps...>& p, detail::InsertBefore<P, X> c) {
  return p.template insert_before<P>(std::move(c.pass));
}
template <class... Ps, class P, class X>
auto operator|(const Pipeline<Ps...>& p, detail::InsertAfter<P, X> c) {
  return p.template insert_after<P>(std::move(c.pass));
}
template <class... Ps, class P>
auto operator|(const Pipeline<Ps...>& p, detail::Drop<P>) {
  return p.template drop<P>();
}

/// Writes the pipeline's textual form (`add-output-nodes,mark-output-ancestry,...`).
template <class... Ps>
std::ostream& operator<<(std::ostream& os, const Pipeline<Ps...>& p) {
  p.print_pipeline(os);
  return os;
}

} // namespace torchlens
