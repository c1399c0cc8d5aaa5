#pragma once
/// \file
/// Merge duplicate buffer vertices and number buffer passes per address
/// (TorchLens postprocess step 7, `_fix_buffer_layers`).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/graph_ops.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <map>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

namespace torchlens::passes {

/// Buffer vertices with the same address, the same parent (the op that wrote
/// the buffer, or none) and the same capture-time buffer_pass are one buffer
/// read: duplicates are merged into the first (their children re-attached to
/// it, flags OR-ed) and removed. Then buffer_pass is renumbered 1, 2, ... per
/// address in creation order.
struct NumberBuffersPass : pass_info<NumberBuffersPass> {
  static constexpr std::string_view name = "number-buffers";
  static constexpr std::string_view description =
      "merge duplicate buffer vertices and number buffer passes per address";
  using consumes = facts::list<facts::OrphansTrimmed>;
  /// Merging equivalent vertices keeps ancestry and orphan-freedom: re-produced.
  using produces =
      facts::list<facts::BuffersNumbered, facts::OrphansTrimmed, facts::OutputAncestryMarked>;
  using invalidates = facts::list<facts::Topology>;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "buffers merged", "buffer addresses".
  PassResult run(ModelGraph& g, PassContext&) const {
    const auto n = boost::num_vertices(g);
    constexpr std::size_t kNoParent = static_cast<std::size_t>(-1);
    std::vector<Vertex> buffers; // one sweep; the rest looks at buffer vertices only
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].kind == NodeKind::buffer) buffers.push_back(v);
    }
    // (address, parent vertex, capture buffer_pass) -> first vertex
    std::map<std::tuple<std::string, std::size_t, int>, Vertex> first;
    std::vector<Vertex> redirect; // made at the first duplicate
    std::vector<char> keep;
    std::size_t merged = 0;
    for (Vertex v : buffers) {
      std::size_t parent = kNoParent;
      if (boost::in_degree(v, g) > 0) parent = boost::source(*boost::in_edges(v, g).first, g);
      auto [it, inserted] = first.try_emplace({g[v].io_address, parent, g[v].buffer_pass}, v);
      if (inserted) continue;
      if (redirect.empty()) {
        redirect.resize(n);
        std::iota(redirect.begin(), redirect.end(), Vertex{0});
        keep.assign(n, 1);
      }
      Vertex keeper = it->second;
      redirect[v] = keeper;
      keep[v] = 0;
      g[keeper].is_output_ancestor |= g[v].is_output_ancestor;
      g[keeper].has_input_ancestor |= g[v].has_input_ancestor;
      g[keeper].feeds_output |= g[v].feeds_output;
      ++merged;
    }
    if (merged > 0) {
      detail::compact(g, keep, &redirect);
      buffers.clear();
      for (auto v : boost::make_iterator_range(boost::vertices(g))) {
        if (g[v].kind == NodeKind::buffer) buffers.push_back(v);
      }
    }
    std::map<std::string, int> passes;
    bool renumbered = false;
    for (Vertex v : buffers) {
      const int pass = ++passes[g[v].io_address];
      renumbered = renumbered || g[v].buffer_pass != pass;
      g[v].buffer_pass = pass;
    }
    PassResult result;
    result.changed = merged > 0 || renumbered;
    result.add("buffers merged", static_cast<std::int64_t>(merged))
        .add("buffer addresses", static_cast<std::int64_t>(passes.size()));
    return result;
  }
};

} // namespace torchlens::passes
