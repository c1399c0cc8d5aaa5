#pragma once
/// \file
/// Min/max distances from the inputs and to the outputs (TorchLens postprocess
/// step 4, `_mark_layer_distances`), in O(V + E).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Multi-source BFS distances (edges counted) over the lists `next(v)` gives
/// (AdjacencyAnalysis's CSR spans), into `dist` (n entries, all -1 on entry;
/// -1 stays where unreached). Shortest distances are unique, so any visiting
/// order gives the same result. `queue` is scratch.
template <class Next>
void bfs_distances(std::span<const std::uint32_t> sources, Next next, std::span<int> dist,
                   std::vector<std::uint32_t>& queue) {
  queue.clear();
  for (std::uint32_t s : sources) {
    if (dist[s] < 0) queue.push_back(s);
    dist[s] = 0;
  }
  for (std::size_t head = 0; head < queue.size(); ++head) {
    const std::uint32_t v = queue[head];
    for (std::uint32_t w : next(v)) {
      if (dist[w] >= 0) continue;
      dist[w] = dist[v] + 1;
      queue.push_back(w);
    }
  }
}

} // namespace detail

/// Fills OpNode::{min,max}_distance_from_{input,output}: edges on the shortest
/// and longest path from any input / to any output; -1 when no such path.
struct ComputeDistancesPass : pass_info<ComputeDistancesPass> {
  static constexpr std::string_view name = "compute-distances";
  static constexpr std::string_view description =
      "min/max number of edges from the inputs and to the outputs";
  using consumes = facts::list<facts::OutputNodesAdded>;
  using produces = facts::list<facts::DistancesComputed>;
  /// Sets vertex and edge attributes only: every fact holds on.
  using invalidates = facts::none;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "max distance from input", "max distance to output".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& order = ctx.get<TopologicalOrderAnalysis>(g).order;
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    const auto n = boost::num_vertices(g);
    // the inputs, then the outputs; four distance tables in one block (a pass
    // on a small graph costs its allocations more than its work)
    std::vector<std::uint32_t> ends, queue;
    ends.reserve(8);
    queue.reserve(n);
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].kind == NodeKind::input) ends.push_back(static_cast<std::uint32_t>(v));
    }
    const std::size_t num_inputs = ends.size();
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].kind == NodeKind::output) ends.push_back(static_cast<std::uint32_t>(v));
    }
    const std::span<const std::uint32_t> inputs(ends.data(), num_inputs);
    const std::span<const std::uint32_t> outputs(ends.data() + num_inputs,
                                                 ends.size() - num_inputs);
    std::vector<int> table(4 * n, -1);
    const std::span<int> min_in(table.data(), n), min_out(table.data() + n, n),
        max_in(table.data() + 2 * n, n), max_out(table.data() + 3 * n, n);
    // shortest: BFS forward from the inputs, backward from the outputs
    detail::bfs_distances(
        inputs, [&](Vertex v) { return adj.children_of(v); }, min_in, queue);
    detail::bfs_distances(
        outputs, [&](Vertex v) { return adj.parents_of(v); }, min_out, queue);
    // longest: dynamic programming over the topological order (the graph is a DAG)
    for (std::uint32_t v : inputs) max_in[v] = 0;
    for (std::uint32_t v : outputs) max_out[v] = 0;
    for (Vertex v : order) {
      if (max_in[v] < 0) continue;
      for (std::uint32_t t : adj.children_of(v)) max_in[t] = std::max(max_in[t], max_in[v] + 1);
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      if (max_out[*it] < 0) continue;
      for (std::uint32_t s : adj.parents_of(*it))
        max_out[s] = std::max(max_out[s], max_out[*it] + 1);
    }
    int deepest_in = -1, deepest_out = -1;
    for (Vertex v = 0; v < n; ++v) {
      OpNode& node = g[v];
      node.min_distance_from_input = min_in[v];
      node.max_distance_from_input = max_in[v];
      node.min_distance_from_output = min_out[v];
      node.max_distance_from_output = max_out[v];
      deepest_in = std::max(deepest_in, max_in[v]);
      deepest_out = std::max(deepest_out, max_out[v]);
    }
    PassResult result;
    result.add("max distance from input", deepest_in).add("max distance to output", deepest_out);
    return result;
  }
};

} // namespace torchlens::passes
