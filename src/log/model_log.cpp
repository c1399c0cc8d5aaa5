// The model log: lookup keys (TorchLens §3), selection for saving, totals and
// the printed summary.

#include <torchlens/log/model_log.hpp>

#include "../capture/memory_pool.hpp"
#include "../capture/tensor_bytes.hpp"

#include <torchlens/torch_error.hpp>

#include <torchlens/detail/text.hpp>
#include <torchlens/graph/query.hpp>

#include <c10/util/Exception.h>

#include <range/v3/algorithm/count_if.hpp>
#include <range/v3/algorithm/sort.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/join.hpp>
#include <range/v3/view/map.hpp>
#include <range/v3/view/remove_if.hpp>
#include <range/v3/view/take.hpp>
#include <range/v3/view/transform.hpp>

#include <algorithm>
#include <cctype>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

namespace torchlens {

// ---------------------------------------------------------------------------
// helpers

std::string layer_type_of(std::string_view op_name) {
  if (const auto colon = op_name.rfind("::"); colon != std::string_view::npos) {
    op_name = op_name.substr(colon + 2);
  }
  // torch.fft.rfft2, torch.linalg.slogdet, torch.special.expit are ATen's
  // fft_rfft2, linalg_slogdet, special_expit; TorchLens names them as Python
  // does in their namespace
  for (std::string_view ns : {"fft_", "linalg_", "special_"}) {
    if (op_name.size() > ns.size() && op_name.starts_with(ns)) {
      op_name.remove_prefix(ns.size());
      break;
    }
  }
  std::string out;
  out.reserve(op_name.size());
  for (char c : op_name) {
    if (c != '_') out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

SaveSpec SaveSpec::parse(const std::string& text) {
  if (text == "all") return all();
  if (text == "none" || text.empty()) return none();
  std::vector<std::string> keys;
  std::string cur;
  for (char c : text) {
    if (c == ',') {
      if (!cur.empty()) keys.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) keys.push_back(cur);
  return SaveSpec::keys(std::move(keys));
}

namespace {

/// The vertices whose node satisfies `pred`, in vertex (creation) order.
template <class Pred>
std::vector<Vertex> vertices_where(const ModelGraph& g, Pred pred) {
  return ranges::views::iota(Vertex{0}, boost::num_vertices(g)) |
         ranges::views::filter([&](Vertex v) { return pred(g[v]); }) | ranges::to<std::vector>();
}

/// `layer1.0` from the module-output key `layer1.0:2`.
std::string_view address_of(std::string_view module_pass_key) {
  return module_pass_key.substr(0, module_pass_key.rfind(':'));
}

/// `a, b, c` for the first `n` strings of a range.
template <class Range>
std::string first_joined(Range&& strings, std::size_t n) {
  return strings | ranges::views::take(n) | ranges::views::join(std::string_view(", ")) |
         ranges::to<std::string>();
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

bool parse_int(std::string_view s, std::int64_t& out) {
  if (s.empty()) return false;
  std::size_t i = (s[0] == '-') ? 1 : 0;
  if (i == s.size()) return false;
  for (std::size_t j = i; j < s.size(); ++j) {
    if (!std::isdigit(static_cast<unsigned char>(s[j]))) return false;
  }
  out = std::stoll(std::string(s));
  return true;
}

} // namespace

// ---------------------------------------------------------------------------
// LayerView

const OpNode& LayerView::node() const {
  return log_->graph()[v_];
}

bool LayerView::has_activation() const {
  return log_->activation(v_).defined();
}

const at::Tensor& LayerView::activation() const {
  const at::Tensor& t = log_->activation(v_);
  TORCHLENS_CHECK(t.defined(), "layer ", node().label(),
                  " has no saved activation (save it with LogOptions().save({\"", node().label(),
                  "\"}))");
  return t;
}

std::vector<std::string> LayerView::parents() const {
  const auto& g = log_->graph();
  std::vector<std::pair<std::pair<int, int>, std::string>> in;
  for (auto e : boost::make_iterator_range(boost::in_edges(v_, g))) {
    in.push_back({{g[e].arg_pos, g[e].list_index}, g[boost::source(e, g)].label()});
  }
  std::stable_sort(in.begin(), in.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (auto& p : in) out.push_back(std::move(p.second));
  return out;
}

std::vector<std::string> LayerView::children() const {
  const auto& g = log_->graph();
  std::vector<std::pair<Vertex, std::string>> out_v;
  for (auto e : boost::make_iterator_range(boost::out_edges(v_, g))) {
    out_v.push_back({boost::target(e, g), g[boost::target(e, g)].label()});
  }
  std::stable_sort(out_v.begin(), out_v.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (auto& p : out_v) out.push_back(std::move(p.second));
  return out;
}

std::string LayerView::module() const {
  const auto& m = node().modules;
  return m.empty() ? std::string() : m.back().address.str();
}

std::vector<std::string> LayerView::module_outputs() const {
  std::vector<std::string> out;
  for (const auto& f : modules_exited(node())) out.push_back(module_pass_key(f));
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------
// ModelLog

ModelLog::ModelLog(const ModelGraph& graph, std::vector<at::Tensor> activations, LogOptions options)
    : ModelLog(ModelGraph(graph), std::move(activations), std::move(options)) {}

ModelLog::ModelLog(ModelGraph&& graph, std::vector<at::Tensor> activations, LogOptions options)
    : activations_(std::move(activations)), options_(std::move(options)) {
  graph_.swap(graph);
  // A graph grown by doubling (a model's first capture: later ones reserve
  // what the previous made, src/capture/recorder.cpp) can have up to half of
  // its arrays unused for the log's lifetime: trimmed when more than an
  // eighth is (Digraph::shrink_if_loose). Trimming moves every vertex (their
  // members move without throwing), as costly as a sweep.
  graph_.shrink_if_loose();
  set_activations(std::move(activations_));
  detail::shrink_if_loose(activations_);
}

// Member-wise; the graph and its key index are swapped together.
ModelLog::ModelLog(ModelLog&& other) noexcept
    : activations_(std::move(other.activations_)),
      options_(std::move(other.options_)),
      replay_(std::move(other.replay_)),
      gradients_(std::move(other.gradients_)) {
  graph_.swap(other.graph_);
  std::swap(lookup_, other.lookup_); // each index stays with its graph
}

ModelLog ModelLog::fork() const {
  ModelLog copy(graph_, activations_, options_);
  copy.replay_ = replay_;
  return copy;
}
ModelLog& ModelLog::operator=(ModelLog&& other) noexcept {
  graph_.swap(other.graph_);
  activations_ = std::move(other.activations_);
  options_ = std::move(other.options_);
  std::swap(lookup_, other.lookup_); // each index stays with its graph
  replay_ = std::move(other.replay_);
  gradients_ = std::move(other.gradients_);
  return *this;
}
ModelLog::~ModelLog() {
  // A large log's chunks are freed with glibc's fastbins off (capture/memory_pool.cpp):
  // the graph and the activations go here, inside the scope, not after the body.
  const detail::LargeTeardown teardown(options_.reuse_memory() &&
                                       boost::num_vertices(graph_) >= detail::kLongCapture);
  ModelGraph freed;
  freed.swap(graph_);
  std::vector<at::Tensor>().swap(activations_);
  lookup_.reset();
  replay_.reset();
}

const at::Tensor& ModelLog::activation(Vertex v) const {
  static const at::Tensor undefined;
  const OpNode& n = graph_[v];
  if (n.id < activations_.size() && activations_[n.id].defined()) return activations_[n.id];
  // an output node is its producer's tensor: saved with it when everything is
  // saved; with a key list only when the output itself was selected
  if (n.kind == NodeKind::output && options_.save().kind() == SaveSpec::Kind::all) {
    for (auto e : boost::make_iterator_range(boost::in_edges(v, graph_))) {
      return activation(boost::source(e, graph_));
    }
  }
  return undefined;
}

void ModelLog::set_activations(std::vector<at::Tensor> by_id) {
  activations_ = std::move(by_id);
  // nothing saved (metadata only): no vertex has a value, an output node's
  // being its producer's, and none is looked up
  const bool none = std::none_of(activations_.begin(), activations_.end(),
                                 [](const at::Tensor& t) { return t.defined(); });
  if (!none) activations_.resize(std::max(activations_.size(), info().next_id));
  bool any = false;
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    const bool saved = !none && activation(v).defined();
    graph_[v].has_saved_activation = saved;
    any = any || saved;
  }
  // a metadata-only log keeps no slots (8 bytes per op): readers of
  // activations_by_id() check an id against its size
  if (!any) activations_ = {};
}

const ModelLog::Lookup& ModelLog::lookup() const {
  std::call_once(lookup_->built, [this] { build_lookup(*lookup_); });
  return *lookup_;
}

void ModelLog::build_lookup(Lookup& index) const {
  auto& keys = index.keys;
  auto& outputs = index.module_outputs;
  auto& ordered = index.ordered_keys;
  auto add = [&](const std::string& key, Vertex v) {
    if (key.empty()) return;
    if (keys.emplace(key, v).second) ordered.push_back(key);
  };
  // module outputs: the values returned from each module pass
  auto module_pass_count = module_pass_counts(graph_);
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    for (const auto& f : modules_exited(graph_[v])) outputs[module_pass_key(f)].push_back(v);
  }
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    const OpNode& node = graph_[v];
    add(node.label(), v);
    add(node.label_short(), v);
    if (node.num_passes == 1) {
      add(std::string(node.label_no_pass()) + ":1", v);
      add(std::string(node.label_short_no_pass()) + ":1", v);
    }
    if (!node.io_address.empty()) {
      if (node.kind == NodeKind::buffer) {
        add(node.io_address + ":" + std::to_string(std::max(1, node.buffer_pass)), v);
      } else {
        add(node.io_address, v);
      }
    }
  }
  // bare buffer addresses for buffers read once
  std::map<std::string, std::vector<Vertex>> buffers;
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    if (graph_[v].kind == NodeKind::buffer) buffers[graph_[v].io_address].push_back(v);
  }
  for (const auto& [address, vs] : buffers) {
    if (vs.size() == 1) add(address, vs.front());
  }
  for (const auto& [key, vs] : outputs) {
    add(key, vs.back());
    const std::string address = key.substr(0, key.rfind(':'));
    if (module_pass_count[address] == 1) add(address, vs.back());
  }
  // Ordinals as text (`5`, `-3`) are keys too, after all the others: a module
  // named `1` (a Sequential child) keeps its key, as in TorchLens where strings
  // name modules; log[1] is the ordinal. They are not stored (two strings per
  // vertex): ordinal_key() recognises them where the map has no such key.
}

std::optional<Vertex> ModelLog::ordinal_key(const std::string& key) const {
  std::int64_t ordinal = 0;
  const auto n = static_cast<std::int64_t>(size());
  if (!parse_int(key, ordinal) || ordinal < -n || ordinal >= n) return std::nullopt;
  if (std::to_string(ordinal) != key) return std::nullopt; // `05`, `+5`: not a key as such
  return static_cast<Vertex>(ordinal < 0 ? ordinal + n : ordinal);
}

std::vector<std::string> ModelLog::keys_of(Vertex v) const {
  std::vector<std::string> out;
  const Lookup& index = lookup();
  for (const auto& k : index.ordered_keys) {
    if (index.keys.at(k) == v) out.push_back(k);
  }
  const auto n = static_cast<std::int64_t>(size());
  for (const std::int64_t ordinal :
       {static_cast<std::int64_t>(v), static_cast<std::int64_t>(v) - n}) {
    std::string k = std::to_string(ordinal);
    if (index.keys.count(k) == 0) out.push_back(std::move(k));
  }
  return out;
}

LayerView ModelLog::operator[](std::int64_t ordinal) const {
  const auto n = static_cast<std::int64_t>(size());
  TORCHLENS_CHECK_KEY(ordinal >= -n && ordinal < n, "layer index ", ordinal,
                      " is out of range for a log of ", n, " layers");
  return LayerView(*this, static_cast<Vertex>(ordinal < 0 ? ordinal + n : ordinal));
}

bool ModelLog::contains(std::string_view key_view) const {
  const std::string key(key_view);
  return lookup().keys.count(key) != 0 || ordinal_key(key).has_value();
}

LayerView ModelLog::at(std::string_view key) const {
  return LayerView(*this, resolve_or_throw(key));
}

Vertex ModelLog::resolve_or_throw(std::string_view key_view) const {
  const std::string key(key_view);
  const Lookup& index = lookup();
  if (auto it = index.keys.find(key); it != index.keys.end()) return it->second;
  std::int64_t ordinal = 0;
  if (parse_int(key, ordinal)) return (*this)[ordinal].vertex();

  // a layer or module with several passes, named without its pass
  const auto named = [&](const OpNode& n) {
    return n.label_no_pass() == key || n.label_short_no_pass() == key;
  };
  if (const auto passes = vertices_where(graph_, named); !passes.empty()) {
    TORCHLENS_CHECK_KEY(false, "layer ", key, " has ", passes.size(), " passes; specify one, e.g. ",
                        key, ":2");
  }
  const auto module_passes =
      ranges::count_if(index.module_outputs | ranges::views::keys,
                       [&](const std::string& k) { return address_of(k) == key; });
  if (module_passes > 1) {
    TORCHLENS_CHECK_KEY(false, "module ", key, " ran ", module_passes,
                        " times; specify a pass, e.g. ", key, ":2");
  }
  // a unique substring of one label
  const auto matches = vertices_where(
      graph_, [&](const OpNode& n) { return n.label().find(key) != std::string::npos; });
  if (matches.size() == 1) return matches.front();
  if (matches.size() > 1) {
    std::vector<std::string> labels;
    for (Vertex v : matches) labels.push_back(graph_[v].label());
    TORCHLENS_CHECK_KEY(false, "key '", key, "' is ambiguous: it matches ", matches.size(),
                        " layers (", first_joined(labels, 8), matches.size() > 8 ? ", ..." : "",
                        ")");
  }
  // nothing: suggest the nearest keys (ordinals aside)
  const auto is_ordinal = [](const std::string& k) {
    return !k.empty() && (std::isdigit(static_cast<unsigned char>(k[0])) || k[0] == '-');
  };
  auto near = index.ordered_keys | ranges::views::remove_if(is_ordinal) |
              ranges::views::transform([&](const std::string& k) {
                return std::pair<std::size_t, std::string>(edit_distance(key, k), k);
              }) |
              ranges::to<std::vector>();
  ranges::sort(near);
  const std::string suggestions = first_joined(near | ranges::views::values, 3);
  TORCHLENS_CHECK_KEY(false, "no layer matches '", key, "'",
                      near.empty() ? std::string() : "; did you mean: " + suggestions + "?");
  return 0; // unreachable
}

std::vector<Vertex> ModelLog::select(std::string_view key_view) const {
  const std::string key(key_view);
  std::vector<Vertex> out;
  const Lookup& index = lookup();
  if (auto it = index.keys.find(key); it != index.keys.end()) return {it->second};
  std::int64_t ordinal = 0;
  if (parse_int(key, ordinal)) return {(*this)[ordinal].vertex()};
  out = vertices_where(graph_, [&](const OpNode& n) {
    return n.label_no_pass() == key || n.label_short_no_pass() == key;
  });
  if (!out.empty()) return out;
  for (const auto& [k, vs] : index.module_outputs) {
    if (address_of(k) == key) out.push_back(vs.back());
  }
  if (!out.empty()) {
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string lower = key;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  out = vertices_where(graph_,
                       [&](const OpNode& n) { return n.label().find(lower) != std::string::npos; });
  if (!out.empty()) return out;
  resolve_or_throw(key); // throws with suggestions
  return out;
}

ModelTotals ModelLog::totals() const {
  const GraphTotals g = graph_totals(graph_);
  ModelTotals t;
  t.num_tensors = g.num_tensors;
  t.tensor_bytes = g.tensor_bytes;
  t.num_param_tensors = g.num_param_tensors;
  t.num_params = g.num_params;
  t.param_bytes = g.param_bytes;
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    if (graph_[v].kind == NodeKind::output) continue; // the producer already counts
    const at::Tensor& a = activation(v);
    if (a.defined()) {
      ++t.num_saved;
      t.saved_bytes += detail::tensor_bytes(a);
    }
  }
  return t;
}

std::vector<Vertex> ModelLog::saved_layers() const {
  std::vector<Vertex> out;
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    if (activation(v).defined()) out.push_back(v);
  }
  return out;
}

std::ostream& operator<<(std::ostream& os, const ModelLog& log) {
  const GraphInfo& info = log.info();
  const ModelTotals t = log.totals();
  const auto& g = log.graph();
  int buffers = 0;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    buffers += g[v].kind == NodeKind::buffer ? 1 : 0;
  }
  os << "Log of " << info.model_name << " forward pass:\n";
  os << "\tRandom seed: " << info.random_seed << "\n";
  os << std::fixed << std::setprecision(2);
  os << "\tTime elapsed: " << info.forward_time_ms << " ms (" << info.logging_time_ms
     << " ms spent logging)\n";
  os << "\tStructure:\n";
  if (info.is_recurrent) {
    os << "\t\t- recurrent (at most " << info.max_recurrent_loops << " loops)\n";
  } else {
    os << "\t\t- purely feedforward, no recurrence\n";
  }
  os << "\t\t- " << (info.is_branching ? "with branching" : "no branching") << "\n";
  os << "\t\t- "
     << (info.has_conditional ? "with conditional (if-then) branching"
                              : "no conditional (if-then) branching")
     << "\n";
  os << "\t\t- " << buffers << " buffer layers\n";
  os << "\t\t- " << info.modules.size() << " total modules\n";
  os << "\tTensor info:\n";
  os << "\t\t- " << t.num_tensors << " total tensors (" << detail::size_text(t.tensor_bytes)
     << ") computed in forward pass.\n";
  os << "\t\t- " << t.num_saved << " tensors (" << detail::size_text(t.saved_bytes)
     << ") with saved activations.\n";
  os << "\tParameters: " << t.num_param_tensors << " parameter tensors (" << t.num_params
     << " params total; " << detail::size_text(t.param_bytes) << ").\n";
  if (!info.modules.empty()) {
    const bool any_inferred = std::any_of(info.modules.begin(), info.modules.end(),
                                          [](const ModuleInfo& m) { return !m.exact; });
    os << "\tModule hierarchy" << (any_inferred ? " (~ = calls inferred, not observed)" : "")
       << ":\n";
    for (const auto& m : info.modules) {
      const auto depth = static_cast<int>(std::count(m.address.begin(), m.address.end(), '.'));
      os << "\t\t" << std::string(static_cast<std::size_t>(depth) * 2, ' ') << m.address << " ("
         << m.type << (m.num_passes > 1 ? ", " + std::to_string(m.num_passes) + " passes" : "")
         << ")" << (m.exact ? "" : " ~") << "\n";
    }
  }
  os << "\tLayers (* = saved activation):\n";
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    os << "\t\t(" << v << ") " << n.label();
    if (n.num_passes > 1) os << " (" << n.pass_num << "/" << n.num_passes << " passes)";
    if (n.has_saved_activation) os << " *";
    os << "\n";
  }
  os.unsetf(std::ios::fixed);
  return os;
}

} // namespace torchlens
