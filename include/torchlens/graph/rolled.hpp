#pragma once
/// \file
/// The rolled view: one vertex per layer, edges merged across passes, each edge
/// knowing in which parent and child passes it occurs (TorchLens `_roll_graph`).
/// A view of a labeled graph, not a pass; torch-free. The pass framework caches
/// it as `passes::RolledGraphAnalysis` (torchlens/passes/roll_graph.hpp).

#include <torchlens/graph/model_graph.hpp>

#include <boost/graph/adjacency_list.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

namespace torchlens {

/// One layer of the rolled view.
struct RolledNode {
  std::size_t layer = 0; ///< OpNode::layer
  NodeKind kind = NodeKind::op;
  std::string layer_type;
  std::string label;       ///< label_no_pass of the layer (`linear_1_2`)
  std::string label_short; ///< label_short_no_pass (`linear_1`)
  int num_passes = 1;
  std::vector<Vertex> passes; ///< unrolled vertex of each pass, pass order
};

/// A parent-layer → child-layer edge of the rolled view.
struct RolledEdge {
  std::vector<int> parent_passes; ///< passes of the parent layer that feed this child (sorted)
  std::vector<int> child_passes;  ///< passes of the child layer fed by this parent (sorted)
  std::size_t unrolled_edges = 0; ///< how many unrolled edges were merged
};

/// Rolled graph; self-loops appear when a layer feeds its own next pass.
using RolledGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, RolledNode, RolledEdge>;

/// `1-3,5` for {1,2,3,5}.
inline std::string format_passes(const std::vector<int>& passes) {
  std::string out;
  for (std::size_t i = 0; i < passes.size();) {
    std::size_t j = i;
    while (j + 1 < passes.size() && passes[j + 1] == passes[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(passes[i]);
    if (j > i) { // piecewise: GCC 12 misreports -Wrestrict on "-" + std::to_string() here
      out += '-';
      out += std::to_string(passes[j]);
    }
    i = j + 1;
  }
  return out;
}

/// `In 1` when the child layer gets this input in only some of its passes, else "".
inline std::string in_label(const RolledGraph& r, RolledGraph::edge_descriptor e) {
  const auto& child = r[boost::target(e, r)];
  if (static_cast<int>(r[e].child_passes.size()) == child.num_passes) return "";
  return "In " + format_passes(r[e].child_passes);
}

/// `Out 2-3` when the parent layer sends to this child in only some of its passes, else "".
inline std::string out_label(const RolledGraph& r, RolledGraph::edge_descriptor e) {
  const auto& parent = r[boost::source(e, r)];
  if (static_cast<int>(r[e].parent_passes.size()) == parent.num_passes) return "";
  return "Out " + format_passes(r[e].parent_passes);
}

/// Builds the rolled view of a labeled graph (needs layer/pass_num/labels).
inline RolledGraph roll_graph(const ModelGraph& g) {
  const auto n = boost::num_vertices(g);
  std::size_t num_layers = 0;
  for (Vertex v = 0; v < n; ++v) num_layers = std::max<std::size_t>(num_layers, g[v].layer + 1);
  RolledGraph r(num_layers);
  for (Vertex v = 0; v < n; ++v) {
    const OpNode& node = g[v];
    RolledNode& rn = r[node.layer];
    if (rn.passes.empty()) {
      rn.layer = node.layer;
      rn.kind = node.kind;
      rn.layer_type = node.layer_type;
      rn.label = node.label_no_pass();
      rn.label_short = node.label_short_no_pass();
      rn.num_passes = node.num_passes;
    }
    rn.passes.push_back(v);
  }
  std::unordered_map<std::size_t, RolledGraph::edge_descriptor> merged;
  for (Vertex u = 0; u < n; ++u) {
    for (auto e : boost::make_iterator_range(boost::out_edges(u, g))) {
      const Vertex v = boost::target(e, g);
      const std::size_t key = g[u].layer * num_layers + g[v].layer;
      auto it = merged.find(key);
      if (it == merged.end()) {
        it = merged.emplace(key, boost::add_edge(g[u].layer, g[v].layer, r).first).first;
      }
      RolledEdge& re = r[it->second];
      re.parent_passes.push_back(g[u].pass_num);
      re.child_passes.push_back(g[v].pass_num);
      ++re.unrolled_edges;
    }
  }
  for (auto e : boost::make_iterator_range(boost::edges(r))) {
    for (auto* passes : {&r[e].parent_passes, &r[e].child_passes}) {
      std::sort(passes->begin(), passes->end());
      passes->erase(std::unique(passes->begin(), passes->end()), passes->end());
    }
  }
  return r;
}

} // namespace torchlens
