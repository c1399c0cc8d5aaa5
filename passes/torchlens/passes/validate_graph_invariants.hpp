#pragma once
/// \file
/// Structural invariants of a model graph, as a function and as a pass that can
/// be inserted anywhere (TorchLens `TORCHLENS_POSTPROCESS_ASSERTIONS` / validation invariants).

#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/graph_ops.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/instrumentation.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace torchlens::passes {

/// Every broken invariant of g, as one message each (empty when g is valid):
/// parent/child symmetry; no self-loop; vertex order topological and ids
/// strictly increasing with vertex order, below GraphInfo::next_id; inputs have
/// no parents, outputs exactly one parent and no children, buffers at most one
/// parent; returned node ids exist; once labeled, labels are unique and
/// non-empty; once grouped, 1 <= pass_num <= num_passes and each layer's passes
/// share layer_type and are numbered 1..num_passes; module containments hold
/// each module once with passes from 1, within the module's call count, and an
/// op exits only modules containing it.
inline std::vector<std::string> check_graph_invariants(const ModelGraph& g) {
  std::vector<std::string> problems;
  const auto n = boost::num_vertices(g);
  const auto& info = g[boost::graph_bundle];
  auto at = [&g](Vertex v) {
    return "vertex " + std::to_string(v) + " (id " + std::to_string(g[v].id) + ", " +
           (g[v].label().empty() ? g[v].layer_type.str() : g[v].label()) + ")";
  };
  // parent lists rebuilt from the out-edges, bucketed per child (counting sort, O(V + E))
  std::vector<std::size_t> start(n + 1, 0);
  bool labeled = false, grouped = false;
  for (Vertex v = 0; v < n; ++v) {
    const OpNode& node = g[v];
    labeled = labeled || !node.label().empty();
    grouped = grouped || node.num_passes > 1;
    if (v > 0 && g[v - 1].id >= node.id)
      problems.push_back(at(v) + ": id not above the previous vertex's id");
    if (node.id >= info.next_id) problems.push_back(at(v) + ": id not below GraphInfo::next_id");
    for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
      const Vertex t = boost::target(e, g);
      if (t >= n) {
        problems.push_back(at(v) + ": edge to a missing vertex");
        continue;
      }
      if (t == v)
        problems.push_back(at(v) + ": self-loop");
      else if (t < v)
        problems.push_back(at(v) + ": edge to an earlier vertex (order not topological)");
      ++start[t + 1];
    }
    const auto indeg = boost::in_degree(v, g), outdeg = boost::out_degree(v, g);
    if (node.kind == NodeKind::input && indeg != 0)
      problems.push_back(at(v) + ": input with parents");
    if (node.kind == NodeKind::buffer && indeg > 1)
      problems.push_back(at(v) + ": buffer with several parents");
    if (node.kind == NodeKind::output && (indeg != 1 || outdeg != 0)) {
      problems.push_back(at(v) + ": output must have one parent and no children");
    }
  }
  for (Vertex v = 0; v < n; ++v) start[v + 1] += start[v];
  std::vector<Vertex> parents(start[n]);
  {
    std::vector<std::size_t> fill(start.begin(), start.end() - 1);
    for (Vertex v = 0; v < n; ++v) {
      for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
        const Vertex t = boost::target(e, g);
        if (t < n) parents[fill[t]++] = v; // sources in increasing order
      }
    }
  }
  std::vector<Vertex> listed;
  for (Vertex v = 0; v < n; ++v) {
    listed.clear();
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g)))
      listed.push_back(boost::source(e, g));
    std::sort(listed.begin(), listed.end());
    if (!std::equal(listed.begin(), listed.end(),
                    parents.begin() + static_cast<std::ptrdiff_t>(start[v]),
                    parents.begin() + static_cast<std::ptrdiff_t>(start[v + 1]))) {
      problems.push_back(at(v) + ": parent list disagrees with its parents' child lists");
    }
  }
  for (const auto& ret : info.returned) {
    if (!detail::vertex_of_id(g, ret.node_id))
      problems.push_back("returned tensor " + ret.address + " names missing node id " +
                         std::to_string(ret.node_id));
  }
  if (labeled) {
    std::unordered_set<std::string> seen;
    seen.reserve(n);
    for (Vertex v = 0; v < n; ++v) {
      std::string label = g[v].label();
      if (label.empty())
        problems.push_back(at(v) + ": unlabeled in a labeled graph");
      else if (!seen.insert(label).second)
        problems.push_back(at(v) + ": duplicate label " + label);
    }
  }
  if (labeled || grouped) {
    constexpr Vertex kUnseen = static_cast<Vertex>(-1);
    std::vector<std::pair<Vertex, int>> layer_seen(
        n, {kUnseen, 0}); // layer -> (first vertex, passes seen)
    for (Vertex v = 0; v < n; ++v) {
      const OpNode& node = g[v];
      if (node.pass_num < 1 || node.pass_num > node.num_passes) {
        problems.push_back(at(v) + ": pass_num outside 1..num_passes");
      }
      if (node.layer >= n) {
        problems.push_back(at(v) + ": layer index out of range");
        continue;
      }
      auto* it = &layer_seen[node.layer];
      if (it->first == kUnseen) it->first = v;
      const OpNode& first = g[it->first];
      if (first.layer_type != node.layer_type || first.num_passes != node.num_passes) {
        problems.push_back(at(v) + ": layer mixes layer types or pass counts");
      }
      if (node.pass_num != ++it->second)
        problems.push_back(at(v) + ": passes of its layer not numbered in order");
    }
  }
  // modules: a containment never holds one module twice, and passes are 1-based;
  // an op exits only modules that contain it; each module's passes are 1..N
  // (N = GraphInfo::modules' count, when capture listed the modules)
  std::unordered_map<std::string_view, std::vector<char>> passes_seen;
  for (Vertex v = 0; v < n; ++v) {
    const OpNode& node = g[v];
    for (std::size_t i = 0; i < node.modules.size(); ++i) {
      const ModuleFrame& f = node.modules[i];
      if (f.pass < 1) problems.push_back(at(v) + ": module pass below 1 in " + f.address);
      for (std::size_t j = 0; j < i; ++j) {
        if (node.modules[j].address == f.address)
          problems.push_back(at(v) + ": module " + f.address + " contains itself");
      }
      auto& seen = passes_seen[f.address];
      if (f.pass >= 1) {
        if (seen.size() < static_cast<std::size_t>(f.pass))
          seen.resize(static_cast<std::size_t>(f.pass));
        seen[static_cast<std::size_t>(f.pass - 1)] = 1;
      }
    }
    if (node.modules_exited < 0 ||
        static_cast<std::size_t>(node.modules_exited) > node.modules.size())
      problems.push_back(at(v) + ": exits more modules than contain it");
  }
  for (const auto& m : info.modules) {
    auto it = passes_seen.find(m.address);
    if (it == passes_seen.end()) continue; // a module whose ops were all trimmed
    if (it->second.size() > static_cast<std::size_t>(m.num_passes))
      problems.push_back("module " + m.address + ": a pass beyond its " +
                         std::to_string(m.num_passes) + " calls");
  }
  return problems;
}

/// Throws InvariantError (a std::logic_error) listing the broken invariants (at most 20) if any.
inline void validate_graph(const ModelGraph& g) {
  const auto problems = check_graph_invariants(g);
  if (problems.empty()) return;
  std::string msg = "graph invariants broken (" + std::to_string(problems.size()) + "):";
  for (std::size_t i = 0; i < problems.size() && i < 20; ++i) msg += "\n  " + problems[i];
  throw InvariantError(msg);
}

/// Hook for PassContext::instrumentation: validate_graph after every pass.
inline Instrumentation::AfterHook verify_after_each_pass() {
  return check_after_each_pass([](const ModelGraph& g) { validate_graph(g); });
}

/// validate_graph as a pass (insertable anywhere; changes nothing).
struct ValidateGraphInvariantsPass : pass_info<ValidateGraphInvariantsPass> {
  static constexpr std::string_view name = "validate-graph-invariants";
  static constexpr std::string_view description =
      "check structural invariants; throw std::logic_error naming each violation";
  /// Reads the graph only.
  using invalidates = facts::none;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistic "vertices checked"; throws InvariantError (a std::logic_error) on a violation.
  PassResult run(ModelGraph& g, PassContext&) const {
    validate_graph(g);
    PassResult result;
    result.add("vertices checked", static_cast<std::int64_t>(boost::num_vertices(g)));
    return result;
  }
};

} // namespace torchlens::passes
