#pragma once
/// \file
/// Remove orphan ops: neither descended from an input nor feeding an output
/// (TorchLens postprocess step 3, `_remove_orphan_nodes`).

#include <torchlens/config.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/graph_ops.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace torchlens::passes {

/// Options of trim-orphans (`TrimOrphansPass::Options`).
struct TrimOrphansOptions {
  TORCHLENS_OPTIONS(
      // OpNode::ids to keep even when orphaned (what they connect to is kept too).
      (std::vector<std::size_t>, keep));
};

/// Keeps every vertex connected to an input or an output (TorchLens floods from
/// them over parents and children alike), and those listed in Options::keep
/// (OpNode::id) with everything connected to them; drops the rest and compacts
/// the graph in vertex order. Kept childless non-output vertices get
/// is_internally_terminated.
struct TrimOrphansPass : pass_info<TrimOrphansPass, TrimOrphansOptions> {
  static constexpr std::string_view name = "trim-orphans";
  static constexpr std::string_view description =
      "remove vertices connected to no input and no output";
  using consumes = facts::list<facts::OutputAncestryMarked>;
  /// Ancestry flags of surviving vertices stay correct, so OutputAncestryMarked is re-produced.
  using produces = facts::list<facts::OrphansTrimmed, facts::OutputAncestryMarked>;
  using invalidates = facts::list<facts::Topology>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "orphans removed", "internally terminated".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    const auto n = boost::num_vertices(g);
    std::vector<char> keep(n, 0);
    std::vector<Vertex> stack;
    stack.reserve(n); // one allocation; each vertex is pushed at most once
    for (Vertex v = 0; v < n; ++v) {
      const OpNode& node = g[v];
      if (node.kind == NodeKind::input || node.kind == NodeKind::output ||
          std::find(options.keep().begin(), options.keep().end(), node.id) !=
              options.keep().end()) {
        keep[v] = 1;
        stack.push_back(v);
      }
    }
    // flood over parents and children alike
    while (!stack.empty()) {
      const Vertex v = stack.back();
      stack.pop_back();
      for (auto span : {adj.children_of(v), adj.parents_of(v)}) {
        for (std::uint32_t w : span) {
          if (!keep[w]) {
            keep[w] = 1;
            stack.push_back(w);
          }
        }
      }
    }
    PassResult result;
    const std::size_t removed = detail::compact(g, keep);
    std::int64_t terminated = 0;
    bool flags_changed = false;
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      OpNode& node = g[v];
      const bool now = node.kind != NodeKind::output && boost::out_degree(v, g) == 0;
      flags_changed = flags_changed || node.is_internally_terminated != now;
      node.is_internally_terminated = now;
      terminated += now;
    }
    result.changed = removed > 0 || flags_changed;
    if (removed == 0) result.keep<facts::Topology>(); // only flags changed: adjacency stays valid
    result.add("orphans removed", static_cast<std::int64_t>(removed))
        .add("internally terminated", terminated);
    return result;
  }
};

} // namespace torchlens::passes
