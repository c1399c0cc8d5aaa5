#pragma once
/// \file
/// The rolled view (torchlens/graph/rolled.hpp) as a cached analysis of the
/// pass framework: `ctx.get<RolledGraphAnalysis>(g)`. The view itself is not a
/// pass and lives beside the graph.

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/graph/rolled.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/facts.hpp>

namespace torchlens::passes {

/// The rolled view as a cached analysis (`ctx.get<RolledGraphAnalysis>(g)`).
struct RolledGraphAnalysis {
  using Result = RolledGraph;
  using depends_on = facts::list<facts::Topology>;
  /// Builds the rolled view.
  static Result compute(const ModelGraph& g, PassContext&) { return roll_graph(g); }
};

} // namespace torchlens::passes
