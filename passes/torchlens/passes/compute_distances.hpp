#pragma once
/// \file
/// Min/max distances from the inputs and to the outputs (TorchLens postprocess
/// step 4, `_mark_layer_distances`), in O(V + E).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/reverse_graph.hpp>
#include <boost/graph/visitors.hpp>
#include <boost/pending/queue.hpp>
#include <boost/property_map/property_map.hpp>

#include <algorithm>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Multi-source BFS distances (edges counted) with a record_distances visitor; -1 if unreached.
template <class Graph>
std::vector<int> bfs_distances(const Graph& g, const std::vector<Vertex>& sources) {
  const auto n = boost::num_vertices(g);
  std::vector<int> dist(n, -1);
  for (Vertex s : sources) dist[s] = 0;
  std::vector<boost::default_color_type> color(n, boost::white_color);
  auto index = boost::get(boost::vertex_index, g);
  auto dist_map = boost::make_iterator_property_map(dist.begin(), index);
  auto color_map = boost::make_iterator_property_map(color.begin(), index);
  boost::queue<Vertex> queue;
  boost::breadth_first_visit(
      g, sources.begin(), sources.end(), queue,
      boost::make_bfs_visitor(boost::record_distances(dist_map, boost::on_tree_edge())), color_map);
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
    // shortest: BFS forward from the inputs, backward (reverse_graph) from the outputs
    const std::vector<int> min_in = detail::bfs_distances(g, inputs);
    const std::vector<int> min_out = detail::bfs_distances(boost::make_reverse_graph(g), outputs);
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
