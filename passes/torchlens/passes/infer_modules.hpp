#pragma once
/// \file
/// Infer module containment of ops capture could not place (TorchLens postprocess
/// step 6, `_fix_modules_for_internal_tensors`; the paper's "fourth step", generalised).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <span>
#include <vector>

namespace torchlens::passes {

/// For every op with module_observed == false: containment = longest common
/// prefix (address and pass equal) of the observed containment of its nearest
/// observed ancestors and nearest observed descendants (ops with
/// module_observed == true; inputs, buffers and outputs are transparent). With
/// observed neighbours on one side only, an op is not placed *inside* the
/// innermost module of that side (an op after a Linear is not in the Linear):
/// it gets that side's path minus its innermost frame. The exception is the
/// paper's case: an internally generated branch (no input ancestor) is placed
/// where it merges, i.e. by its descendants' full path. With none at all the op
/// is placed at the root (empty containment). Sets module_inferred.
/// Also infers the module passes an op is returned from where capture did not
/// see the returns (exits_observed == false): a value leaves every module pass
/// one of its consumers is outside of (output nodes are outside all of them); a
/// value nothing uses keeps what capture guessed (TorchScript: returned on some
/// branch; C++ frontend: none).
struct InferModulesPass : pass_info<InferModulesPass> {
  static constexpr std::string_view name = "infer-modules";
  static constexpr std::string_view description =
      "infer module containment of unobserved ops from their nearest observed neighbours";
  /// has_input_ancestor tells internally generated branches apart.
  using consumes = facts::list<facts::OutputAncestryMarked>;
  using produces = facts::list<facts::ModulesInferred>;
  /// Containment changes, so analyses built on it (ModuleTreeAnalysis) are dropped.
  using invalidates = facts::list<facts::ModulesInferred>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// Statistics "ops inferred", "ops changed".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const auto& order = ctx.get<TopologicalOrderAnalysis>(g).order;
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    const auto& modules = ctx.get<ModuleTreeAnalysis>(g);
    const ModuleTree& tree = modules.tree;
    const auto n = boost::num_vertices(g);
    constexpr int kNone = -1; // no observed neighbour in that direction (LCP identity)
    auto lcp = [&tree](int a, int b) {
      if (a == kNone) return b;
      if (b == kNone) return a;
      return tree.common_prefix(a, b);
    };
    // what a neighbour contributes: its own path if observed, else what it inherited
    // four tables in one block: anchor, up, down and the paths after inference
    std::vector<int> table(4 * n, kNone);
    const std::span<int> anchor(table.data(), n), up(table.data() + n, n),
        down(table.data() + 2 * n, n), path_of(table.data() + 3 * n, n);
    for (Vertex v = 0; v < n; ++v) anchor[v] = g[v].kind == NodeKind::op && g[v].module_observed;
    for (Vertex v : order) {
      int acc = kNone;
      for (std::uint32_t p : adj.parents_of(v))
        acc = lcp(acc, anchor[p] ? modules.path_of[p] : up[p]);
      up[v] = acc;
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      int acc = kNone;
      for (std::uint32_t c : adj.children_of(*it))
        acc = lcp(acc, anchor[c] ? modules.path_of[c] : down[c]);
      down[*it] = acc;
    }
    std::int64_t inferred = 0, changed = 0;
    bool flags_changed = false; // module_inferred or modules_exited rewritten
    std::copy(modules.path_of.begin(), modules.path_of.end(), path_of.begin());
    for (Vertex v = 0; v < n; ++v) {
      OpNode& node = g[v];
      if (node.kind != NodeKind::op || node.module_observed) continue;
      int path = lcp(up[v], down[v]);
      if (up[v] == kNone && down[v] != kNone && !node.has_input_ancestor) {
        path = down[v]; // internally generated: it belongs where it merges
      } else if ((up[v] == kNone) != (down[v] == kNone) && path != ModuleTree::kRoot) {
        path = tree.parent(path); // one-sided evidence: beside that module, not in it
      }
      if (path == kNone) path = ModuleTree::kRoot;
      ++inferred;
      if (path != modules.path_of[v]) {
        node.modules = tree.interned_frames(path);
        path_of[v] = path;
        ++changed;
      }
      flags_changed = flags_changed || !node.module_inferred;
      node.module_inferred = true;
    }
    // Returns capture did not see: a value leaves every module pass that one of
    // its consumers is outside of (an output node is outside all of them); a
    // value nothing uses keeps capture's guess.
    std::int64_t exits = 0;
    for (Vertex v = 0; v < n; ++v) {
      OpNode& node = g[v];
      if (node.kind != NodeKind::op || node.exits_observed || adj.children_of(v).empty()) {
        exits += node.modules_exited > 0;
        continue;
      }
      const int depth = tree.depth(path_of[v]);
      int shallowest = depth;
      for (std::uint32_t c : adj.children_of(v)) {
        shallowest = std::min(shallowest, tree.depth(tree.common_prefix(path_of[v], path_of[c])));
      }
      flags_changed = flags_changed || node.modules_exited != depth - shallowest;
      node.modules_exited = depth - shallowest;
      exits += node.modules_exited > 0;
    }
    PassResult result;
    result.changed = changed > 0 || flags_changed;
    result.add("ops inferred", inferred).add("ops changed", changed).add("module outputs", exits);
    return result;
  }
};

} // namespace torchlens::passes
