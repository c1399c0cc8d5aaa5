#pragma once
/// \file
/// Remove orphan ops: neither descended from an input nor feeding an output
/// (TorchLens postprocess step 3, `_remove_orphan_nodes`).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/graph_ops.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace torchlens::passes {

/// Keeps a vertex when it descends from an input, is an output ancestor, is
/// listed in Options::keep (OpNode::id), or is a parent of a kept vertex (a kept
/// op never loses an argument); drops the rest and compacts the graph in vertex
/// order. Kept childless non-output vertices get is_internally_terminated.
struct TrimOrphansPass : pass_info<TrimOrphansPass> {
  static constexpr std::string_view name = "trim-orphans";
  static constexpr std::string_view description =
      "remove vertices neither descended from an input nor ancestor of an output";
  using consumes = facts::list<facts::OutputsMarked>;
  /// Ancestry flags of surviving vertices stay correct, so OutputsMarked is re-produced.
  using produces = facts::list<facts::OrphanFree, facts::OutputsMarked>;
  using invalidates = facts::list<facts::Topology>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  /// Options of trim-orphans.
  struct Options {
    /// OpNode::ids to keep even when orphaned (their ancestors are kept too).
    TORCHLENS_ARG(std::vector<std::size_t>, keep);

   public:
    /// Visits every option (name, value) for print_pipeline.
    template <class V>
    void visit(V&& v) const {
      v("keep", keep_);
    }
  };
  Options options{};

  TrimOrphansPass() = default;
  explicit TrimOrphansPass(Options o) : options(std::move(o)) {}

  /// Statistics "orphans removed", "internally terminated".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& order = ctx.get<TopologicalOrderAnalysis>(g).order;
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    const auto n = boost::num_vertices(g);
    std::vector<char> keep(n, 0);
    for (Vertex v = 0; v < n; ++v) {
      const OpNode& node = g[v];
      keep[v] =
          node.has_input_ancestor || node.is_output_ancestor ||
          std::find(options.keep().begin(), options.keep().end(), node.id) != options.keep().end();
    }
    // parents of kept vertices are kept: children before parents
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      if (!keep[*it]) continue;
      for (std::uint32_t p : adj.parents_of(*it)) keep[p] = 1;
    }
    PassResult result;
    const std::size_t removed = detail::compact(g, keep);
    std::int64_t terminated = 0;
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      OpNode& node = g[v];
      node.is_internally_terminated =
          node.kind != NodeKind::output && boost::out_degree(v, g) == 0 && node.has_input_ancestor;
      terminated += node.is_internally_terminated;
    }
    result.changed = removed > 0;
    result.add("orphans removed", static_cast<std::int64_t>(removed))
        .add("internally terminated", terminated);
    return result;
  }
};

} // namespace torchlens::passes
