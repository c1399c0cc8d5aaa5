#pragma once
/// \file
/// Facts: empty tag types naming what a pass guarantees about the graph
/// (outputs marked, orphans trimmed, ...), lists of facts, and fact *sets*
/// such as facts::Topology that stand for several facts at once.
///
/// C++ forbids a namespace and a template of the same name in one scope, so the
/// list template is spelled `facts::list<...>` (not `facts<...>`):
/// `using invalidates = facts::list<facts::Topology>;`.

#include <boost/hana/basic_tuple.hpp>
#include <boost/hana/contains.hpp>
#include <boost/hana/difference.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/insert.hpp>
#include <boost/hana/set.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/union.hpp>

#include <string_view>
#include <type_traits>

namespace torchlens::facts {

/// A list of facts (each an empty tag type, or a fact set).
template <class... Fs>
struct list {};

/// No fact: `using invalidates = facts::none;` declares that a pass preserves
/// every fact — it adds or removes no vertex or edge and leaves the data of
/// every fact it does not produce as it was. Say it: a pass that declares no
/// `invalidates` gets pass_info's default, facts::list<facts::Topology>.
using none = list<>;

/// Base of a fact set: `struct Topology : set_of<A, B> {};` expands to A and B.
template <class... Fs>
struct set_of {
  using members = list<Fs...>;
};

// ---- individual facts ---------------------------------------------------------
// Each fact is named for what its pass did: pass `compute-distances`
// (ComputeDistancesPass, compute_distances.hpp) produces DistancesComputed.

/// One `output` vertex exists per returned tensor (add-output-nodes).
struct OutputNodesAdded {};
/// is_output_ancestor / has_input_ancestor are correct (mark-output-ancestry).
struct OutputAncestryMarked {};
/// No vertex is both unreachable from the inputs and unable to reach an output
/// (trim-orphans).
struct OrphansTrimmed {};
/// min/max distances from inputs and to outputs are filled (compute-distances).
struct DistancesComputed {};
/// Terminal bools, condition branches and IF edges are marked (detect-conditionals).
struct ConditionalsDetected {};
/// Every op has a module containment, observed or inferred (infer-modules).
struct ModulesInferred {};
/// Buffers are merged and numbered per address (number-buffers).
struct BuffersNumbered {};
/// layer / pass_num / num_passes are filled (group-recurrences).
struct RecurrencesGrouped {};
/// Final labels are filled (label-layers).
struct LayersLabeled {};

// The names of 0.2.0's first drafts, kept so that user passes still compile.
using OutputsMarked [[deprecated("use OutputAncestryMarked")]] = OutputAncestryMarked;
using OrphanFree [[deprecated("use OrphansTrimmed")]] = OrphansTrimmed;
using Distances [[deprecated("use DistancesComputed")]] = DistancesComputed;
using BranchesMarked [[deprecated("use ConditionalsDetected")]] = ConditionalsDetected;
using RecurrenceGrouped [[deprecated("use RecurrencesGrouped")]] = RecurrencesGrouped;
using Labeled [[deprecated("use LayersLabeled")]] = LayersLabeled;

// ---- fact sets ------------------------------------------------------------------
/// Every fact that depends on the vertex/edge set: a pass that adds or removes
/// vertices or edges invalidates it (LLVM's CFGAnalyses, at the type level).
struct Topology
    : set_of<OutputAncestryMarked, OrphansTrimmed, DistancesComputed, ConditionalsDetected,
             ModulesInferred, BuffersNumbered, RecurrencesGrouped, LayersLabeled> {};

} // namespace torchlens::facts

namespace torchlens::detail {

template <class F, class = void>
struct is_fact_set : std::false_type {};
template <class F>
struct is_fact_set<F, std::void_t<typename F::members>> : std::true_type {};

/// Expands a fact (or fact set, recursively) into a hana::basic_tuple of hana::type.
template <class F>
constexpr auto expand_fact();

template <class... Fs>
constexpr auto expand_list(facts::list<Fs...>) {
  return boost::hana::make_basic_tuple(expand_fact<Fs>()...);
}

template <class F>
constexpr auto expand_fact() {
  if constexpr (is_fact_set<F>::value) {
    // a set contributes itself (so `contains(Topology)` works) and its members
    return boost::hana::fold_left(expand_list(typename F::members{}),
                                  boost::hana::make_set(boost::hana::type_c<F>),
                                  [](auto acc, auto s) { return boost::hana::union_(acc, s); });
  } else {
    return boost::hana::make_set(boost::hana::type_c<F>);
  }
}

/// The hana::set of hana::type for every fact named (directly or through a set) in List.
template <class List>
constexpr auto fact_set_of() {
  return boost::hana::fold_left(expand_list(List{}), boost::hana::make_set(),
                                [](auto acc, auto s) { return boost::hana::union_(acc, s); });
}

/// Type of fact_set_of<List>().
template <class List>
using fact_set_t = decltype(fact_set_of<List>());

/// True when fact F (a plain tag) is in List, directly or through a set.
template <class F, class List>
inline constexpr bool list_contains_v =
    decltype(boost::hana::contains(fact_set_of<List>(), boost::hana::type_c<F>))::value;

} // namespace torchlens::detail
