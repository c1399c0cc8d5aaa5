// Layout of a drawing: items (op passes or, rolled, layers), hidden buffers,
// leaf-module boxes, module clusters, collapsing below the nesting depth, and
// the drawn edges between what is left. Torch-free.
#include "layout.hpp"

#include <torchlens/error.hpp>
#include <torchlens/graph/query.hpp>
#include <torchlens/graph/rolled.hpp>

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace torchlens::io::detail {

namespace {

/// DOT id of an op: its label with `:` → `pass` (`linear_1_2pass3`).
std::string node_name(const std::string& label, std::size_t id) {
  if (label.empty()) return "node" + std::to_string(id);
  std::string out;
  for (char c : label) {
    if (c == ':') {
      out += "pass";
    } else {
      out += c;
    }
  }
  return out;
}

/// Key of a module frame (`addr:pass`, or `addr` when rolled).
std::string frame_key(const ModuleFrame& f) {
  return f.pass > 0 ? module_pass_key(f) : f.address.str();
}

/// Key of a frame path prefix frames[0..n).
std::string path_key(const std::vector<ModuleFrame>& frames, std::size_t n) {
  std::string key;
  for (std::size_t i = 0; i < n; ++i) {
    key += frame_key(frames[i]);
    key += '/';
  }
  return key;
}

/// A parent → child relation between items.
struct Link {
  std::size_t tail = 0, head = 0;
  std::vector<Edge> edges;         ///< unrolled edges it stands for
  std::string in_label, out_label; ///< rolled: `In 1`, `Out 2-3`
};

} // namespace

Layout make_layout(const ModelGraph& g, const DotOptions& options) {
  if (options.nesting_depth() < 1) {
    throw UsageError("nesting_depth must be at least 1, got " +
                     std::to_string(options.nesting_depth()));
  }
  const bool rolled = options.rolled();
  const std::size_t depth_limit = static_cast<std::size_t>(options.nesting_depth());
  const std::size_t n = boost::num_vertices(g);
  Layout layout;
  LayoutGraph& dg = layout.graph;
  std::vector<Item>& items = layout.items;

  // ---- per-vertex module frames (the root "" is never drawn) ----
  std::vector<std::vector<ModuleFrame>> frames(n);
  std::set<std::string> non_leaf;
  layout.module_passes = module_pass_counts(g);
  for (Vertex v = 0; v < n; ++v) {
    for (const auto& f : g[v].modules) {
      if (!f.address.empty()) frames[v].push_back(f);
    }
    for (std::size_t i = 0; i < frames[v].size(); ++i) {
      const auto& f = frames[v][i];
      if (i + 1 < frames[v].size()) non_leaf.insert(f.address);
      layout.module_type.emplace(f.address, f.type);
    }
  }
  for (const auto& m : g[boost::graph_bundle].modules) {
    int& p = layout.module_passes[m.address];
    p = std::max(p, m.num_passes);
  }
  // v leaves its k-th module pass (a consumer outside it, or returned)
  auto is_exit = [&](Vertex v, std::size_t k) {
    return k < frames[v].size() && leaves_module_pass(g, v, frames[v][k]);
  };

  // ---- items and links (unrolled: vertices and edges; rolled: layers) ----
  std::vector<Link> links;
  if (!rolled) {
    items.resize(n);
    for (Vertex v = 0; v < n; ++v) {
      items[v].members = {v};
      items[v].name = node_name(g[v].label(), g[v].id);
      items[v].title = g[v].label().empty() ? items[v].name : g[v].label();
      items[v].frames = frames[v];
    }
    for (auto e : boost::make_iterator_range(boost::edges(g))) {
      links.push_back(Link{boost::source(e, g), boost::target(e, g), {e}, "", ""});
    }
  } else {
    const RolledGraph r = roll_graph(g);
    const std::size_t layers = boost::num_vertices(r);
    std::vector<std::size_t> item_of(layers, static_cast<std::size_t>(-1));
    for (std::size_t l = 0; l < layers; ++l) {
      const RolledNode& rn = r[l];
      if (rn.passes.empty()) continue;
      Item it;
      it.members = rn.passes;
      const OpNode& first = g[rn.passes.front()];
      it.name = node_name(rn.label, first.id);
      it.title = rn.label.empty() ? it.name : rn.label;
      if (rn.num_passes > 1) it.title += " (x" + std::to_string(rn.num_passes) + ")";
      it.num_passes = rn.num_passes;
      it.frames = frames[rn.passes.front()];
      for (auto& f : it.frames) f.pass = 0;
      item_of[l] = items.size();
      items.push_back(std::move(it));
    }
    std::map<std::pair<std::size_t, std::size_t>, std::vector<Edge>> unrolled;
    for (auto e : boost::make_iterator_range(boost::edges(g))) {
      unrolled[{g[boost::source(e, g)].layer, g[boost::target(e, g)].layer}].push_back(e);
    }
    for (auto re : boost::make_iterator_range(boost::edges(r))) {
      const std::size_t lu = boost::source(re, r), lv = boost::target(re, r);
      links.push_back(
          Link{item_of[lu], item_of[lv], unrolled[{lu, lv}], in_label(r, re), out_label(r, re)});
    }
  }

  // ---- place items: hidden, own node (maybe a leaf-module box), or collapsed ----
  std::unordered_map<std::string, int> cluster_of_path;
  auto cluster_for = [&](const std::vector<ModuleFrame>& fr, std::size_t depth) {
    int parent = -1;
    for (std::size_t i = 0; i < depth; ++i) {
      const std::string key = path_key(fr, i + 1);
      auto it = cluster_of_path.find(key);
      if (it == cluster_of_path.end()) {
        LayoutCluster c;
        const ModuleFrame& f = fr[i];
        c.name = "cluster_" + f.address + (f.pass > 0 ? "_pass" + std::to_string(f.pass) : "");
        c.module = f;
        c.parent = parent;
        c.depth = static_cast<int>(i) + 1;
        it = cluster_of_path.emplace(key, static_cast<int>(layout.clusters.size())).first;
        layout.clusters.push_back(std::move(c));
      }
      parent = it->second;
    }
    return parent;
  };

  using Node = LayoutGraph::vertex_descriptor;
  constexpr Node kNone = std::numeric_limits<Node>::max();
  std::vector<Node> drawn(items.size(), kNone);
  std::unordered_map<std::string, Node> collapsed_of_path;
  std::vector<std::size_t> collapsed_level; // per drawn node: its frame's index in the path

  auto hidden = [&](const Item& it) {
    return g[it.members.front()].kind == NodeKind::buffer && !options.show_buffers();
  };
  // visible items per innermost module (pass): a leaf module's output leaves
  // the module's cluster (drawn as the module's box) only when it is alone in it
  std::unordered_map<std::string, std::size_t> items_in_module;
  for (const auto& it : items) {
    if (!hidden(it) && !it.frames.empty()) ++items_in_module[path_key(it.frames, it.frames.size())];
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const OpNode& node = g[it.members.front()];
    if (hidden(it)) continue;
    const auto& fr = it.frames;
    const bool innermost_leaf = !fr.empty() && !non_leaf.count(fr.back().address);
    bool own_box = false;
    if (innermost_leaf && node.kind == NodeKind::op) {
      for (Vertex m : it.members) own_box = own_box || is_exit(m, frames[m].size() - 1);
    }
    const bool alone = !fr.empty() && items_in_module[path_key(fr, fr.size())] == 1;
    const bool drop_last = (own_box && alone) || (innermost_leaf && node.kind == NodeKind::buffer);
    const std::size_t depth = fr.size() - (drop_last ? 1 : 0);
    bool from_input = false;
    for (Vertex m : it.members) from_input = from_input || g[m].has_input_ancestor;
    if (depth >= depth_limit) {
      const std::string key = path_key(fr, depth_limit);
      auto found = collapsed_of_path.find(key);
      if (found == collapsed_of_path.end()) {
        const int cl = cluster_for(fr, depth_limit - 1);
        LayoutNode ln;
        const ModuleFrame& f = fr[depth_limit - 1];
        ln.name = "module." + frame_key(f);
        ln.cluster = cl;
        ln.module = f;
        const Node dv = boost::add_vertex(std::move(ln), dg);
        collapsed_level.resize(dv + 1);
        collapsed_level[dv] = depth_limit - 1;
        found = collapsed_of_path.emplace(key, dv).first;
      }
      LayoutNode& c = dg[found->second];
      c.collapsed.push_back(i);
      c.from_input = c.from_input || from_input;
      drawn[i] = found->second;
      continue;
    }
    LayoutNode ln;
    ln.name = it.name;
    ln.cluster = cluster_for(fr, depth);
    ln.item = i;
    ln.leaf_box = own_box;
    ln.from_input = from_input;
    drawn[i] = boost::add_vertex(std::move(ln), dg);
  }

  // ---- collapsed modules: the value that leaves each ----
  for (Node v = 0; v < boost::num_vertices(dg); ++v) {
    LayoutNode& c = dg[v];
    if (!c.module) continue;
    std::optional<std::size_t> out_item;
    for (std::size_t i : c.collapsed) {
      for (Vertex m : items[i].members) {
        if (is_exit(m, collapsed_level[v])) out_item = i;
      }
    }
    c.output = items[out_item.value_or(c.collapsed.back())].members.front();
  }

  // ---- edges: merged per drawn pair, first-appearance order ----
  std::map<std::pair<Node, Node>, LayoutGraph::edge_descriptor> merged_of;
  for (const Link& l : links) {
    const Node t = drawn[l.tail], h = drawn[l.head];
    if (t == kNone || h == kNone) continue;
    if (t == h && dg[t].module) continue; // inside a collapsed module
    auto found = merged_of.find({t, h});
    if (found == merged_of.end()) {
      const auto e = boost::add_edge(t, h, dg).first;
      layout.edge_order.push_back(e);
      found = merged_of.emplace(std::make_pair(t, h), e).first;
    }
    LayoutEdge& m = dg[found->second];
    m.edges.insert(m.edges.end(), l.edges.begin(), l.edges.end());
    if (!dg[t].module && !dg[h].module) {
      if (!l.in_label.empty()) m.in_label = l.in_label;
      if (!l.out_label.empty()) m.out_label = l.out_label;
    }
  }
  // most visible parents of one call (rolled: of one pass) of each drawn op
  for (Node v = 0; v < boost::num_vertices(dg); ++v) {
    LayoutNode& ln = dg[v];
    if (!ln.item) continue;
    for (Vertex m : items[*ln.item].members) {
      std::set<Vertex> parents;
      for (auto e : boost::make_iterator_range(boost::in_edges(m, g))) {
        const Vertex u = boost::source(e, g);
        if (g[u].kind != NodeKind::buffer || options.show_buffers()) parents.insert(u);
      }
      ln.call_parents = std::max(ln.call_parents, parents.size());
    }
  }
  auto ancestors = [&](int c) {
    std::vector<int> chain;
    for (; c >= 0; c = layout.clusters[static_cast<std::size_t>(c)].parent) chain.push_back(c);
    return chain;
  };
  // each edge sits in the lowest cluster holding both ends
  for (auto e : layout.edge_order) {
    const auto tail_chain = ancestors(dg[boost::source(e, dg)].cluster);
    for (int c : ancestors(dg[boost::target(e, dg)].cluster)) {
      if (std::find(tail_chain.begin(), tail_chain.end(), c) != tail_chain.end()) {
        dg[e].cluster = c;
        break;
      }
    }
  }

  // ---- clusters: which hold a node that descends from an input; the deepest ----
  for (Node v = 0; v < boost::num_vertices(dg); ++v) {
    if (!dg[v].from_input) continue;
    for (int c : ancestors(dg[v].cluster)) {
      layout.clusters[static_cast<std::size_t>(c)].from_input = true;
    }
  }
  for (const auto& c : layout.clusters) {
    layout.max_cluster_depth = std::max(layout.max_cluster_depth, c.depth);
  }

  // ---- the last output, at the bottom of the drawing when it is in no cluster ----
  for (std::size_t i = items.size(); i-- > 0;) {
    if (drawn[i] != kNone && g[items[i].members.front()].kind == NodeKind::output) {
      if (dg[drawn[i]].cluster < 0) layout.sink = dg[drawn[i]].name;
      break;
    }
  }
  return layout;
}

} // namespace torchlens::io::detail
