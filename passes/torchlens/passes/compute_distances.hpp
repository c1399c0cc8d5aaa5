#pragma once
/// \file
/// Min/max distances from the inputs and to the outputs (TorchLens postprocess
/// step 4, `_mark_layer_distances`), in O(V + E).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Multi-source BFS distances (edges counted) over the lists `next(v)` gives
/// (AdjacencyAnalysis's CSR spans); -1 if unreached. Shortest distances are
/// unique, so any visiting order gives the same result.
template <class Next>
std::vector<int> bfs_distances(std::size_t n, const std::vector<Vertex>& sources, Next next) {
  std::vector<int> dist(n, -1);
  std::vector<std::uint32_t> queue;
  queue.reserve(n);
  for (Vertex s : sources) {
    if (dist[s] < 0) queue.push_back(static_cast<std::uint32_t>(s));
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
  return dist;
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
    std::vector<Vertex> inputs, outputs;
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].kind == NodeKind::input) inputs.push_back(v);
      if (g[v].kind == NodeKind::output) outputs.push_back(v);
    }
    // shortest: BFS forward from the inputs, backward from the outputs
    const std::vector<int> min_in =
        detail::bfs_distances(n, inputs, [&](Vertex v) { return adj.children_of(v); });
    const std::vector<int> min_out =
        detail::bfs_distances(n, outputs, [&](Vertex v) { return adj.parents_of(v); });
    // longest: dynamic programming over the topological order (the graph is a DAG)
    std::vector<int> max_in(n, -1), max_out(n, -1);
    for (Vertex v : inputs) max_in[v] = 0;
    for (Vertex v : outputs) max_out[v] = 0;
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
