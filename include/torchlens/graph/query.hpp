#pragma once
/// \file
/// Questions about a ModelGraph that several readers ask (the model log, its
/// JSON, the DOT drawing), answered once here. Torch-free. modules_exited()
/// (the recorded module exits of an op) stays beside OpNode in model_graph.hpp.

#include <torchlens/graph/model_graph.hpp>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>

namespace torchlens {

/// Model-level totals that need only the graph (TorchLens §2.1). Output nodes
/// are not counted: their producer already is.
struct GraphTotals {
  std::int64_t num_tensors = 0;       ///< layer passes, output nodes excluded
  std::int64_t tensor_bytes = 0;      ///< their output sizes, summed
  std::int64_t num_param_tensors = 0; ///< distinct parameter tensors used (by address)
  std::int64_t num_params = 0;        ///< their elements (shared ones counted once)
  std::int64_t param_bytes = 0;
};

/// Totals of a graph: the log's summary and JSON (ModelLog::totals()) and the
/// DOT header.
inline GraphTotals graph_totals(const ModelGraph& g) {
  GraphTotals t;
  std::set<std::string> params;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    if (n.kind == NodeKind::output) continue; // the producer already counts
    ++t.num_tensors;
    t.tensor_bytes += n.bytes;
    for (const auto& p : n.params) {
      if (params.insert(p.address).second) {
        ++t.num_param_tensors;
        t.num_params += p.numel;
        t.param_bytes += p.bytes;
      }
    }
  }
  return t;
}

/// The key of one module pass: `features.3:1` (a lookup key of the log, the
/// JSON `modules`/`modules_exited` entries, the id of a collapsed module in DOT).
inline std::string module_pass_key(const ModuleFrame& f) {
  return f.address + ":" + std::to_string(f.pass);
}

/// For each module address in the containment of some vertex (the root "" too
/// when frames name it), the highest pass seen there. A module pass whose ops
/// all left the graph (trimmed) is not counted: GraphInfo::modules keeps the
/// calls capture saw.
inline std::unordered_map<std::string, int> module_pass_counts(const ModelGraph& g) {
  std::unordered_map<std::string, int> passes;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    for (const auto& f : g[v].modules) {
      int& p = passes[f.address];
      p = std::max(p, f.pass);
    }
  }
  return passes;
}

/// True when the value of `v` leaves module pass `f` by the graph's topology:
/// it is returned from forward (feeds_output) or one of its consumers is not
/// inside `f`. The DOT drawing places leaf-module boxes and the outputs of
/// collapsed modules with it. modules_exited() is the recorded counterpart
/// (OpNode::modules_exited): the infer-modules pass fills it with this rule
/// where capture did not see the returns, but returns capture saw
/// (TorchScript) and values nothing uses keep capture's answer there.
inline bool leaves_module_pass(const ModelGraph& g, Vertex v, const ModuleFrame& f) {
  if (g[v].feeds_output) return true;
  for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
    const auto& fw = g[boost::target(e, g)].modules;
    if (std::find(fw.begin(), fw.end(), f) == fw.end()) return true;
  }
  return false;
}

} // namespace torchlens
