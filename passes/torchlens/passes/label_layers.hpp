#pragma once
/// \file
/// Final layer labels `{type}_{type_num}_{total_num}[:pass]` (TorchLens
/// postprocess step 9, `_map_raw_tensor_labels_to_final_tensor_labels`).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/flat_map.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace torchlens::passes {

/// Numbers layers at their first pass (later passes inherit): ops get type_num
/// (per layer_type) and total_num (over all op layers, from 1, in creation order
/// of the first pass); inputs and buffers get `input_N`/`buffer_N` with
/// total_num 0; outputs get `output_N` and consume total numbers after every op.
/// label = `{type}_{type_num}_{total_num}` plus `:{pass}` when the layer has
/// several passes; label_short drops total_num. Sets GraphInfo::is_branching
/// (some vertex has two or more distinct children).
struct LabelLayersPass : pass_info<LabelLayersPass> {
  static constexpr std::string_view name = "label-layers";
  static constexpr std::string_view description =
      "final labels {type}_{type_num}_{total_num}[:pass], short labels, is_branching";
  using consumes = facts::list<facts::RecurrencesGrouped>;
  using produces = facts::list<facts::LayersLabeled>;
  /// Sets vertex and edge attributes only: every fact holds on.
  using invalidates = facts::none;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "labels", "layers".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto n = boost::num_vertices(g);
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    // layers numbered in order of their first pass, outputs after every op: one
    // sweep numbers the rest and lists each output layer's first vertex
    // by layer (layers < vertices: no reallocation), both numbers in one block
    struct Numbers {
      int type = 0, total = 0;
    };
    std::vector<Numbers> num;
    num.reserve(n);
    // layers of each type so far, keyed by the interned type's address (one
    // stored copy per text: no text is hashed)
    detail::FlatMap64 per_type;
    std::vector<Vertex> output_layers;
    int inputs = 0, buffers = 0, total = 0;
    for (Vertex v = 0; v < n; ++v) {
      const OpNode& node = g[v];
      const std::size_t l = node.layer;
      if (l >= num.size()) num.resize(l + 1);
      if (num[l].type != 0) continue; // not the layer's first pass
      switch (node.kind) {
        case NodeKind::input:
          num[l].type = ++inputs;
          break;
        case NodeKind::buffer:
          num[l].type = ++buffers;
          break;
        case NodeKind::output:
          num[l].type = -1; // numbered below; seen
          output_layers.push_back(v);
          break;
        case NodeKind::op:
          num[l].type = static_cast<int>(
              ++*per_type.try_emplace_ref(detail::address_key(node.layer_type.data()), 0));
          num[l].total = ++total;
          break;
      }
    }
    int outputs = 0;
    for (Vertex v : output_layers) {
      const std::size_t l = g[v].layer;
      num[l] = {++outputs, ++total};
    }
    const std::size_t num_layers = num.size();
    bool branching = false;
    for (Vertex v = 0; v < n; ++v) {
      OpNode& node = g[v];
      const std::size_t l = node.layer;
      node.type_num = num[l].type; // the labels are written from these (OpNode::label)
      node.total_num = num[l].total;
      if (!branching) {
        auto kids = adj.children_of(v);
        branching =
            std::any_of(kids.begin(), kids.end(), [&](std::uint32_t c) { return c != kids[0]; });
      }
    }
    g[boost::graph_bundle].is_branching = branching;
    PassResult result;
    result.add("labels", static_cast<std::int64_t>(n))
        .add("layers", static_cast<std::int64_t>(num_layers));
    return result;
  }
};

} // namespace torchlens::passes
