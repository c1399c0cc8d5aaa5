#pragma once
/// \file
/// The graph as Graphviz DOT, in TorchLens's visual code (behaviour report §5):
/// header, node labels and colours, module clusters, collapsed modules, `IF` and
/// argument edge labels, rolled views with `In`/`Out` pass labels. Torch-free.
///
/// Two steps, both public: build_dot_graph() turns a ModelGraph into a DotGraph
/// (one vertex per drawn node, attributes resolved, module clusters as a tree),
/// and write_dot() prints it with Boost.Graph's write_graphviz machinery: the
/// DotVertexWriter / DotEdgeWriter / DotGraphWriter functors. write_graphviz
/// knows no clusters, so a drawing with clusters is printed by the same writers
/// inside nested `subgraph cluster_*` blocks; a drawing without clusters goes
/// through boost::write_graphviz itself. Output is deterministic (creation order).

#include <torchlens/config.hpp>
#include <torchlens/detail/text.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/graph/query.hpp>
#include <torchlens/graph/rolled.hpp>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/graphviz.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace torchlens::io {

/// Which way the graph flows (Graphviz `rankdir`).
enum class Direction {
  bottom_up,  ///< `BT`: inputs at the bottom (TorchLens's default)
  top_down,   ///< `TB`
  left_right, ///< `LR`
};

/// The Graphviz `rankdir` value of a direction (`BT`, `TB`, `LR`).
inline std::string_view rankdir(Direction d) noexcept {
  switch (d) {
    case Direction::top_down:
      return "TB";
    case Direction::left_right:
      return "LR";
    case Direction::bottom_up:
      break;
  }
  return "BT";
}

/// Parses `BT`/`bottom-up`, `TB`/`top-down`, `LR`/`left-right` (any case);
/// throws std::invalid_argument otherwise.
inline Direction parse_direction(std::string_view text) {
  std::string s(text);
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (s == "bt" || s == "bottom-up" || s == "bottom_up" || s == "bottomup")
    return Direction::bottom_up;
  if (s == "tb" || s == "top-down" || s == "top_down" || s == "topdown") return Direction::top_down;
  if (s == "lr" || s == "left-right" || s == "left_right" || s == "leftright")
    return Direction::left_right;
  throw std::invalid_argument("unknown graph direction '" + std::string(text) +
                              "' (expected BT, TB or LR / bottom-up, top-down, left-right)");
}

/// Attributes of one DOT element, written in insertion order. A value of the
/// form `<...>` is an HTML-like label and is written as is; any other value is
/// quoted when it is not a plain DOT identifier or number.
class DotAttributes {
 public:
  /// Sets `key` (replacing its value, keeping its position) or appends it.
  DotAttributes& set(std::string key, std::string value) {
    for (auto& kv : items_) {
      if (kv.first == key) {
        kv.second = std::move(value);
        return *this;
      }
    }
    items_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  /// The value of `key`, or nullptr.
  const std::string* get(std::string_view key) const {
    for (const auto& kv : items_) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
  /// The value of `key`, or "" when unset.
  std::string value(std::string_view key) const {
    const std::string* v = get(key);
    return v ? *v : std::string();
  }
  /// Removes `key`; true when it was set.
  bool erase(std::string_view key) {
    auto it =
        std::find_if(items_.begin(), items_.end(), [&](const auto& kv) { return kv.first == key; });
    if (it == items_.end()) return false;
    items_.erase(it);
    return true;
  }
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  auto begin() const noexcept { return items_.begin(); }
  auto end() const noexcept { return items_.end(); }

  /// Writes `[k=v, k=v]` (nothing when empty), write_graphviz style.
  friend std::ostream& operator<<(std::ostream& os, const DotAttributes& a) {
    if (a.items_.empty()) return os;
    os << '[';
    bool first = true;
    for (const auto& [k, v] : a.items_) {
      if (!first) os << ", ";
      first = false;
      os << k << '=';
      if (v.size() >= 2 && v.front() == '<' && v.back() == '>') {
        os << v;
      } else {
        os << boost::escape_dot_string(v);
      }
    }
    return os << ']';
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

/// What a drawn node stands for, handed to DotOptions::node_attributes.
struct DotNodeInfo {
  std::string name;           ///< DOT node id
  const OpNode* op = nullptr; ///< the op (first pass when rolled); nullptr for a collapsed module
  std::optional<ModuleFrame> module; ///< the collapsed module (pass 0 when rolled)
  int num_passes = 1;                ///< passes drawn by this node (rolled views)
};

/// What a drawn edge stands for, handed to DotOptions::edge_attributes.
struct DotEdgeInfo {
  std::string tail, head;               ///< DOT node ids
  const OpNode* tail_op = nullptr;      ///< nullptr when the tail is a collapsed module
  const OpNode* head_op = nullptr;      ///< nullptr when the head is a collapsed module
  std::vector<const TensorEdge*> edges; ///< the graph edges merged into this one
};

/// Callback adjusting a node's attributes after the visual code set them.
using NodeAttributeFn = std::function<void(const DotNodeInfo&, DotAttributes&)>;
/// Callback adjusting an edge's attributes.
using EdgeAttributeFn = std::function<void(const DotEdgeInfo&, DotAttributes&)>;
/// Callback adjusting a module cluster's attributes (frame pass 0 when rolled).
using ModuleAttributeFn = std::function<void(const ModuleFrame&, DotAttributes&)>;

/// Options of the drawing, fluent: `DotOptions().rolled(true).nesting_depth(2)`.
struct DotOptions {
  /// No collapsing: every module is a cluster.
  static constexpr int kUnlimitedDepth = std::numeric_limits<int>::max();

  /// One node per layer (passes merged, `(xN)`, `In`/`Out` edge labels) instead
  /// of one node per pass. Needs a labeled graph (label-layers pass).
  TORCHLENS_ARG(bool, rolled) = false;
  /// Modules nested deeper than this many levels collapse into one box3d node
  /// per module (pass); 1 shows only top-level modules. At least 1.
  TORCHLENS_ARG(int, nesting_depth) = kUnlimitedDepth;
  /// Graph direction (`rankdir`); bottom-up by default.
  TORCHLENS_ARG(Direction, direction) = Direction::bottom_up;
  /// Draw buffer tensors (gray boxes); hidden by default.
  TORCHLENS_ARG(bool, show_buffers) = false;
  /// Per-node attribute override, called last.
  TORCHLENS_ARG(NodeAttributeFn, node_attributes);
  /// Per-edge attribute override, called last.
  TORCHLENS_ARG(EdgeAttributeFn, edge_attributes);
  /// Per-module-cluster attribute override, called last.
  TORCHLENS_ARG(ModuleAttributeFn, module_attributes);
};

/// A drawn node.
struct DotNode {
  std::string name; ///< DOT id (label with `:` → `pass`; `module.ADDR[:PASS]` if collapsed)
  DotAttributes attributes;
  int cluster = -1;       ///< innermost enclosing cluster, -1 for none
  bool is_module = false; ///< a collapsed module (box3d)
};

/// A drawn edge.
struct DotEdge {
  DotAttributes attributes;
  int cluster = -1; ///< lowest cluster holding both ends, -1 for the top level
};

/// A module cluster (`subgraph cluster_*`).
struct DotCluster {
  std::string name;   ///< `cluster_ADDR_passN` (unrolled) or `cluster_ADDR` (rolled)
  ModuleFrame module; ///< pass 0 when rolled
  int parent = -1;    ///< enclosing cluster, -1 for the top level
  int depth = 1;      ///< 1 for top-level modules
  DotAttributes attributes;
};

/// Drawing-level data.
struct DotGraphInfo {
  DotAttributes attributes;         ///< `graph [...]` of the whole drawing
  std::vector<DotCluster> clusters; ///< parents before children
  std::string sink;                 ///< node forced to `rank=sink` (last output), or ""
};

/// The drawing: what write_dot prints. Vertices in drawing order.
using DotGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, DotNode,
                                       DotEdge, DotGraphInfo>;

/// write_graphviz vertex writer: a node's `[attributes]`.
struct DotVertexWriter {
  const DotGraph* g;
  template <class V>
  void operator()(std::ostream& os, const V& v) const {
    os << (*g)[v].attributes;
  }
};

/// write_graphviz edge writer: an edge's `[attributes]`.
struct DotEdgeWriter {
  const DotGraph* g;
  template <class E>
  void operator()(std::ostream& os, const E& e) const {
    os << (*g)[e].attributes;
  }
};

/// write_graphviz graph writer: `graph [...]` and the sink rank.
struct DotGraphWriter {
  const DotGraph* g;
  void operator()(std::ostream& os) const {
    const DotGraphInfo& info = (*g)[boost::graph_bundle];
    if (!info.attributes.empty()) os << "graph " << info.attributes << ";\n";
    if (!info.sink.empty())
      os << "{\nrank=sink;\n" << boost::escape_dot_string(info.sink) << ";\n}\n";
  }
};

namespace detail {

inline std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/// `1x3x224x224`; `x5` for 1-D; `x1` for a scalar (TorchLens).
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  if (shape.empty()) return "x1";
  if (shape.size() == 1) return "x" + std::to_string(shape[0]);
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += 'x';
    out += std::to_string(shape[i]);
  }
  return out;
}

using torchlens::detail::size_text;

/// `5`, `3.5`, `2.67`.
inline std::string number_text(double x) {
  std::ostringstream os;
  os << std::setprecision(3) << x;
  return os.str();
}

/// TorchLens's COMMUTE_FUNCS: argument positions are not drawn for these.
inline bool is_commutative(std::string_view layer_type) {
  return layer_type == "add" || layer_type == "mul" || layer_type == "cat" || layer_type == "eq" ||
         layer_type == "ne";
}

/// DOT id of an op: its label with `:` → `pass` (`linear_1_2pass3`).
inline std::string node_name(const std::string& label, std::size_t id) {
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

/// `arg 0`, `arg (0, 1)` for a Tensor[] element, `kwarg NAME` (arg_pos < 0).
inline std::string arg_text(const TensorEdge& e) {
  if (e.arg_pos < 0) return "kwarg " + e.arg_name;
  if (e.list_index >= 0) {
    return "arg (" + std::to_string(e.arg_pos) + ", " + std::to_string(e.list_index) + ")";
  }
  return "arg " + std::to_string(e.arg_pos);
}

/// One thing that may be drawn: an op pass (unrolled) or a layer (rolled).
struct Item {
  std::vector<Vertex> members;     ///< unrolled vertices, pass order
  std::string name;                ///< DOT id
  std::string title;               ///< `conv2d_1_1:2` / `linear_1_2 (x3)`
  std::vector<ModuleFrame> frames; ///< containment, outer → inner (pass 0 when rolled)
  int num_passes = 1;
};

/// A parent → child relation between items.
struct Link {
  std::size_t tail = 0, head = 0;
  std::vector<Edge> edges;         ///< unrolled edges it stands for
  std::string in_label, out_label; ///< rolled: `In 1`, `Out 2-3`
};

/// Key of a module frame (`addr:pass`, or `addr` when rolled).
inline std::string frame_key(const ModuleFrame& f) {
  return f.pass > 0 ? module_pass_key(f) : f.address;
}

/// Key of a frame path prefix frames[0..n).
inline std::string path_key(const std::vector<ModuleFrame>& frames, std::size_t n) {
  std::string key;
  for (std::size_t i = 0; i < n; ++i) {
    key += frame_key(frames[i]);
    key += '/';
  }
  return key;
}

/// Module title `@addr`, `@addr:pass` (unrolled, multi-pass), `@addr (xN)` (rolled).
inline std::string module_title(const ModuleFrame& f, int module_passes) {
  std::string t = "@" + f.address;
  if (module_passes > 1) {
    t += f.pass > 0 ? ":" + std::to_string(f.pass) : " (x" + std::to_string(module_passes) + ")";
  }
  return t;
}

} // namespace detail

/// Builds the drawing of a graph (run the default pass pipeline on it first:
/// labels, ancestry, conditionals and layers come from the passes).
inline DotGraph build_dot_graph(const ModelGraph& g, const DotOptions& options = {}) {
  using detail::html_escape;
  if (options.nesting_depth() < 1) {
    throw std::invalid_argument("nesting_depth must be at least 1, got " +
                                std::to_string(options.nesting_depth()));
  }
  const bool rolled = options.rolled();
  const std::size_t depth_limit = static_cast<std::size_t>(options.nesting_depth());
  const std::size_t n = boost::num_vertices(g);

  // ---- per-vertex module frames (the root "" is never drawn) ----
  std::vector<std::vector<ModuleFrame>> frames(n);
  std::set<std::string> non_leaf;
  std::unordered_map<std::string, int> module_passes = module_pass_counts(g);
  std::unordered_map<std::string, std::string> module_type;
  for (Vertex v = 0; v < n; ++v) {
    for (const auto& f : g[v].modules) {
      if (!f.address.empty()) frames[v].push_back(f);
    }
    for (std::size_t i = 0; i < frames[v].size(); ++i) {
      const auto& f = frames[v][i];
      if (i + 1 < frames[v].size()) non_leaf.insert(f.address);
      module_type.emplace(f.address, f.type);
    }
  }
  for (const auto& m : g[boost::graph_bundle].modules) {
    int& p = module_passes[m.address];
    p = std::max(p, m.num_passes);
  }
  // v leaves its k-th module pass (a consumer outside it, or returned)
  auto is_exit = [&](Vertex v, std::size_t k) {
    return k < frames[v].size() && leaves_module_pass(g, v, frames[v][k]);
  };

  // ---- items and links (unrolled: vertices and edges; rolled: layers) ----
  std::vector<detail::Item> items;
  std::vector<detail::Link> links;
  if (!rolled) {
    items.resize(n);
    for (Vertex v = 0; v < n; ++v) {
      items[v].members = {v};
      items[v].name = detail::node_name(g[v].label, g[v].id);
      items[v].title = g[v].label.empty() ? items[v].name : g[v].label;
      items[v].frames = frames[v];
    }
    for (auto e : boost::make_iterator_range(boost::edges(g))) {
      links.push_back(detail::Link{boost::source(e, g), boost::target(e, g), {e}, "", ""});
    }
  } else {
    const RolledGraph r = roll_graph(g);
    const std::size_t layers = boost::num_vertices(r);
    std::vector<std::size_t> item_of(layers, static_cast<std::size_t>(-1));
    for (std::size_t l = 0; l < layers; ++l) {
      const RolledNode& rn = r[l];
      if (rn.passes.empty()) continue;
      detail::Item it;
      it.members = rn.passes;
      const OpNode& first = g[rn.passes.front()];
      it.name = detail::node_name(rn.label, first.id);
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
      links.push_back(detail::Link{item_of[lu], item_of[lv], unrolled[{lu, lv}], in_label(r, re),
                                   out_label(r, re)});
    }
  }

  // ---- place items: hidden, own node (maybe a leaf-module box), or collapsed ----
  DotGraph dg;
  DotGraphInfo& info = dg[boost::graph_bundle];
  std::unordered_map<std::string, int> cluster_of_path;
  auto cluster_for = [&](const std::vector<ModuleFrame>& fr, std::size_t depth) {
    int parent = -1;
    for (std::size_t i = 0; i < depth; ++i) {
      const std::string key = detail::path_key(fr, i + 1);
      auto it = cluster_of_path.find(key);
      if (it == cluster_of_path.end()) {
        DotCluster c;
        const ModuleFrame& f = fr[i];
        c.name = "cluster_" + f.address + (f.pass > 0 ? "_pass" + std::to_string(f.pass) : "");
        c.module = f;
        c.parent = parent;
        c.depth = static_cast<int>(i) + 1;
        it = cluster_of_path.emplace(key, static_cast<int>(info.clusters.size())).first;
        info.clusters.push_back(std::move(c));
      }
      parent = it->second;
    }
    return parent;
  };

  struct Collapsed {
    Vertex node; // its DotGraph vertex
    ModuleFrame frame;
    std::size_t level;              // index of the frame in the path
    std::vector<std::size_t> items; // collapsed items, in order
  };
  std::vector<Collapsed> collapsed;
  std::unordered_map<std::string, std::size_t> collapsed_of_path;
  constexpr Vertex kNone = std::numeric_limits<Vertex>::max();
  std::vector<Vertex> drawn(items.size(), kNone);
  std::vector<bool> leaf_box(items.size(), false);
  std::vector<const OpNode*> drawn_op; // per DotGraph vertex, nullptr if collapsed
  std::vector<int> drawn_collapsed;    // per DotGraph vertex, index into collapsed or -1
  std::vector<bool> drawn_from_input;  // per DotGraph vertex

  auto hidden = [&](const detail::Item& it) {
    return g[it.members.front()].kind == NodeKind::buffer && !options.show_buffers();
  };
  // visible items per innermost module (pass): a leaf module's output leaves
  // the module's cluster (drawn as the module's box) only when it is alone in it
  std::unordered_map<std::string, std::size_t> items_in_module;
  for (const auto& it : items) {
    if (!hidden(it) && !it.frames.empty())
      ++items_in_module[detail::path_key(it.frames, it.frames.size())];
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    const detail::Item& it = items[i];
    const OpNode& node = g[it.members.front()];
    if (hidden(it)) continue;
    const auto& fr = it.frames;
    const bool innermost_leaf = !fr.empty() && !non_leaf.count(fr.back().address);
    bool own_box = false;
    if (innermost_leaf && node.kind == NodeKind::op) {
      for (Vertex m : it.members) own_box = own_box || is_exit(m, frames[m].size() - 1);
    }
    leaf_box[i] = own_box;
    const bool alone = !fr.empty() && items_in_module[detail::path_key(fr, fr.size())] == 1;
    const bool drop_last = (own_box && alone) || (innermost_leaf && node.kind == NodeKind::buffer);
    const std::size_t depth = fr.size() - (drop_last ? 1 : 0);
    bool from_input = false;
    for (Vertex m : it.members) from_input = from_input || g[m].has_input_ancestor;
    if (depth >= depth_limit) {
      const std::string key = detail::path_key(fr, depth_limit);
      auto found = collapsed_of_path.find(key);
      if (found == collapsed_of_path.end()) {
        const int cl = cluster_for(fr, depth_limit - 1);
        DotNode dn;
        const ModuleFrame& f = fr[depth_limit - 1];
        dn.name = "module." + detail::frame_key(f);
        dn.cluster = cl;
        dn.is_module = true;
        const Vertex dv = boost::add_vertex(std::move(dn), dg);
        drawn_op.push_back(nullptr);
        drawn_collapsed.push_back(static_cast<int>(collapsed.size()));
        drawn_from_input.push_back(false);
        found = collapsed_of_path.emplace(key, collapsed.size()).first;
        collapsed.push_back(Collapsed{dv, f, depth_limit - 1, {}});
      }
      Collapsed& c = collapsed[found->second];
      c.items.push_back(i);
      drawn[i] = c.node;
      drawn_from_input[c.node] = drawn_from_input[c.node] || from_input;
      continue;
    }
    DotNode dn;
    dn.name = it.name;
    dn.cluster = cluster_for(fr, depth);
    drawn[i] = boost::add_vertex(std::move(dn), dg);
    drawn_op.push_back(&node);
    drawn_collapsed.push_back(-1);
    drawn_from_input.push_back(from_input);
  }

  // ---- node attributes ----
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (drawn[i] == kNone || dg[drawn[i]].is_module) continue;
    const detail::Item& it = items[i];
    const OpNode& node = g[it.members.front()];
    std::string label = "<";
    if (node.is_terminal_bool && node.scalar_bool_value) {
      label += *node.scalar_bool_value ? "<b><u>TRUE:</u></b><br/><br/>"
                                       : "<b><u>FALSE:</u></b><br/><br/>";
    }
    label += "<b>" + html_escape(it.title) + "</b><br/>" + detail::shape_text(node.shape) + " (" +
             detail::size_text(node.bytes) + ")";
    if (!node.params.empty()) {
      label += "<br/>params: ";
      for (std::size_t p = 0; p < node.params.size(); ++p) {
        if (p) label += ", ";
        label += detail::shape_text(node.params[p].shape);
      }
    }
    if (node.kind != NodeKind::op) {
      if (!node.io_address.empty()) label += "<br/>@" + html_escape(node.io_address);
    } else if (leaf_box[i]) {
      const ModuleFrame& f = it.frames.back();
      const int mp = module_passes[f.address];
      label +=
          "<br/>" + html_escape(rolled || mp <= 1 ? "@" + f.address : detail::module_title(f, mp));
    }
    label += ">";
    const bool boxed = leaf_box[i] || node.kind == NodeKind::buffer;
    std::string fill = "white";
    if (node.kind == NodeKind::input) {
      fill = "#98FB98";
    } else if (node.kind == NodeKind::output) {
      fill = "#ff9999";
    } else if (node.is_terminal_bool) {
      fill = "#F7D460";
    } else if (!node.params.empty()) {
      fill = "#E6E6E6";
    }
    const std::string line = node.kind == NodeKind::buffer ? "#888888" : "black";
    DotAttributes& a = dg[drawn[i]].attributes;
    a.set("label", label)
        .set("shape", boxed ? "box" : "oval")
        .set("style", drawn_from_input[drawn[i]] ? "filled" : "filled,dashed")
        .set("fillcolor", fill)
        .set("color", line)
        .set("fontcolor", line);
    if (options.node_attributes()) {
      options.node_attributes()(DotNodeInfo{dg[drawn[i]].name, &node, std::nullopt, it.num_passes},
                                a);
    }
  }
  for (const Collapsed& c : collapsed) {
    std::set<std::string> seen_params;
    std::int64_t num_params = 0;
    std::size_t layers = 0;
    std::optional<std::size_t> out_item;
    for (std::size_t i : c.items) {
      const OpNode& node = g[items[i].members.front()];
      if (node.kind != NodeKind::buffer) ++layers;
      for (Vertex m : items[i].members) {
        for (const auto& p : g[m].params) {
          if (seen_params.insert(p.address).second) num_params += p.numel;
        }
        if (is_exit(m, c.level)) out_item = i;
      }
    }
    const OpNode& out = g[items[out_item.value_or(c.items.back())].members.front()];
    const int mp = module_passes[c.frame.address];
    std::string label = "<<b>" + html_escape(detail::module_title(c.frame, mp)) + "</b><br/>" +
                        html_escape(c.frame.type) + "<br/>" + detail::shape_text(out.shape) + " (" +
                        detail::size_text(out.bytes) + ")<br/>" + std::to_string(layers) +
                        " layers total<br/>" + std::to_string(num_params) + " parameters>";
    DotAttributes& a = dg[c.node].attributes;
    a.set("label", label)
        .set("shape", "box3d")
        .set("style", drawn_from_input[c.node] ? "filled" : "filled,dashed")
        .set("fillcolor", num_params > 0 ? "#E6E6E6" : "white")
        .set("color", "black")
        .set("fontcolor", "black");
    if (options.node_attributes()) {
      options.node_attributes()(DotNodeInfo{dg[c.node].name, nullptr, c.frame, mp}, a);
    }
  }

  // ---- edges: merged per drawn pair, first-appearance order ----
  struct Merged {
    Vertex tail, head;
    std::vector<Edge> edges;
    std::string in_label, out_label;
  };
  std::vector<Merged> merged;
  std::map<std::pair<Vertex, Vertex>, std::size_t> merged_of;
  for (const detail::Link& l : links) {
    const Vertex t = drawn[l.tail], h = drawn[l.head];
    if (t == kNone || h == kNone) continue;
    if (t == h && dg[t].is_module) continue; // inside a collapsed module
    auto [it, fresh] = merged_of.emplace(std::make_pair(t, h), merged.size());
    if (fresh) merged.push_back(Merged{t, h, {}, "", ""});
    Merged& m = merged[it->second];
    m.edges.insert(m.edges.end(), l.edges.begin(), l.edges.end());
    if (!dg[t].is_module && !dg[h].is_module) {
      if (!l.in_label.empty()) m.in_label = l.in_label;
      if (!l.out_label.empty()) m.out_label = l.out_label;
    }
  }
  std::vector<std::set<Vertex>> drawn_parents(boost::num_vertices(dg));
  for (const Merged& m : merged) drawn_parents[m.head].insert(m.tail);
  // most visible parents of one call (rolled: of one pass) of each drawn op
  std::vector<std::size_t> pass_parents(boost::num_vertices(dg), 0);
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (drawn[i] == kNone || dg[drawn[i]].is_module) continue;
    for (Vertex m : items[i].members) {
      std::set<Vertex> parents;
      for (auto e : boost::make_iterator_range(boost::in_edges(m, g))) {
        const Vertex u = boost::source(e, g);
        if (g[u].kind != NodeKind::buffer || options.show_buffers()) parents.insert(u);
      }
      pass_parents[drawn[i]] = std::max(pass_parents[drawn[i]], parents.size());
    }
  }

  auto ancestors = [&](int c) {
    std::vector<int> chain;
    for (; c >= 0; c = info.clusters[static_cast<std::size_t>(c)].parent) chain.push_back(c);
    return chain;
  };
  for (const Merged& m : merged) {
    DotEdge de;
    const OpNode* head_op = drawn_op[m.head];
    bool is_if = false;
    std::vector<const TensorEdge*> tensor_edges;
    for (Edge e : m.edges) {
      tensor_edges.push_back(&g[e]);
      is_if = is_if || g[e].is_cond_branch_start;
    }
    std::string text;
    if (is_if) text = "<font point-size=\"18\"><b><u>IF</u></b></font>";
    if (head_op && head_op->kind == NodeKind::op && drawn_parents[m.head].size() > 1 &&
        pass_parents[m.head] > 1 && !detail::is_commutative(head_op->layer_type)) {
      std::vector<const TensorEdge*> sorted = tensor_edges;
      std::sort(sorted.begin(), sorted.end(), [](const TensorEdge* a, const TensorEdge* b) {
        return std::tie(a->arg_pos, a->list_index) < std::tie(b->arg_pos, b->list_index);
      });
      std::vector<std::string> args;
      for (const TensorEdge* e : sorted) {
        std::string s = detail::arg_text(*e);
        if (std::find(args.begin(), args.end(), s) == args.end()) args.push_back(s);
      }
      std::string joined;
      for (const auto& s : args) joined += (joined.empty() ? "" : "<br/>") + html_escape(s);
      if (!text.empty()) text += "<br/>";
      text += "<font point-size=\"10\"><b>" + joined + "</b></font>";
    }
    if (!text.empty()) de.attributes.set("label", "<" + text + ">");
    if (!m.in_label.empty()) de.attributes.set("headlabel", m.in_label);
    if (!m.out_label.empty()) de.attributes.set("taillabel", m.out_label);
    de.attributes.set("style", drawn_from_input[m.tail] ? "solid" : "dashed");
    // lowest cluster holding both ends
    const auto tail_chain = ancestors(dg[m.tail].cluster);
    for (int c : ancestors(dg[m.head].cluster)) {
      if (std::find(tail_chain.begin(), tail_chain.end(), c) != tail_chain.end()) {
        de.cluster = c;
        break;
      }
    }
    if (options.edge_attributes()) {
      options.edge_attributes()(
          DotEdgeInfo{dg[m.tail].name, dg[m.head].name, drawn_op[m.tail], head_op, tensor_edges},
          de.attributes);
    }
    boost::add_edge(m.tail, m.head, std::move(de), dg);
  }

  // ---- clusters ----
  std::vector<bool> cluster_from_input(info.clusters.size(), false);
  int max_depth = 0;
  for (Vertex v = 0; v < boost::num_vertices(dg); ++v) {
    if (!drawn_from_input[v]) continue;
    for (int c : ancestors(dg[v].cluster)) cluster_from_input[static_cast<std::size_t>(c)] = true;
  }
  for (const auto& c : info.clusters) max_depth = std::max(max_depth, c.depth);
  for (std::size_t ci = 0; ci < info.clusters.size(); ++ci) {
    DotCluster& c = info.clusters[ci];
    const double pen =
        max_depth <= 1 ? 5.0 : 5.0 - 3.0 * static_cast<double>(c.depth - 1) / (max_depth - 1);
    const std::string type = c.module.type.empty() ? module_type[c.module.address] : c.module.type;
    c.attributes
        .set("label",
             "<<b>" + html_escape(detail::module_title(c.module, module_passes[c.module.address])) +
                 "</b><br align=\"left\"/>(" + html_escape(type) + ")<br align=\"left\"/>>")
        .set("labelloc", "b")
        .set("labeljust", "l")
        .set("penwidth", detail::number_text(pen))
        .set("style", cluster_from_input[ci] ? "solid" : "dashed");
    if (options.module_attributes()) options.module_attributes()(c.module, c.attributes);
  }

  // ---- the header ----
  const GraphTotals totals = graph_totals(g);
  const GraphInfo& gi = g[boost::graph_bundle];
  info.attributes
      .set("label", "<<b>" + html_escape(gi.model_name) + "</b><br align=\"left\"/>" +
                        std::to_string(totals.num_tensors) + " tensors total (" +
                        detail::size_text(totals.tensor_bytes) + ")<br align=\"left\"/>" +
                        std::to_string(totals.num_params) + " params total (" +
                        detail::size_text(totals.param_bytes) + ")<br align=\"left\"/>>")
      .set("labelloc", "t")
      .set("labeljust", "l")
      .set("rankdir", std::string(rankdir(options.direction())))
      .set("ordering", "out");
  for (std::size_t i = items.size(); i-- > 0;) {
    if (drawn[i] != kNone && g[items[i].members.front()].kind == NodeKind::output) {
      if (dg[drawn[i]].cluster < 0) info.sink = dg[drawn[i]].name;
      break;
    }
  }
  return dg;
}

/// Prints a drawing: through boost::write_graphviz when it has no clusters, else
/// with the same writers inside nested `subgraph cluster_*` blocks.
inline void write_dot(std::ostream& os, const DotGraph& dg) {
  const DotVertexWriter vw{&dg};
  const DotEdgeWriter ew{&dg};
  const DotGraphWriter gw{&dg};
  const DotGraphInfo& info = dg[boost::graph_bundle];
  if (info.clusters.empty()) {
    boost::write_graphviz(os, dg, vw, ew, gw, boost::get(&DotNode::name, dg));
    return;
  }
  const std::size_t nc = info.clusters.size();
  // contents per cluster; index nc is the top level
  std::vector<std::vector<Vertex>> nodes(nc + 1);
  std::vector<std::vector<DotGraph::edge_descriptor>> edges(nc + 1);
  std::vector<std::vector<std::size_t>> children(nc + 1);
  auto slot = [&](int c) { return c < 0 ? nc : static_cast<std::size_t>(c); };
  for (auto v : boost::make_iterator_range(boost::vertices(dg)))
    nodes[slot(dg[v].cluster)].push_back(v);
  for (auto e : boost::make_iterator_range(boost::edges(dg)))
    edges[slot(dg[e].cluster)].push_back(e);
  for (std::size_t c = 0; c < nc; ++c) children[slot(info.clusters[c].parent)].push_back(c);

  auto write_contents = [&](auto&& self, std::size_t s, const std::string& indent) -> void {
    for (Vertex v : nodes[s]) {
      os << indent << boost::escape_dot_string(dg[v].name);
      vw(os, v);
      os << ";\n";
    }
    for (std::size_t c : children[s]) {
      const DotCluster& cl = info.clusters[c];
      os << indent << "subgraph " << boost::escape_dot_string(cl.name) << " {\n";
      if (!cl.attributes.empty()) os << indent << "  graph " << cl.attributes << ";\n";
      self(self, c, indent + "  ");
      os << indent << "}\n";
    }
    for (auto e : edges[s]) {
      os << indent << boost::escape_dot_string(dg[boost::source(e, dg)].name) << "->"
         << boost::escape_dot_string(dg[boost::target(e, dg)].name) << " ";
      ew(os, e);
      os << ";\n";
    }
  };
  os << "digraph G {\n";
  gw(os);
  write_contents(write_contents, nc, "");
  os << "}\n";
}

/// Writes the DOT drawing of a graph.
inline void write_dot(std::ostream& os, const ModelGraph& g, const DotOptions& options = {}) {
  write_dot(os, build_dot_graph(g, options));
}

/// The DOT drawing of a graph as a string.
inline std::string to_dot(const ModelGraph& g, const DotOptions& options = {}) {
  std::ostringstream os;
  write_dot(os, g, options);
  return os.str();
}

} // namespace torchlens::io
