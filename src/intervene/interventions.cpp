// The intervention spec (interventions.hpp): entries, resolution on a
// reference log, compilation for the engines, and persistence as JSON with
// `.npy` sidecars (docs/interventions.md).

#include "compiled.hpp"
#include "lean.hpp"

#include <torchlens/capture/options.hpp>
#include <torchlens/intervene/engines.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/log/model_log.hpp>

#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace torchlens {

namespace fs = std::filesystem;
namespace pt = boost::property_tree;
using detail::SelectorNode;

namespace {

/// Labels of one reference log, for actions that name other sites.
class LogResolver : public LabelResolver {
 public:
  explicit LogResolver(const ModelLog& log) : log_(log) {}
  std::size_t id_of(const std::string& key) override {
    const auto ids = sel::label(key).resolve(log_);
    TORCHLENS_CHECK(ids.size() == 1, "'", key, "' selects ", ids.size(),
                    " layer passes; an action reads exactly one (add `:pass`)");
    return ids.front();
  }

 private:
  const ModelLog& log_;
};

class NoLabels : public LabelResolver {
 public:
  std::size_t id_of(const std::string& key) override {
    TORCHLENS_CHECK(false, "an action reads the layer '", key,
                    "' by label, which exists only in a reference log: resolve the spec first "
                    "(spec.resolve(reference), or LogOptions().intervene(spec, reference))");
    return 0;
  }
};

} // namespace

// ---- the spec ---------------------------------------------------------------

Interventions& Interventions::at(Site site, Action action) {
  entries_.push_back(Entry{std::move(site), std::move(action)});
  lean_.reset(); // the plan covers the entries it was made for
  return *this;
}

bool Interventions::needs_reference() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const Entry& e) {
    return e.site.needs_reference() || !e.action.is_resolved();
  });
}

bool Interventions::portable() const {
  return std::all_of(entries_.begin(), entries_.end(), [](const Entry& e) {
    const bool site_ok = std::visit(
        [](const auto& s) {
          if constexpr (std::is_same_v<std::decay_t<decltype(s)>, EdgeSelector>) {
            return true;
          } else {
            return s.portable();
          }
        },
        e.site.selector());
    return site_ok && e.action.portable();
  });
}

Interventions Interventions::resolve(const ModelLog& reference) const {
  Interventions out;
  LogResolver resolver(reference);
  for (const Entry& e : entries_) {
    Site site = std::visit(
        [&](const auto& s) -> Site {
          using S = std::decay_t<decltype(s)>;
          if constexpr (std::is_same_v<S, LiveSelector>) {
            return s;
          } else if constexpr (std::is_same_v<S, LabelSelector>) {
            const auto ids = s.resolve(reference);
            TORCHLENS_CHECK(!ids.empty(), "the site ", s.describe(), " selects no op of ",
                            reference.model_name());
            return LiveSelector(sel::ids(ids).node());
          } else {
            EdgeSelector edge = s;
            edge.resolved = resolve_edges(s, reference);
            return edge;
          }
        },
        e.site.selector());
    if (e.site.region()) site = site.at_index(e.site.region()->dim, e.site.region()->index);
    out.entries_.push_back(Entry{std::move(site), e.action.resolved(resolver)});
  }
  out.lean_ = detail::make_lean_plan(*this, out, reference);
  return out;
}

std::string Interventions::describe() const {
  std::ostringstream os;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    os << i + 1 << ". " << entries_[i].site.describe() << " -> " << entries_[i].action.describe()
       << "\n";
  }
  return os.str();
}

// ---- compiled for the engines -----------------------------------------------

namespace detail {

CompiledSpec::CompiledSpec(const Interventions& spec) {
  NoLabels none;
  for (const auto& e : spec.entries()) {
    Entry c;
    c.region = e.site.region();
    const Action action = e.action.resolved(none);
    c.fn = action.function();
    c.description = action.describe();
    reads_.insert(reads_.end(), action.reads().begin(), action.reads().end());
    if (const auto* edge = std::get_if<EdgeSelector>(&e.site.selector())) {
      TORCHLENS_CHECK(!edge->resolved.empty(), "the site ", edge->describe(),
                      " is an edge of a reference log: resolve the spec first "
                      "(spec.resolve(reference), or LogOptions().intervene(spec, reference))");
      c.edges = edge->resolved;
      for (const auto& id : c.edges) edge_children_.push_back(id.child);
      edges_.push_back(std::move(c));
      has_edges_ = true;
    } else if (const auto* live = std::get_if<LiveSelector>(&e.site.selector())) {
      c.selector = live->node();
      outputs_.push_back(std::move(c));
    } else {
      const auto& label = std::get<LabelSelector>(e.site.selector());
      TORCHLENS_CHECK(
          !needs_labels(*label.node()), "the site ", label.describe(),
          " names final labels, which exist only in a reference log: resolve the spec "
          "first (spec.resolve(reference), or LogOptions().intervene(spec, reference))");
      c.selector = label.node();
      outputs_.push_back(std::move(c));
    }
  }
  std::sort(edge_children_.begin(), edge_children_.end());
  std::sort(reads_.begin(), reads_.end());
  reads_.erase(std::unique(reads_.begin(), reads_.end()), reads_.end());
}

bool CompiledSpec::edge_into(std::size_t child) const {
  return std::binary_search(edge_children_.begin(), edge_children_.end(), child);
}

at::Tensor CompiledSpec::run(const Entry& e, const at::Tensor& value, HookContext& ctx) const {
  if (!e.region) {
    ctx.restrict = [](const at::Tensor& t) { return t; };
    at::Tensor out = e.fn(value, ctx);
    TORCHLENS_CHECK(out.defined() && out.sizes() == value.sizes() &&
                        out.scalar_type() == value.scalar_type() && out.device() == value.device(),
                    "the intervention ", e.description, " at op ", ctx.id, " (", ctx.op_name,
                    ") returned ", out.defined() ? out.sizes() : c10::IntArrayRef{}, " ",
                    out.defined() ? out.scalar_type() : c10::ScalarType::Undefined,
                    " where the op produced ", value.sizes(), " ", value.scalar_type(),
                    ": an intervention keeps the shape, dtype and device");
    return out;
  }
  const Region r = *e.region;
  TORCHLENS_CHECK(value.dim() > 0 && r.dim >= -value.dim() && r.dim < value.dim() &&
                      r.index >= -value.size(r.dim < 0 ? r.dim + value.dim() : r.dim) &&
                      r.index < value.size(r.dim < 0 ? r.dim + value.dim() : r.dim),
                  "the site region at_index(", r.dim, ", ", r.index, ") is outside the value ",
                  value.sizes(), " of op ", ctx.id, " (", ctx.op_name, ")");
  ctx.restrict = [r](const at::Tensor& t) { return t.select(r.dim, r.index); };
  const at::Tensor part = value.select(r.dim, r.index);
  const at::Tensor changed = e.fn(part, ctx);
  TORCHLENS_CHECK(changed.defined() && changed.sizes() == part.sizes() &&
                      changed.scalar_type() == part.scalar_type(),
                  "the intervention ", e.description, " at op ", ctx.id, " (", ctx.op_name,
                  ") returned ", changed.defined() ? changed.sizes() : c10::IntArrayRef{},
                  " for a region of shape ", part.sizes());
  at::Tensor out = value.clone();
  out.select(r.dim, r.index).copy_(changed);
  return out;
}

at::Tensor CompiledSpec::apply_output(const OpView& op, std::string_view label,
                                      const ValueOf& value_of,
                                      std::vector<std::string>& applied) const {
  at::Tensor value = op.tensor();
  OpView current = op;
  current.value = &value;
  for (const Entry& e : outputs_) {
    if (!matches_live(*e.selector, current)) continue;
    TORCHLENS_CHECK(value.defined(), "the site of ", e.description, " selects op ", op.id, " (",
                    op.op_name, label.empty() ? "" : ", ", label,
                    "), whose value the reference log did not save: replay needs every activation");
    HookContext ctx;
    ctx.id = op.id;
    ctx.op_name = op.op_name;
    ctx.label = label;
    ctx.value_of = value_of;
    value = run(e, value, ctx);
    applied.push_back(e.description);
  }
  return value;
}

at::Tensor CompiledSpec::apply_edge(const EdgeId& edge, std::string_view op_name,
                                    std::string_view label, const at::Tensor& value,
                                    const ValueOf& value_of,
                                    std::vector<std::string>& applied) const {
  at::Tensor out = value;
  for (const Entry& e : edges_) {
    if (std::find(e.edges.begin(), e.edges.end(), edge) == e.edges.end()) continue;
    HookContext ctx;
    ctx.id = edge.parent;
    ctx.op_name = op_name;
    ctx.label = label;
    ctx.value_of = value_of;
    out = run(e, out, ctx);
    applied.push_back(e.description + " on the edge from op " + std::to_string(edge.parent));
  }
  return out;
}

// ---- engines' shared helpers ------------------------------------------------

LogOptions rerun_options(const ModelLog& reference, const Interventions& spec) {
  LogOptions options = reference.options();
  options.seed(reference.info().random_seed);
  options.intervene(spec, reference);
  return options;
}

std::string graph_difference(const ModelLog& reference, const ModelLog& log) {
  const ModelGraph& a = reference.graph();
  const ModelGraph& b = log.graph();
  const std::size_t n = std::min(boost::num_vertices(a), boost::num_vertices(b));
  for (std::size_t v = 0; v < n; ++v) {
    if (a[v].label() != b[v].label() || a[v].op_name != b[v].op_name || a[v].shape != b[v].shape) {
      return "the graph differs from the reference from " + a[v].label() + " (" + a[v].op_name +
             ") on: this run has " + b[v].label() + " (" + b[v].op_name + ")";
    }
  }
  if (boost::num_vertices(a) != boost::num_vertices(b)) {
    return "the graph has " + std::to_string(boost::num_vertices(b)) +
           " layer passes where the reference has " + std::to_string(boost::num_vertices(a));
  }
  return {};
}

} // namespace detail

// ---- LogOptions ---------------------------------------------------------------

LogOptions& LogOptions::intervene(const Interventions& spec) {
  TORCHLENS_CHECK(spec.resolved(),
                  "this spec names final labels, module outputs or edges, which exist only in a "
                  "reference log: use LogOptions().intervene(spec, reference)");
  interventions_ = std::make_shared<const Interventions>(spec);
  return *this;
}

LogOptions& LogOptions::intervene(const Interventions& spec, const ModelLog& reference) {
  interventions_ = std::make_shared<const Interventions>(spec.resolve(reference));
  return *this;
}

// ---- persistence ------------------------------------------------------------

namespace {

constexpr int kSpecVersion = 1;

void write_node(std::ostream& os, const SelectorNode& n) {
  using K = SelectorNode::Kind;
  static const char* names[] = {"any",    "func", "in_module", "output_index", "where", "label",
                                "module", "ids",  "and",       "or",           "not"};
  os << "{\"kind\": \"" << names[static_cast<int>(n.kind)] << "\"";
  if (!n.text.empty()) os << ", \"text\": " << io::json_string(n.text);
  if (n.kind == K::in_module || n.kind == K::output_index) os << ", \"number\": " << n.number;
  if (n.kind == K::ids) {
    os << ", \"ids\": [";
    for (std::size_t i = 0; i < n.ids.size(); ++i) os << (i ? ", " : "") << n.ids[i];
    os << "]";
  }
  if (!n.children.empty()) {
    os << ", \"children\": [";
    for (std::size_t i = 0; i < n.children.size(); ++i) {
      if (i) os << ", ";
      write_node(os, *n.children[i]);
    }
    os << "]";
  }
  os << "}";
}

std::shared_ptr<const SelectorNode> read_node(const pt::ptree& t, int depth, bool& labels) {
  using K = SelectorNode::Kind;
  TORCHLENS_CHECK(depth < 64, "the spec's selectors are nested deeper than 64 levels");
  static const std::map<std::string, K> kinds = {{"any", K::any},
                                                 {"func", K::func},
                                                 {"in_module", K::in_module},
                                                 {"output_index", K::output_index},
                                                 {"label", K::label},
                                                 {"module", K::module},
                                                 {"ids", K::ids},
                                                 {"and", K::all},
                                                 {"or", K::either},
                                                 {"not", K::not_}};
  const std::string kind = t.get<std::string>("kind");
  auto it = kinds.find(kind);
  TORCHLENS_CHECK(it != kinds.end(), "the spec has a selector of unknown kind '", kind, "'",
                  kind == "where" ? " (a predicate is code: it is never saved)" : "");
  auto n = std::make_shared<SelectorNode>();
  n->kind = it->second;
  n->text = t.get<std::string>("text", "");
  n->number = t.get<int>("number", 0);
  labels = labels || n->kind == K::label || n->kind == K::module;
  if (auto ids = t.get_child_optional("ids")) {
    for (const auto& [k, v] : *ids) n->ids.push_back(v.get_value<std::size_t>());
    std::sort(n->ids.begin(), n->ids.end());
  }
  if (auto children = t.get_child_optional("children")) {
    for (const auto& [k, v] : *children) n->children.push_back(read_node(v, depth + 1, labels));
  }
  const std::size_t want = (n->kind == K::all || n->kind == K::either) ? 2
                           : n->kind == K::not_                        ? 1
                                                                       : 0;
  TORCHLENS_CHECK(n->children.size() == want, "the spec's '", kind, "' selector has ",
                  n->children.size(), " operands instead of ", want);
  TORCHLENS_CHECK(n->kind != K::func || !n->text.empty(),
                  "the spec has a func selector without a name");
  return n;
}

/// A sidecar named in a spec: a plain file name in the spec's folder, a
/// regular file (not a link), or the load is refused.
fs::path sidecar(const fs::path& folder, const std::string& name) {
  const bool plain = !name.empty() && name.find('/') == std::string::npos &&
                     name.find('\\') == std::string::npos && name != "." && name != ".." &&
                     name.front() != '.';
  TORCHLENS_CHECK(plain, "the spec names the tensor file '", name,
                  "', which is not a plain file name in the spec's folder: refused");
  const fs::path p = folder / name;
  const auto status = fs::symlink_status(p);
  TORCHLENS_CHECK(fs::is_regular_file(status), "the spec's tensor file ", p.string(),
                  fs::exists(status) ? " is not a regular file (a link?): refused" : " is missing");
  return p;
}

} // namespace

void Interventions::save(const std::string& path) const {
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    TORCHLENS_CHECK(e.action.portable(), "entry ", i + 1, " (", e.action.describe(),
                    ") is not portable: user code and donor logs cannot be saved; register the "
                    "action by name (register_action) to save it");
    if (const auto* live = std::get_if<LiveSelector>(&e.site.selector())) {
      TORCHLENS_CHECK(live->portable(), "entry ", i + 1, " selects with a predicate (",
                      live->describe(), "), which is code and cannot be saved");
    }
  }
  const fs::path file(path);
  const fs::path folder = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const std::string stem = file.stem().string();
  std::ostringstream os;
  os << "{\n  \"torchlens_interventions\": " << kSpecVersion << ",\n  \"entries\": [";
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    os << (i ? ",\n" : "\n") << "    {\"site\": ";
    if (const auto* edge = std::get_if<EdgeSelector>(&e.site.selector())) {
      os << "{\"edge\": {\"parent\": " << io::json_string(edge->parent)
         << ", \"child\": " << io::json_string(edge->child) << ", \"arg\": " << edge->arg << "}}";
    } else {
      const bool label = e.site.selector().index() == 1;
      os << "{\"" << (label ? "label" : "live") << "\": ";
      write_node(os, label ? *std::get<LabelSelector>(e.site.selector()).node()
                           : *std::get<LiveSelector>(e.site.selector()).node());
      os << "}";
    }
    if (const auto& r = e.site.region()) {
      os << ", \"region\": {\"dim\": " << r->dim << ", \"index\": " << r->index << "}";
    }
    os << ",\n     \"action\": {\"name\": " << io::json_string(e.action.name())
       << ", \"params\": {";
    bool first = true;
    for (const auto& [k, v] : e.action.params) {
      os << (first ? "" : ", ") << io::json_string(k) << ": " << io::json_string(v);
      first = false;
    }
    os << "}, \"tensors\": {";
    first = true;
    for (const auto& [k, t] : e.action.tensors) {
      const std::string name = stem + "." + std::to_string(i + 1) + "." + k + ".npy";
      io::write_npy((folder / name).string(), t.detach().cpu().contiguous());
      os << (first ? "" : ", ") << io::json_string(k) << ": " << io::json_string(name);
      first = false;
    }
    os << "}}}";
  }
  os << "\n  ]\n}\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TORCHLENS_CHECK(out.good(), "cannot write the spec to ", path);
  out << os.str();
  out.close();
  TORCHLENS_CHECK(out.good(), "writing the spec to ", path, " failed");
}

Interventions Interventions::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCHLENS_CHECK(in.good(), "cannot open the spec ", path);
  const fs::path folder =
      fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  pt::ptree tree;
  try {
    pt::read_json(in, tree);
  } catch (const pt::json_parser_error& e) {
    TORCHLENS_CHECK(false, path, " is not a JSON spec: ", e.message(), " (line ", e.line(), ")");
  }
  Interventions spec;
  try {
    TORCHLENS_CHECK(tree.get<int>("torchlens_interventions", 0) == kSpecVersion, path,
                    " is not a torchlens intervention spec (version ", kSpecVersion, ")");
    for (const auto& [unused, entry] : tree.get_child("entries")) {
      const pt::ptree& site = entry.get_child("site");
      bool labels = false;
      std::optional<Site> s;
      if (auto edge = site.get_child_optional("edge")) {
        s = Site(sel::edge(edge->get<std::string>("parent"), edge->get<std::string>("child"),
                           edge->get<int>("arg", -1)));
      } else if (auto label = site.get_child_optional("label")) {
        s = Site(LabelSelector(read_node(*label, 0, labels)));
      } else {
        auto live = site.get_child("live");
        auto node = read_node(live, 0, labels);
        TORCHLENS_CHECK(!labels, "a live site of the spec names labels");
        s = Site(LiveSelector(std::move(node)));
      }
      if (auto region = entry.get_child_optional("region")) {
        s = s->at_index(region->get<std::int64_t>("dim"), region->get<std::int64_t>("index"));
      }
      const pt::ptree& action = entry.get_child("action");
      std::map<std::string, std::string> params;
      std::map<std::string, at::Tensor> tensors;
      for (const auto& [k, v] : action.get_child("params")) params[k] = v.get_value<std::string>();
      for (const auto& [k, v] : action.get_child("tensors")) {
        tensors[k] = io::read_npy(sidecar(folder, v.get_value<std::string>()).string());
      }
      spec.at(std::move(*s), make_action(action.get<std::string>("name"), params, tensors));
    }
  } catch (const pt::ptree_error& e) {
    TORCHLENS_CHECK(false, path, " is not a valid spec: ", e.what());
  }
  return spec;
}

} // namespace torchlens
