#pragma once
/// \file
/// Private helpers shared by the standard passes: id lookup and compaction.

#include <torchlens/graph/model_graph.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchlens::passes::detail {

/// The vertex whose OpNode::id is `id` (ids increase with vertex index), if any.
inline std::optional<Vertex> vertex_of_id(const ModelGraph& g, std::size_t id) {
  const Vertex n = boost::num_vertices(g);
  // binary search over the increasing ids; fall back to a scan if they are not
  Vertex lo = 0, hi = n;
  while (lo < hi) {
    Vertex mid = lo + (hi - lo) / 2;
    if (g[mid].id < id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo < n && g[lo].id == id) return lo;
  for (Vertex v = 0; v < n; ++v) {
    if (g[v].id == id) return v;
  }
  return std::nullopt;
}

/// Replaces g by the subgraph of vertices with keep[v] != 0, preserving vertex
/// order, bundles, the graph bundle and each kept vertex's out-edge order.
/// `redirect[v]`, when given and != v, sends v's out-edges to come from
/// redirect[v] instead (used to merge duplicates). Returns the removed count.
inline std::size_t compact(ModelGraph& g, const std::vector<char>& keep,
                           const std::vector<Vertex>* redirect = nullptr) {
  const Vertex n = boost::num_vertices(g);
  if (redirect == nullptr && std::find(keep.begin(), keep.end(), 0) == keep.end()) return 0;
  constexpr Vertex kGone = static_cast<Vertex>(-1);
  std::vector<Vertex> new_index(n, kGone);
  Vertex next = 0;
  for (Vertex v = 0; v < n; ++v) {
    if (keep[v]) new_index[v] = next++;
  }
  if (next == n && redirect == nullptr) return 0;
  ModelGraph out;
  out.reserve(next, boost::num_edges(g));
  out[boost::graph_bundle] = std::move(g[boost::graph_bundle]);
  for (Vertex v = 0; v < n; ++v) {
    if (keep[v]) boost::add_vertex(std::move(g[v]), out); // new_index[v], in order
  }
  for (Vertex v = 0; v < n; ++v) {
    Vertex src = v;
    if (redirect != nullptr) src = (*redirect)[v];
    if (new_index[src] == kGone) continue;
    for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
      Vertex t = boost::target(e, g);
      if (new_index[t] == kGone) continue;
      boost::add_edge(new_index[src], new_index[t], std::move(g[e]), out);
    }
  }
  g.swap(out);
  return n - next;
}

} // namespace torchlens::passes::detail
