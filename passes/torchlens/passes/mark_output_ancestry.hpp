#pragma once
/// \file
/// Mark output ancestors and input descendants (TorchLens postprocess step 2).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace torchlens::passes {

/// Sets OpNode::is_output_ancestor (a path leads to an output vertex; outputs
/// themselves included) and OpNode::has_input_ancestor (a path comes from an
/// input vertex; inputs included). Two sweeps over a topological order.
struct MarkOutputAncestryPass : pass_info<MarkOutputAncestryPass> {
  static constexpr std::string_view name = "mark-output-ancestry";
  static constexpr std::string_view description =
      "mark vertices that reach an output and vertices that descend from an input";
  using consumes = facts::list<facts::OutputNodesAdded>;
  using produces = facts::list<facts::OutputAncestryMarked>;
  /// Sets vertex and edge attributes only: every fact holds on.
  using invalidates = facts::none;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "output ancestors", "input descendants".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& order = ctx.get<TopologicalOrderAnalysis>(g).order;
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    const auto n = boost::num_vertices(g);
    std::vector<char> flags(2 * n); // one block: from an input, then to an output
    const std::span<char> from_input(flags.data(), n), to_output(flags.data() + n, n);
    for (Vertex v = 0; v < n; ++v) {
      from_input[v] = g[v].kind == NodeKind::input;
      to_output[v] = g[v].kind == NodeKind::output;
    }
    for (Vertex v : order) {
      for (std::uint32_t p : adj.parents_of(v)) {
        if (from_input[v]) break;
        from_input[v] = from_input[p];
      }
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      const Vertex v = *it;
      for (std::uint32_t c : adj.children_of(v)) {
        if (to_output[v]) break;
        to_output[v] = to_output[c];
      }
    }
    std::int64_t n_in = 0, n_out = 0;
    for (Vertex v = 0; v < n; ++v) {
      g[v].has_input_ancestor = from_input[v];
      g[v].is_output_ancestor = to_output[v];
      n_in += from_input[v];
      n_out += to_output[v];
    }
    PassResult result;
    result.add("output ancestors", n_out).add("input descendants", n_in);
    return result;
  }
};

} // namespace torchlens::passes
