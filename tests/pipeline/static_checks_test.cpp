// Compile-time checks of pipeline typing (static_assert namespaces, c10 TypeList_test style).
#include <torchlens/passes/all.hpp>

#include "support/doctest.hpp"

namespace torchlens::static_checks {

using namespace torchlens::passes;

// every standard pass has the Pass shape
static_assert(Pass<AddOutputNodesPass> && Pass<MarkOutputAncestryPass> && Pass<TrimOrphansPass> &&
              Pass<NumberBuffersPass> && Pass<ComputeDistancesPass> &&
              Pass<DetectConditionalsPass> && Pass<InferModulesPass> &&
              Pass<GroupRecurrencesPass> && Pass<LabelLayersPass> &&
              Pass<ValidateGraphInvariantsPass>);
static_assert(!Pass<int>);

// the safe default: a pass that says nothing invalidates every topology fact; each
// standard pass declares what it invalidates (facts::none: it preserves everything)
static_assert(std::is_same_v<pass_info<int>::invalidates, facts::list<facts::Topology>>);
static_assert(std::is_same_v<facts::none, facts::list<>>);
static_assert(std::is_same_v<AddOutputNodesPass::invalidates, facts::list<facts::Topology>> &&
              std::is_same_v<TrimOrphansPass::invalidates, facts::list<facts::Topology>> &&
              std::is_same_v<NumberBuffersPass::invalidates, facts::list<facts::Topology>>);
static_assert(std::is_same_v<MarkOutputAncestryPass::invalidates, facts::none> &&
              std::is_same_v<ComputeDistancesPass::invalidates, facts::none> &&
              std::is_same_v<DetectConditionalsPass::invalidates, facts::none> &&
              std::is_same_v<LabelLayersPass::invalidates, facts::none> &&
              std::is_same_v<ValidateGraphInvariantsPass::invalidates, facts::none>);
static_assert(std::is_same_v<InferModulesPass::invalidates, facts::list<facts::ModulesInferred>>);
static_assert(std::is_same_v<GroupRecurrencesPass::invalidates, facts::list<facts::LayersLabeled>>);
// regrouping after labeling drops the labels
static_assert(
    !decltype(default_pipeline().append(GroupRecurrencesPass{}))::provides<facts::LayersLabeled>);
static_assert(Analysis<TopologicalOrderAnalysis> && Analysis<ModuleTreeAnalysis> &&
              Analysis<RolledGraphAnalysis>);

// fact sets expand to their members (and keep their own tag)
static_assert(
    torchlens::detail::list_contains_v<facts::DistancesComputed, facts::list<facts::Topology>>);
static_assert(torchlens::detail::list_contains_v<facts::Topology, facts::list<facts::Topology>>);
static_assert(
    !torchlens::detail::list_contains_v<facts::OutputNodesAdded, facts::list<facts::Topology>>);

// the default pipeline ends with every standard fact
static_assert(DefaultPipeline::provides<facts::OutputNodesAdded>);
static_assert(DefaultPipeline::provides<facts::LayersLabeled>);
static_assert(DefaultPipeline::provides<facts::DistancesComputed>);
static_assert(DefaultPipeline::provides<facts::BuffersNumbered>);
static_assert(DefaultPipeline::contains<TrimOrphansPass>);

// a structural pass drops topology facts: distances computed before trimming are gone
using Early = decltype(make_pipeline(AddOutputNodesPass{}, ComputeDistancesPass{},
                                     MarkOutputAncestryPass{}, TrimOrphansPass{}));
static_assert(!Early::provides<facts::DistancesComputed>);
static_assert(Early::provides<facts::OrphansTrimmed> &&
              Early::provides<facts::OutputAncestryMarked>);

// infer-modules invalidates then re-produces its own fact
using Modules =
    decltype(make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, InferModulesPass{}));
static_assert(Modules::provides<facts::ModulesInferred>);

// an empty pipeline provides nothing
static_assert(!decltype(make_pipeline())::provides<facts::OutputNodesAdded>);
static_assert(decltype(make_pipeline())::size == 0);

// editing keeps the type-level checks
using Dropped = decltype(default_pipeline().drop<ComputeDistancesPass>());
static_assert(!Dropped::provides<facts::DistancesComputed> && Dropped::size == 8);

} // namespace torchlens::static_checks

TEST_CASE("static checks compiled") {
  CHECK(true);
}
