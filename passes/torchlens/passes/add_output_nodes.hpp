#pragma once
/// \file
/// Add one `output` vertex per returned tensor (TorchLens postprocess step 1).

#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/graph_ops.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <string>
#include <unordered_set>

namespace torchlens::passes {

/// Appends an `output` vertex for each GraphInfo::returned entry (duplicate
/// addresses dropped), fed by the producer, which gets feeds_output = true.
struct AddOutputNodesPass : pass_info<AddOutputNodesPass> {
  static constexpr std::string_view name = "add-output-nodes";
  static constexpr std::string_view description =
      "add one output vertex per tensor returned by forward()";
  using produces = facts::list<facts::OutputNodesAdded>;
  using invalidates = facts::list<facts::Topology>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Adds the output vertices; statistic "outputs added". Throws UsageError
  /// (a std::invalid_argument) if a returned node id is not in the graph.
  PassResult run(ModelGraph& g, PassContext&) const {
    PassResult result;
    auto& info = g[boost::graph_bundle];
    std::unordered_set<std::string> present;
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      if (g[v].kind == NodeKind::output) present.insert(g[v].io_address);
    }
    std::size_t added = 0;
    for (const auto& ret : info.returned) {
      if (!present.insert(ret.address).second) continue; // duplicate address: dropped
      auto producer = detail::vertex_of_id(g, ret.node_id);
      if (!producer) {
        throw UsageError("add-output-nodes: returned tensor '" + ret.address + "' names node id " +
                         std::to_string(ret.node_id) + ", which is not in the graph");
      }
      OpNode out;
      const OpNode& src = g[*producer];
      out.id = info.next_id++;
      out.kind = NodeKind::output;
      out.op_name = "output";
      out.layer_type = "output";
      out.io_address = ret.address;
      out.shape = src.shape;
      out.dtype = src.dtype;
      out.device = src.device;
      out.bytes = src.bytes;
      out.requires_grad = src.requires_grad;
      out.module_observed = true; // outputs live outside every module
      Vertex v = boost::add_vertex(std::move(out), g);
      g[*producer].feeds_output = true;
      TensorEdge e;
      e.arg_name = "input";
      boost::add_edge(*producer, v, e, g);
      ++added;
    }
    result.changed = added > 0; // nothing added: nothing touched
    result.add("outputs added", static_cast<std::int64_t>(added));
    return result;
  }
};

} // namespace torchlens::passes
