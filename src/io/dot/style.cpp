// TorchLens's visual code over a layout (behaviour report §5), and
// build_dot_graph(): the layout, dressed in it. Torch-free.
#include "style.hpp"

#include "layout.hpp"
#include "write.hpp"

#include <torchlens/detail/text.hpp>
#include <torchlens/graph/query.hpp>
#include <torchlens/io/dot.hpp>

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace torchlens::io::detail {

namespace {

using torchlens::detail::size_text;

std::string html_escape(std::string_view s) {
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

/// `5`, `3.5`, `2.67`.
std::string number_text(double x) {
  std::ostringstream os;
  os << std::setprecision(3) << x;
  return os.str();
}

/// TorchLens's COMMUTE_FUNCS: argument positions are not drawn for these.
bool is_commutative(std::string_view layer_type) {
  return layer_type == "add" || layer_type == "mul" || layer_type == "cat" || layer_type == "eq" ||
         layer_type == "ne";
}

/// `arg 0`, `arg (0, 1)` for a Tensor[] element, `kwarg NAME` (arg_pos < 0).
std::string arg_text(const TensorEdge& e) {
  if (e.arg_pos < 0) return "kwarg " + e.arg_name;
  if (e.list_index >= 0) {
    return "arg (" + std::to_string(e.arg_pos) + ", " + std::to_string(e.list_index) + ")";
  }
  return "arg " + std::to_string(e.arg_pos);
}

/// Module title `@addr`, `@addr:pass` (unrolled, multi-pass), `@addr (xN)` (rolled).
std::string module_title(const ModuleFrame& f, int module_passes) {
  std::string t = "@" + f.address;
  if (module_passes > 1) {
    t += f.pass > 0 ? ":" + std::to_string(f.pass) : " (x" + std::to_string(module_passes) + ")";
  }
  return t;
}

/// Passes of a module address (0 when unknown).
int passes_of(const Layout& layout, const std::string& address) {
  const auto it = layout.module_passes.find(address);
  return it == layout.module_passes.end() ? 0 : it->second;
}

/// The op a drawn node shows; nullptr for a collapsed module.
const OpNode* op_of(const ModelGraph& g, const Layout& layout, LayoutGraph::vertex_descriptor v) {
  const LayoutNode& ln = layout.graph[v];
  return ln.item ? &g[layout.items[*ln.item].members.front()] : nullptr;
}

} // namespace

DotAttributes NodeStyle::attributes(LayoutGraph::vertex_descriptor v) const {
  const LayoutNode& ln = layout->graph[v];
  DotAttributes a;
  if (ln.module) { // a collapsed module pass
    std::set<std::string> seen_params;
    std::int64_t num_params = 0;
    std::size_t layers = 0;
    for (std::size_t i : ln.collapsed) {
      const Item& it = layout->items[i];
      if ((*g)[it.members.front()].kind != NodeKind::buffer) ++layers;
      for (Vertex m : it.members) {
        for (const auto& p : (*g)[m].params) {
          if (seen_params.insert(p.address).second) num_params += p.numel;
        }
      }
    }
    const OpNode& out = (*g)[ln.output];
    const ModuleFrame& f = *ln.module;
    const int mp = passes_of(*layout, f.address);
    a.set("label", "<<b>" + html_escape(module_title(f, mp)) + "</b><br/>" + html_escape(f.type) +
                       "<br/>" + torchlens::detail::shape_as_dims(out.shape) + " (" +
                       size_text(out.bytes) + ")<br/>" + std::to_string(layers) +
                       " layers total<br/>" + std::to_string(num_params) + " parameters>")
        .set("shape", "box3d")
        .set("style", ln.from_input ? "filled" : "filled,dashed")
        .set("fillcolor", num_params > 0 ? "#E6E6E6" : "white")
        .set("color", "black")
        .set("fontcolor", "black");
    if (options->node_attributes()) {
      options->node_attributes()(DotNodeInfo{ln.name, nullptr, f, mp}, a);
    }
    return a;
  }
  const Item& it = layout->items[*ln.item];
  const OpNode& node = (*g)[it.members.front()];
  std::string label = "<";
  if (node.is_terminal_bool && node.scalar_bool_value) {
    label += *node.scalar_bool_value ? "<b><u>TRUE:</u></b><br/><br/>"
                                     : "<b><u>FALSE:</u></b><br/><br/>";
  }
  label += "<b>" + html_escape(it.title) + "</b><br/>" +
           torchlens::detail::shape_as_dims(node.shape) + " (" + size_text(node.bytes) + ")";
  if (!node.params.empty()) {
    label += "<br/>params: ";
    for (std::size_t p = 0; p < node.params.size(); ++p) {
      if (p) label += ", ";
      label += torchlens::detail::shape_as_dims(node.params[p].shape);
    }
  }
  if (node.kind != NodeKind::op) {
    if (!node.io_address.empty()) label += "<br/>@" + html_escape(node.io_address);
  } else if (ln.leaf_box) {
    const ModuleFrame& f = it.frames.back();
    const int mp = passes_of(*layout, f.address);
    label +=
        "<br/>" + html_escape(options->rolled() || mp <= 1 ? "@" + f.address : module_title(f, mp));
  }
  label += ">";
  const bool boxed = ln.leaf_box || node.kind == NodeKind::buffer;
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
  a.set("label", label)
      .set("shape", boxed ? "box" : "oval")
      .set("style", ln.from_input ? "filled" : "filled,dashed")
      .set("fillcolor", fill)
      .set("color", line)
      .set("fontcolor", line);
  if (options->node_attributes()) {
    options->node_attributes()(DotNodeInfo{ln.name, &node, std::nullopt, it.num_passes}, a);
  }
  return a;
}

DotAttributes EdgeStyle::attributes(LayoutGraph::edge_descriptor e) const {
  const LayoutGraph& dg = layout->graph;
  const auto tail = boost::source(e, dg), head = boost::target(e, dg);
  const LayoutEdge& le = dg[e];
  const OpNode* head_op = op_of(*g, *layout, head);
  DotAttributes a;
  bool is_if = false;
  std::vector<const TensorEdge*> tensor_edges;
  for (Edge te : le.edges) {
    tensor_edges.push_back(&(*g)[te]);
    is_if = is_if || (*g)[te].is_cond_branch_start;
  }
  std::string text;
  if (is_if) text = "<font point-size=\"18\"><b><u>IF</u></b></font>";
  // argument positions: a non-commutative op with several drawn parents, one
  // of whose calls has several visible parents
  if (head_op && head_op->kind == NodeKind::op && boost::in_degree(head, dg) > 1 &&
      dg[head].call_parents > 1 && !is_commutative(head_op->layer_type)) {
    std::vector<const TensorEdge*> sorted = tensor_edges;
    std::sort(sorted.begin(), sorted.end(), [](const TensorEdge* x, const TensorEdge* y) {
      return std::tie(x->arg_pos, x->list_index) < std::tie(y->arg_pos, y->list_index);
    });
    std::vector<std::string> args;
    for (const TensorEdge* te : sorted) {
      std::string s = arg_text(*te);
      if (std::find(args.begin(), args.end(), s) == args.end()) args.push_back(s);
    }
    std::string joined;
    for (const auto& s : args) joined += (joined.empty() ? "" : "<br/>") + html_escape(s);
    if (!text.empty()) text += "<br/>";
    text += "<font point-size=\"10\"><b>" + joined + "</b></font>";
  }
  if (!text.empty()) a.set("label", "<" + text + ">");
  if (!le.in_label.empty()) a.set("headlabel", le.in_label);
  if (!le.out_label.empty()) a.set("taillabel", le.out_label);
  a.set("style", dg[tail].from_input ? "solid" : "dashed");
  if (options->edge_attributes()) {
    options->edge_attributes()(
        DotEdgeInfo{dg[tail].name, dg[head].name, op_of(*g, *layout, tail), head_op, tensor_edges},
        a);
  }
  return a;
}

DotAttributes ClusterStyle::attributes(std::size_t cluster) const {
  const LayoutCluster& c = layout->clusters[cluster];
  const int max_depth = layout->max_cluster_depth;
  const double pen =
      max_depth <= 1 ? 5.0 : 5.0 - 3.0 * static_cast<double>(c.depth - 1) / (max_depth - 1);
  std::string type = c.module.type;
  if (type.empty()) {
    const auto it = layout->module_type.find(c.module.address);
    if (it != layout->module_type.end()) type = it->second;
  }
  DotAttributes a;
  a.set("label", "<<b>" +
                     html_escape(module_title(c.module, passes_of(*layout, c.module.address))) +
                     "</b><br align=\"left\"/>(" + html_escape(type) + ")<br align=\"left\"/>>")
      .set("labelloc", "b")
      .set("labeljust", "l")
      .set("penwidth", number_text(pen))
      .set("style", c.from_input ? "solid" : "dashed");
  if (options->module_attributes()) options->module_attributes()(c.module, a);
  return a;
}

DotAttributes GraphStyle::attributes() const {
  const GraphTotals totals = graph_totals(*g);
  DotAttributes a;
  a.set("label", "<<b>" + html_escape((*g)[boost::graph_bundle].model_name) +
                     "</b><br align=\"left\"/>" + std::to_string(totals.num_tensors) +
                     " tensors total (" + size_text(totals.tensor_bytes) + ")<br align=\"left\"/>" +
                     std::to_string(totals.num_params) + " params total (" +
                     size_text(totals.param_bytes) + ")<br align=\"left\"/>>")
      .set("labelloc", "t")
      .set("labeljust", "l")
      .set("rankdir", std::string(rankdir(options->direction())))
      .set("ordering", "out");
  return a;
}

void GraphStyle::operator()(std::ostream& os) const {
  write_graph_properties(os, attributes(), layout->sink);
}

} // namespace torchlens::io::detail

namespace torchlens::io {

namespace {
/// TorchLens's GRADIENT_ARROW_COLOR (behaviour report §5).
constexpr std::string_view kGradientColor = "#9197F6";
} // namespace

DotGraph build_dot_graph(const ModelGraph& g, const DotOptions& options) {
  const detail::Layout layout = detail::make_layout(g, options);
  const detail::LayoutGraph& lg = layout.graph;
  const detail::NodeStyle node_style{&g, &layout, &options};
  const detail::EdgeStyle edge_style{&g, &layout, &options};
  const detail::ClusterStyle cluster_style{&layout, &options};
  const detail::GraphStyle graph_style{&g, &layout, &options};

  DotGraph dg;
  for (auto v : boost::make_iterator_range(boost::vertices(lg))) {
    DotNode dn;
    dn.name = lg[v].name;
    dn.cluster = lg[v].cluster;
    dn.is_module = lg[v].module.has_value();
    boost::add_vertex(std::move(dn), dg);
  }
  // attributes (and the callbacks) in a fixed order: drawn items, collapsed
  // modules, edges, clusters
  for (auto v : boost::make_iterator_range(boost::vertices(lg))) {
    if (!dg[v].is_module) dg[v].attributes = node_style.attributes(v);
  }
  for (auto v : boost::make_iterator_range(boost::vertices(lg))) {
    if (dg[v].is_module) dg[v].attributes = node_style.attributes(v);
  }
  for (auto e : layout.edge_order) {
    boost::add_edge(boost::source(e, lg), boost::target(e, lg),
                    DotEdge{edge_style.attributes(e), lg[e].cluster}, dg);
  }
  // gradient edges (unrolled): child → parent wherever both have a saved
  // gradient, in TorchLens's gradient colour
  if (!options.rolled() && !options.gradient_layers().empty()) {
    const std::unordered_set<Vertex> with_grad(options.gradient_layers().begin(),
                                               options.gradient_layers().end());
    auto vertex_of = [&](detail::LayoutGraph::vertex_descriptor n) -> std::optional<Vertex> {
      if (!lg[n].item) return std::nullopt;
      const auto& members = layout.items[*lg[n].item].members;
      if (members.size() != 1) return std::nullopt;
      return members.front();
    };
    for (auto e : layout.edge_order) {
      const auto tail = boost::source(e, lg), head = boost::target(e, lg);
      const auto parent = vertex_of(tail), child = vertex_of(head);
      if (!parent || !child || with_grad.count(*parent) == 0 || with_grad.count(*child) == 0) {
        continue;
      }
      DotAttributes a;
      a.set("color", std::string(kGradientColor));
      a.set("fontcolor", std::string(kGradientColor));
      a.set("arrowsize", ".7");
      if (const auto* style = dg[boost::edge(tail, head, dg).first].attributes.get("style")) {
        a.set("style", *style);
      }
      boost::add_edge(head, tail, DotEdge{std::move(a), lg[e].cluster}, dg);
    }
  }
  DotGraphInfo& info = dg[boost::graph_bundle];
  for (std::size_t c = 0; c < layout.clusters.size(); ++c) {
    const detail::LayoutCluster& lc = layout.clusters[c];
    info.clusters.push_back(
        DotCluster{lc.name, lc.module, lc.parent, lc.depth, cluster_style.attributes(c)});
  }
  info.attributes = graph_style.attributes();
  info.sink = layout.sink;
  return dg;
}

} // namespace torchlens::io
