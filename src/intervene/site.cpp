// Sites and selectors (site.hpp): building the expression tree, evaluating it
// on live facts and on a reference log.

#include "selector_node.hpp"

#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <boost/range/iterator_range.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace torchlens {

using detail::SelectorNode;
using Node = std::shared_ptr<const SelectorNode>;

namespace {

Node make(SelectorNode::Kind kind, std::string text = {}, int number = 0) {
  auto n = std::make_shared<SelectorNode>();
  n->kind = kind;
  n->text = std::move(text);
  n->number = number;
  return n;
}

Node combine(SelectorNode::Kind kind, Node a, Node b) {
  auto n = std::make_shared<SelectorNode>();
  n->kind = kind;
  n->children = {std::move(a), std::move(b)};
  return n;
}

Node negate(Node a) {
  auto n = std::make_shared<SelectorNode>();
  n->kind = SelectorNode::Kind::not_;
  n->children = {std::move(a)};
  return n;
}

bool name_matches(const std::string& wanted, std::string_view op_name, std::string_view type) {
  if (wanted.find("::") != std::string::npos) return op_name == wanted;
  if (op_name.size() == wanted.size() + 6 && op_name.substr(0, 6) == "aten::" &&
      op_name.substr(6) == wanted) {
    return true;
  }
  return type == layer_type_of(wanted);
}

bool portable_tree(const SelectorNode& n) {
  if (n.kind == SelectorNode::Kind::where) return false;
  return std::all_of(n.children.begin(), n.children.end(),
                     [](const Node& c) { return portable_tree(*c); });
}

void describe_tree(const SelectorNode& n, std::ostream& os) {
  using K = SelectorNode::Kind;
  switch (n.kind) {
    case K::any:
      os << "any()";
      return;
    case K::func:
      os << "func(" << n.text << ")";
      return;
    case K::in_module:
      os << "in_module(" << n.text;
      if (n.number > 0) os << ":" << n.number;
      os << ")";
      return;
    case K::output_index:
      os << "output_index(" << n.number << ")";
      return;
    case K::where:
      os << n.text << "(...)";
      return;
    case K::label:
      os << "label(" << n.text << ")";
      return;
    case K::module:
      os << "module(" << n.text << ")";
      return;
    case K::ids: {
      os << "ids(";
      for (std::size_t i = 0; i < n.ids.size(); ++i) os << (i ? "," : "") << n.ids[i];
      os << ")";
      return;
    }
    case K::all:
    case K::either:
      os << "(";
      describe_tree(*n.children[0], os);
      os << (n.kind == K::all ? " & " : " | ");
      describe_tree(*n.children[1], os);
      os << ")";
      return;
    case K::not_:
      os << "!";
      describe_tree(*n.children[0], os);
      return;
  }
}

std::string describe_node(const Node& n) {
  std::ostringstream os;
  describe_tree(*n, os);
  return os.str();
}

/// The producer standing for an output node; the vertex itself otherwise.
Vertex producer_of(const ModelGraph& g, Vertex v) {
  if (g[v].kind != NodeKind::output) return v;
  for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) return boost::source(e, g);
  return v;
}

/// Vertices a label or module key selects.
std::set<Vertex> label_vertices(const SelectorNode& n, const ModelLog& log) {
  std::set<Vertex> out;
  if (n.kind == SelectorNode::Kind::label) {
    for (Vertex v : log.select(n.text)) out.insert(producer_of(log.graph(), v));
    return out;
  }
  // a module's output: one pass (`layer4.1:2`) or every pass
  const auto& outputs = log.module_outputs();
  if (auto it = outputs.find(n.text); it != outputs.end()) {
    out.insert(it->second.begin(), it->second.end());
    return out;
  }
  for (const auto& [key, vs] : outputs) {
    if (key.substr(0, key.rfind(':')) == n.text) out.insert(vs.begin(), vs.end());
  }
  if (out.empty()) {
    // the log's own error, with near matches
    for (Vertex v : log.select(n.text)) out.insert(producer_of(log.graph(), v));
  }
  return out;
}

bool eval_on_log(const SelectorNode& n, const ModelLog& log, Vertex v,
                 std::map<const SelectorNode*, std::set<Vertex>>& cache) {
  using K = SelectorNode::Kind;
  switch (n.kind) {
    case K::label:
    case K::module: {
      auto it = cache.find(&n);
      if (it == cache.end()) it = cache.emplace(&n, label_vertices(n, log)).first;
      return it->second.count(v) != 0;
    }
    case K::ids:
      return std::binary_search(n.ids.begin(), n.ids.end(), log.graph()[v].id);
    case K::all:
      return eval_on_log(*n.children[0], log, v, cache) &&
             eval_on_log(*n.children[1], log, v, cache);
    case K::either:
      return eval_on_log(*n.children[0], log, v, cache) ||
             eval_on_log(*n.children[1], log, v, cache);
    case K::not_:
      return !eval_on_log(*n.children[0], log, v, cache);
    default:
      return detail::matches_live(n, detail::view_of(log, v, log.activation(v)));
  }
}

} // namespace

// ---- OpView -----------------------------------------------------------------

std::string_view OpView::module() const {
  if (modules == nullptr || modules->empty()) return {};
  return modules->back().address;
}

int OpView::module_pass() const {
  if (modules == nullptr || modules->empty()) return 0;
  return modules->back().pass;
}

bool OpView::within(std::string_view address, int pass) const {
  if (modules == nullptr) return false;
  return std::any_of(modules->begin(), modules->end(), [&](const ModuleFrame& f) {
    return f.address == address && (pass <= 0 || f.pass == pass);
  });
}

std::int64_t OpView::dim() const {
  return value != nullptr && value->defined() ? value->dim() : -1;
}

const at::Tensor& OpView::tensor() const {
  static const at::Tensor undefined;
  return value != nullptr ? *value : undefined;
}

namespace detail {

bool needs_labels(const SelectorNode& n) {
  if (n.kind == SelectorNode::Kind::label || n.kind == SelectorNode::Kind::module) return true;
  return std::any_of(n.children.begin(), n.children.end(),
                     [](const Node& c) { return needs_labels(*c); });
}

bool matches_live(const SelectorNode& n, const OpView& op) {
  using K = SelectorNode::Kind;
  switch (n.kind) {
    case K::any:
      return true;
    case K::func:
      return name_matches(n.text, op.op_name, op.layer_type);
    case K::in_module:
      return op.within(n.text, n.number);
    case K::output_index:
      return op.output_index == n.number;
    case K::where:
      return n.predicate(op);
    case K::ids:
      return std::binary_search(n.ids.begin(), n.ids.end(), op.id);
    case K::all:
      return matches_live(*n.children[0], op) && matches_live(*n.children[1], op);
    case K::either:
      return matches_live(*n.children[0], op) || matches_live(*n.children[1], op);
    case K::not_:
      return !matches_live(*n.children[0], op);
    case K::label:
    case K::module:
      break;
  }
  TORCHLENS_CHECK(false, "the site ", describe_node(std::make_shared<SelectorNode>(n)),
                  " names final labels, which exist only in a reference log: resolve the spec "
                  "first (spec.resolve(reference), or LogOptions().intervene(spec, reference))");
  return false;
}

OpView view_of(const ModelLog& log, Vertex v, const at::Tensor& value) {
  const OpNode& n = log.graph()[v];
  OpView op;
  op.id = n.id;
  op.op_name = n.op_name;
  op.layer_type = n.layer_type;
  op.modules = &n.modules.get();
  op.output_index = n.output_index;
  op.value = &value;
  return op;
}

std::vector<std::size_t> select_on_log(const SelectorNode& node, const ModelLog& log) {
  std::map<const SelectorNode*, std::set<Vertex>> cache;
  std::set<std::size_t> ids;
  const ModelGraph& g = log.graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == NodeKind::output) continue; // its producer stands for it
    if (eval_on_log(node, log, v, cache)) ids.insert(g[v].id);
  }
  return {ids.begin(), ids.end()};
}

} // namespace detail

// ---- selectors --------------------------------------------------------------

bool LiveSelector::matches(const OpView& op) const {
  return detail::matches_live(*node_, op);
}
bool LiveSelector::portable() const {
  return portable_tree(*node_);
}
std::string LiveSelector::describe() const {
  return describe_node(node_);
}

std::vector<std::size_t> LabelSelector::resolve(const ModelLog& reference) const {
  return detail::select_on_log(*node_, reference);
}
bool LabelSelector::portable() const {
  return portable_tree(*node_);
}
std::string LabelSelector::describe() const {
  return describe_node(node_);
}

using K = SelectorNode::Kind;
LiveSelector operator&(const LiveSelector& a, const LiveSelector& b) {
  return LiveSelector(combine(K::all, a.node(), b.node()));
}
LiveSelector operator|(const LiveSelector& a, const LiveSelector& b) {
  return LiveSelector(combine(K::either, a.node(), b.node()));
}
LiveSelector operator!(const LiveSelector& a) {
  return LiveSelector(negate(a.node()));
}
LabelSelector operator&(const LabelSelector& a, const LabelSelector& b) {
  return LabelSelector(combine(K::all, a.node(), b.node()));
}
LabelSelector operator&(const LabelSelector& a, const LiveSelector& b) {
  return LabelSelector(combine(K::all, a.node(), b.node()));
}
LabelSelector operator&(const LiveSelector& a, const LabelSelector& b) {
  return LabelSelector(combine(K::all, a.node(), b.node()));
}
LabelSelector operator|(const LabelSelector& a, const LabelSelector& b) {
  return LabelSelector(combine(K::either, a.node(), b.node()));
}
LabelSelector operator|(const LabelSelector& a, const LiveSelector& b) {
  return LabelSelector(combine(K::either, a.node(), b.node()));
}
LabelSelector operator|(const LiveSelector& a, const LabelSelector& b) {
  return LabelSelector(combine(K::either, a.node(), b.node()));
}
LabelSelector operator!(const LabelSelector& a) {
  return LabelSelector(negate(a.node()));
}

std::string EdgeSelector::describe() const {
  std::string s = "edge(" + parent + " -> " + child;
  if (arg >= 0) s += ", arg " + std::to_string(arg);
  return s + ")";
}

std::vector<EdgeId> resolve_edges(const EdgeSelector& edge, const ModelLog& reference) {
  const ModelGraph& g = reference.graph();
  const Vertex parent = producer_of(g, reference.at(edge.parent).vertex());
  const Vertex child = reference.at(edge.child).vertex();
  std::vector<EdgeId> out;
  for (auto e : boost::make_iterator_range(boost::in_edges(child, g))) {
    if (boost::source(e, g) != parent || (edge.arg >= 0 && g[e].arg_pos != edge.arg)) continue;
    out.push_back(EdgeId{g[parent].id, g[child].id, g[e].arg_pos, g[e].list_index});
  }
  TORCHLENS_CHECK(!out.empty(), "no edge ", edge.describe(), ": ", g[child].label(),
                  " does not read ", g[parent].label(),
                  edge.arg >= 0 ? " through argument " + std::to_string(edge.arg) : std::string());
  return out;
}

std::string Site::describe() const {
  std::string s = std::visit([](const auto& sel) { return sel.describe(); }, selector_);
  if (region_) {
    s += ".at_index(" + std::to_string(region_->dim) + ", " + std::to_string(region_->index) + ")";
  }
  return s;
}

namespace sel {

LiveSelector any() {
  return LiveSelector(make(K::any));
}
LiveSelector func(std::string name) {
  TORCHLENS_CHECK(!name.empty(), "sel::func needs an op name or layer type");
  return LiveSelector(make(K::func, std::move(name)));
}
LiveSelector in_module(std::string address, int pass) {
  return LiveSelector(make(K::in_module, std::move(address), pass));
}
LiveSelector output_index(int index) {
  return LiveSelector(make(K::output_index, {}, index));
}
LiveSelector where(std::function<bool(const OpView&)> predicate, std::string description) {
  TORCHLENS_CHECK(static_cast<bool>(predicate), "sel::where needs a predicate");
  auto n = std::make_shared<SelectorNode>();
  n->kind = K::where;
  n->text = std::move(description);
  n->predicate = std::move(predicate);
  return LiveSelector(std::move(n));
}
LabelSelector label(std::string key) {
  return LabelSelector(make(K::label, std::move(key)));
}
LabelSelector module(std::string address) {
  return LabelSelector(make(K::module, std::move(address)));
}
LabelSelector ids(std::vector<std::size_t> ids) {
  auto n = std::make_shared<SelectorNode>();
  n->kind = K::ids;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  n->ids = std::move(ids);
  return LabelSelector(std::move(n));
}
EdgeSelector edge(std::string parent, std::string child, int arg) {
  return EdgeSelector{std::move(parent), std::move(child), arg, {}};
}

} // namespace sel

} // namespace torchlens
