#pragma once
/// \file
/// Find the computation of `if` conditions (TorchLens postprocess step 5,
/// `_mark_conditional_branches`; parents-only flood as fixed in TorchLens 0.20.4).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <vector>

namespace torchlens::passes {

/// A terminal bool (TorchLens's `internally_terminated_bool_layers`) is a
/// childless, non-output 0-dim bool tensor. A conditional starts where a bool
/// decides an `if`: from each terminal bool read as an `if` condition
/// (OpNode::scalar_use == ScalarUse::condition; a float `.item()`, a `while`
/// loop's condition, an `assert` or an unread bool are not branches), flood
/// through parents while they are not output ancestors, marking them
/// in_cond_branch; an edge from an output ancestor into the flooded branch (or
/// straight into the bool) is the IF edge (TensorEdge::is_cond_branch_start).
/// As in TorchLens, the bool itself is the terminal bool, not in_cond_branch
/// (it is nobody's parent). GraphInfo::has_conditional is true when an IF edge
/// exists. This marks the branch computing the condition, not the arm taken
/// (TorchLens, parents-only flood as fixed in 0.20.4).
struct DetectConditionalsPass : pass_info<DetectConditionalsPass> {
  static constexpr std::string_view name = "detect-conditionals";
  static constexpr std::string_view description =
      "mark terminal bools, the branches computing them and the IF edges into those branches";
  using consumes = facts::list<facts::OutputAncestryMarked>;
  using produces = facts::list<facts::ConditionalsDetected>;
  /// Sets vertex and edge attributes only: every fact holds on.
  using invalidates = facts::none;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// True when v is a terminal bool (see the pass description).
  static bool is_terminal_bool(const ModelGraph& g, Vertex v) {
    const OpNode& n = g[v];
    if (n.kind == NodeKind::output || boost::out_degree(v, g) != 0) return false;
    return n.shape.empty() && n.dtype == "bool";
  }

  /// Statistics "terminal bools", "branch vertices", "if edges".
  PassResult run(ModelGraph& g, PassContext&) const {
    const auto n = boost::num_vertices(g);
    // one sweep clears the marks of an earlier run and finds the terminal bools
    for (auto e : boost::make_iterator_range(boost::edges(g))) g[e].is_cond_branch_start = false;
    std::vector<Vertex> terminal;
    for (Vertex v = 0; v < n; ++v) {
      OpNode& node = g[v];
      node.in_cond_branch = false;
      node.is_terminal_bool = is_terminal_bool(g, v);
      if (node.is_terminal_bool) terminal.push_back(v);
    }

    std::int64_t terminals = static_cast<std::int64_t>(terminal.size()), branch = 0, if_edges = 0;
    std::vector<Vertex> stack;
    for (Vertex v : terminal) {
      if (g[v].scalar_use != ScalarUse::condition) continue; // decides no `if`
      stack.assign(1, v);
      while (!stack.empty()) {
        Vertex cur = stack.back();
        stack.pop_back();
        for (auto e : boost::make_iterator_range(boost::in_edges(cur, g))) {
          Vertex p = boost::source(e, g);
          if (g[p].is_output_ancestor) {
            if (!g[e].is_cond_branch_start) {
              g[e].is_cond_branch_start = true;
              ++if_edges;
            }
          } else if (!g[p].in_cond_branch) { // reset above: marks what is flooded
            g[p].in_cond_branch = true;
            ++branch;
            stack.push_back(p);
          }
        }
      }
    }
    g[boost::graph_bundle].has_conditional = if_edges > 0;
    PassResult result;
    result.add("terminal bools", terminals)
        .add("branch vertices", branch)
        .add("if edges", if_edges);
    return result;
  }
};

} // namespace torchlens::passes
