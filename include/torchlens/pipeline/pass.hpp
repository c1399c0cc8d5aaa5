#pragma once
/// \file
/// What a pass is: a copyable value type with static metadata (name,
/// description, consumes/produces/invalidates fact lists, nested Options) and a
/// `PassResult run(ModelGraph&, PassContext&) const`. No virtual base.

#include <torchlens/config.hpp>
#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/facts.hpp>

#include <boost/hana/for_each.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

namespace torchlens {

class PassContext;

/// One named counter a pass reports ("orphans removed": 3).
struct PassStatistic {
  std::string name;
  std::int64_t value = 0;
};

/// What a pass run reports: whether it changed the graph and its counters.
struct PassResult {
  /// `false` promises that this run left the graph exactly as it found it: the
  /// pipeline then keeps the cached analyses that the pass's `invalidates` would
  /// drop (LLVM's "no change: all analyses preserved"). The default, `true`,
  /// means "may have changed", so a pass that never sets it stays safe.
  bool changed = true;
  std::vector<PassStatistic> statistics;
  /// Facts of the pass's `invalidates` that this run left intact all the same
  /// (LLVM's PreservedAnalyses), fact sets expanded: a cached analysis is
  /// dropped only for an invalidated fact not kept. See keep().
  std::vector<std::type_index> kept;

  /// Declares that this run left facts `Fs` (or fact sets) intact although the
  /// pass may invalidate them: trim-orphans removing nothing keeps
  /// facts::Topology, so the adjacency lists built before it stay cached.
  template <class... Fs>
  PassResult& keep() {
    static const std::vector<std::type_index> listed = [] {
      std::vector<std::type_index> out;
      boost::hana::for_each(detail::fact_set_of<facts::list<Fs...>>(),
                            [&](auto t) { out.emplace_back(typeid(typename decltype(t)::type)); });
      return out;
    }();
    kept.insert(kept.end(), listed.begin(), listed.end());
    return *this;
  }

  /// Adds `value` to counter `name` (creating it at 0).
  PassResult& add(std::string_view name, std::int64_t value = 1) {
    for (auto& s : statistics) {
      if (s.name == name) {
        s.value += value;
        return *this;
      }
    }
    if (statistics.empty()) statistics.reserve(4); // passes report a few: one allocation
    statistics.push_back({std::string(name), value});
    return *this;
  }
  /// Value of counter `name`; throws UsageError (a std::invalid_argument) if the pass never set it.
  [[nodiscard]] std::int64_t get(std::string_view name) const {
    for (const auto& s : statistics) {
      if (s.name == name) return s.value;
    }
    throw UsageError("pass reported no statistic named '" + std::string(name) + "'");
  }
  /// True when the pass reported counter `name`.
  [[nodiscard]] bool has(std::string_view name) const {
    return std::any_of(statistics.begin(), statistics.end(),
                       [&](const PassStatistic& s) { return s.name == name; });
  }
};

/// Empty option set for passes without options.
struct NoOptions {
  /// Visits no option.
  template <class Visitor>
  void visit(Visitor&&) const {}
};

/// Optional CRTP base giving a pass its defaults — no facts consumed or produced,
/// every topology fact invalidated, not required, not declared idempotent — and its options:
/// `Options` (= PassOptions), the `options` member, a default constructor and
/// `explicit Derived(Options)`, which the pass takes over with
/// `using pass_info::pass_info;`:
///
///     struct TrimOrphansOptions { TORCHLENS_OPTIONS((std::vector<std::size_t>, keep)); };
///     struct TrimOrphansPass : pass_info<TrimOrphansPass, TrimOrphansOptions> {
///       using pass_info::pass_info;
///       ...
///     };
///
/// A pass that declares its own `Options` and `options` member (and constructors)
/// still works: its declarations hide these.
template <class Derived, class PassOptions = NoOptions>
struct pass_info {
  /// The pass's option set (`TrimOrphansPass::Options().keep({7})`).
  using Options = PassOptions;
  using consumes = facts::list<>;
  using produces = facts::list<>;
  /// The safe default (LLVM's PreservedAnalyses::none()): a pass that does not say
  /// what it preserves drops every topology-dependent fact — in the pipeline's
  /// compile-time fold and, at run time, every cached analysis depending on one.
  /// A pass that preserves everything declares `using invalidates = facts::none;`.
  using invalidates = facts::list<facts::Topology>;
  /// A required pass cannot be `drop<>`ped from a pipeline.
  static constexpr bool is_required = false;
  /// Running the pass twice in a row leaves the graph as one run did (a pass law).
  static constexpr bool is_idempotent = false;

  /// The options this pass value runs with.
  [[no_unique_address]] Options options{};

  /// Default options.
  pass_info() = default;
  /// The given options.
  explicit pass_info(Options o) : options(std::move(o)) {}
};

/// The shape every pass must have (checked where a pipeline is built).
template <class P>
concept Pass = std::copy_constructible<P> && requires(const P& p, ModelGraph& g, PassContext& ctx) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::description } -> std::convertible_to<std::string_view>;
  typename P::consumes;
  typename P::produces;
  typename P::invalidates;
  typename P::Options;
  { P::is_required } -> std::convertible_to<bool>;
  { P::is_idempotent } -> std::convertible_to<bool>;
  { p.options } -> std::convertible_to<const typename P::Options&>;
  { p.run(g, ctx) } -> std::same_as<PassResult>;
};

namespace detail {

/// Accepts any (name, value): the visitor used to detect an option set.
struct AnyOptionVisitor {
  template <class V>
  void operator()(std::string_view, const V&) const {}
};

/// True for an option set: a type with `visit(visitor)` (TORCHLENS_OPTIONS, NoOptions).
template <class T>
concept OptionSet = requires(const T& options) {
  options.visit(AnyOptionVisitor{});
};

template <OptionSet Options>
std::string changed_options_to_string(const Options& options);

/// Prints one option value for print_pipeline (`true`, `3`, `3e-06`, `[1,2]`, `"x"`,
/// and `{name=value,...}` for a nested option set, listing what differs from its defaults).
template <class T>
std::string option_to_string(const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_floating_point_v<T>) {
    std::array<char, 64> buf{}; // shortest round-trip form: 3e-06, not 0.000003
    const auto end = std::to_chars(buf.data(), buf.data() + buf.size(), v).ptr;
    return std::string(buf.data(), end);
  } else if constexpr (std::is_arithmetic_v<T>) {
    return std::to_string(v);
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    // (appended, not `"{" + ...`: GCC 12 warns falsely on that form, -Wrestrict)
    std::string out = "\"";
    out += std::string_view(v);
    out += '"';
    return out;
  } else if constexpr (OptionSet<T>) {
    std::string out = "{";
    out += changed_options_to_string(v);
    out += '}';
    return out;
  } else {
    std::string out = "[";
    bool first = true;
    for (const auto& x : v) {
      if (!first) out += ",";
      first = false;
      out += option_to_string(x);
    }
    return out + "]";
  }
}

/// `opt=value,...` for the options that differ from a default-constructed set
/// (every option when the set has no default constructor).
template <OptionSet Options>
std::string changed_options_to_string(const Options& options) {
  std::vector<std::pair<std::string, std::string>> now, defaults;
  auto collect = [](auto& into) {
    return [&into](std::string_view name, const auto& value) {
      into.emplace_back(std::string(name), option_to_string(value));
    };
  };
  options.visit(collect(now));
  if constexpr (std::is_default_constructible_v<Options>) Options{}.visit(collect(defaults));
  std::string out;
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (i < defaults.size() && now[i].second == defaults[i].second) continue;
    if (!out.empty()) out += ",";
    out += now[i].first + "=" + now[i].second;
  }
  return out;
}

/// True when two option sets hold equal values, option by option in declaration
/// order (nested sets likewise), without printing them: every option takes part,
/// one declared later included.
template <OptionSet Options>
bool same_options(const Options& a, const Options& b) {
  bool same = true;
  std::size_t i = 0;
  a.visit([&](std::string_view, const auto& x) {
    std::size_t j = 0;
    b.visit([&](std::string_view, const auto& y) {
      using X = std::decay_t<decltype(x)>;
      if constexpr (std::is_same_v<X, std::decay_t<decltype(y)>>) {
        if (j == i) {
          if constexpr (OptionSet<X>) {
            same = same && same_options(x, y);
          } else {
            same = same && x == y;
          }
        }
      }
      ++j;
    });
    ++i;
  });
  return same;
}

} // namespace detail

/// `name(opt=value,...)` for a pass, listing only options that differ from the
/// defaults (a pass with default options prints as its bare name; a nested
/// option set prints as `opt={name=value,...}`).
template <Pass P>
std::string pass_to_string(const P& p) {
  std::string out(P::name);
  const std::string args = detail::changed_options_to_string(p.options);
  if (!args.empty()) out += "(" + args + ")";
  return out;
}

} // namespace torchlens
