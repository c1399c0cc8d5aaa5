#pragma once
/// \file
/// Mark output ancestors and input descendants (TorchLens postprocess step 2).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

namespace torchlens::passes {

/// Sets OpNode::is_output_ancestor (a path leads to an output vertex; outputs
/// themselves included) and OpNode::has_input_ancestor (a path comes from an
/// input vertex; inputs included). Two sweeps over a topological order.
struct MarkOutputAncestryPass : pass_info<MarkOutputAncestryPass> {
  static constexpr std::string_view name = "output-ancestry";
  static constexpr std::string_view description =
      "mark vertices that reach an output and vertices that descend from an input";
  using consumes = facts::list<facts::OutputNodesAdded>;
  using produces = facts::list<facts::OutputsMarked>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using Options = NoOptions;
  Options options{};

  MarkOutputAncestryPass() = default;
  explicit MarkOutputAncestryPass(Options o) : options(o) {}

  /// Statistics "output ancestors", "input descendants".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& order = ctx.get<TopologicalOrderAnalysis>(g).order;
    std::int64_t n_in = 0, n_out = 0;
    for (Vertex v : order) {
      bool from_input = g[v].kind == NodeKind::input;
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        if (from_input) break;
        from_input = g[boost::source(e, g)].has_input_ancestor;
      }
      g[v].has_input_ancestor = from_input;
      n_in += from_input;
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      Vertex v = *it;
      bool to_output = g[v].kind == NodeKind::output;
      for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
        if (to_output) break;
        to_output = g[boost::target(e, g)].is_output_ancestor;
      }
      g[v].is_output_ancestor = to_output;
      n_out += to_output;
    }
    PassResult result;
    result.add("output ancestors", n_out).add("input descendants", n_in);
    return result;
  }
};

} // namespace torchlens::passes
