// Gradients of a logged forward pass (docs/gradients.md): the store a ModelLog
// holds, the autograd hooks that fill it, and ModelLog's gradient accessors.

#include "gradient_store.hpp"

#include "../capture/libtorch_compat.hpp"
#include "../capture/recorder.hpp"
#include "../capture/session.hpp"

#include <torchlens/torch_error.hpp>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <boost/range/iterator_range.hpp>

#include <algorithm>
#include <unordered_map>
#include <utility>

namespace torchlens {
namespace detail {

// ---- the store ----------------------------------------------------------------

GradientStore::GradientStore(const LogOptions& options) : options_(options) {}

at::Tensor GradientStore::prepare(const at::Tensor& grad) const {
  at::Tensor g = grad;
  if (options_.detach() || !g.requires_grad()) g = g.detach();
  if (options_.output_device() == OutputDevice::cpu && !g.device().is_cpu()) g = g.to(c10::kCPU);
  if (options_.gradient_postfunc()) g = options_.gradient_postfunc()(g);
  return g;
}

std::size_t GradientStore::begin_step(const void* node, std::string name,
                                      std::uint64_t sequence_nr) {
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  // The engine runs each node at most once per backward: a node seen again
  // belongs to a new backward run.
  if (backward_ == 0 || !seen_.insert(node).second) {
    ++backward_;
    seen_.clear();
    seen_.insert(node);
    backward_start_ = now;
  }
  Step s;
  s.backward = backward_;
  s.order = seen_.size();
  s.grad_fn = std::move(name);
  s.sequence_nr = sequence_nr;
  s.start = now;
  s.start_us = std::chrono::duration<double, std::micro>(now - backward_start_).count();
  steps_.push_back(std::move(s));
  return steps_.size() - 1;
}

void GradientStore::end_step(std::size_t step) {
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  if (step < steps_.size()) {
    steps_[step].time_us =
        std::chrono::duration<double, std::micro>(now - steps_[step].start).count();
  }
}

void GradientStore::record(std::size_t step, std::size_t id, const at::Tensor& grad) {
  at::Tensor g = prepare(grad);
  std::lock_guard<std::mutex> lock(mutex_);
  if (by_id_.size() <= id) by_id_.resize(id + 1);
  by_id_[id] = std::move(g);
  if (step < steps_.size()) steps_[step].ids.push_back(id);
}

void GradientStore::record_param(std::size_t step, const std::string& address,
                                 const at::Tensor& grad) {
  at::Tensor g = prepare(grad);
  std::lock_guard<std::mutex> lock(mutex_);
  params_[address] = std::move(g);
  if (step < steps_.size()) steps_[step].params.push_back(address);
}

at::Tensor GradientStore::gradient(std::size_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return id < by_id_.size() ? by_id_[id] : at::Tensor();
}

at::Tensor GradientStore::param_gradient(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = params_.find(address);
  return it == params_.end() ? at::Tensor() : it->second;
}

std::vector<std::string> GradientStore::params_with_gradient() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [address, g] : params_) out.push_back(address);
  return out;
}

std::vector<std::size_t> GradientStore::ids_with_gradient() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::size_t> out;
  for (std::size_t id = 0; id < by_id_.size(); ++id) {
    if (by_id_[id].defined()) out.push_back(id);
  }
  return out;
}

std::vector<GradientStore::Step> GradientStore::steps() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return steps_;
}

// ---- the hooks ----------------------------------------------------------------

namespace {

using torch::autograd::variable_list;

/// What one autograd node delivers to the log: which of its gradient slots
/// (its forward outputs) are saved op outputs, and which parameters it
/// accumulates. One pre hook and one post hook per node share it.
struct NodeTargets {
  std::weak_ptr<GradientStore> store; // the log may be gone: then nothing is saved
  const torch::autograd::Node* node = nullptr;
  std::vector<std::pair<std::uint32_t, std::size_t>> slots; // (input_nr, id)
  std::vector<std::string> params;
  std::size_t step = SIZE_MAX; // of the current run (set by the pre hook)
};

class SavePreHook final : public torch::autograd::FunctionPreHook {
 public:
  explicit SavePreHook(std::shared_ptr<NodeTargets> t) : t_(std::move(t)) {}
  variable_list operator()(const variable_list& grads) override {
    auto store = t_->store.lock();
    if (!store) return grads;
    t_->step = store->begin_step(t_->node, t_->node->name(), t_->node->sequence_nr());
    for (const auto& [slot, id] : t_->slots) {
      if (slot < grads.size() && grads[slot].defined()) store->record(t_->step, id, grads[slot]);
    }
    if (!grads.empty() && grads[0].defined()) {
      for (const auto& address : t_->params) store->record_param(t_->step, address, grads[0]);
    }
    return grads; // unchanged: the caller's backward is what it would be
  }

 private:
  std::shared_ptr<NodeTargets> t_;
};

class TimePostHook final : public torch::autograd::FunctionPostHook {
 public:
  explicit TimePostHook(std::shared_ptr<NodeTargets> t) : t_(std::move(t)) {}
  variable_list operator()(const variable_list& outputs, const variable_list&) override {
    if (auto store = t_->store.lock(); store && t_->step != SIZE_MAX) store->end_step(t_->step);
    return outputs;
  }

 private:
  std::shared_ptr<NodeTargets> t_;
};

} // namespace

void check_gradients_possible(const LogOptions& options) {
  if (options.save_gradients().kind() == SaveSpec::Kind::none) return;
  TORCHLENS_CHECK(!c10::InferenceMode::is_enabled(),
                  "save_gradients was asked for, but the model runs in inference mode "
                  "(c10::InferenceMode): its tensors have no autograd graph, so no gradient can "
                  "reach them; log outside the InferenceMode guard, or drop save_gradients");
  TORCHLENS_CHECK(at::GradMode::is_enabled(),
                  "save_gradients was asked for, but the model runs with grad disabled "
                  "(torch::NoGradGuard / GradMode off): its tensors have no autograd graph, so "
                  "no gradient can reach them; log outside the no-grad guard, or drop "
                  "save_gradients");
}

void hook_gradients(const std::shared_ptr<GradientStore>& store,
                    const std::vector<torch::autograd::Edge>& edges,
                    const std::unordered_set<std::size_t>& selected,
                    const std::vector<ModelDescription::NamedTensor>& params) {
  // one NodeTargets per autograd node
  std::unordered_map<torch::autograd::Node*, std::shared_ptr<NodeTargets>> targets;
  auto targets_of = [&](const std::shared_ptr<torch::autograd::Node>& node) {
    auto& t = targets[node.get()];
    if (!t) {
      t = std::make_shared<NodeTargets>();
      t->store = store;
      t->node = node.get();
    }
    return t;
  };
  std::vector<std::shared_ptr<torch::autograd::Node>> nodes; // alive while hooking
  for (std::size_t id : selected) {
    if (id >= edges.size() || !edges[id].is_valid()) {
      store->not_in_graph.insert(id);
      continue;
    }
    targets_of(edges[id].function)->slots.emplace_back(edges[id].input_nr, id);
    nodes.push_back(edges[id].function);
    store->hooked.insert(id);
  }
  // parameters: the gradient their accumulator receives in each backward
  for (const auto& p : params) {
    if (auto acc = compat::grad_accumulator(p.tensor)) {
      targets_of(acc)->params.push_back(p.address);
      nodes.push_back(std::move(acc));
    }
  }
  for (auto& [node, t] : targets) {
    std::sort(t->slots.begin(), t->slots.end());
    compat::add_node_hooks(*node, std::make_unique<SavePreHook>(t),
                           std::make_unique<TimePostHook>(t));
  }
}

void attach_gradients(ModelLog& log, const ModelDescription& model,
                      const std::vector<torch::autograd::Edge>& edges, const c10::IValue& output) {
  const LogOptions& options = log.options();
  if (options.save_gradients().kind() == SaveSpec::Kind::none) return;
  auto store = std::make_shared<GradientStore>(options);
  flatten_outputs(output, store->returned);

  // the selected op outputs, by id
  std::unordered_set<std::size_t> selected;
  const ModelGraph& g = log.graph();
  if (options.save_gradients().kind() == SaveSpec::Kind::all) {
    for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
      if (g[v].kind != NodeKind::output) selected.insert(g[v].id);
    }
  } else {
    selected = select_ids(log, options.save_gradients().keys()).policy.ids;
  }
  hook_gradients(store, edges, selected, model.params);
  TORCHLENS_CHECK(selected.empty() || !store->hooked.empty(),
                  "save_gradients was asked for, but none of the ", selected.size(),
                  " selected layers is part of an autograd graph: the model computed them "
                  "without grad (a no-grad block inside forward?) or nothing they depend on "
                  "requires grad (give an input requires_grad(true), or keep the parameters' "
                  "requires_grad)");
  log.set_gradient_store(std::move(store));
}

} // namespace detail

// ---- ModelLog and LayerView ---------------------------------------------------

namespace {

/// The id whose gradient a vertex shows: an output node shows its producer's.
std::size_t gradient_id(const ModelGraph& g, Vertex v) {
  if (g[v].kind == NodeKind::output) {
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g)))
      return g[boost::source(e, g)].id;
  }
  return g[v].id;
}

} // namespace

at::Tensor ModelLog::gradient(Vertex v) const {
  if (gradients_ == nullptr || v >= size()) return {};
  return gradients_->gradient(gradient_id(graph_, v));
}

std::vector<Vertex> ModelLog::gradient_layers() const {
  std::vector<Vertex> out;
  if (gradients_ == nullptr) return out;
  const auto ids = gradients_->ids_with_gradient();
  const std::unordered_set<std::size_t> have(ids.begin(), ids.end());
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    if (have.count(gradient_id(graph_, v)) != 0) out.push_back(v);
  }
  return out;
}

at::Tensor ModelLog::param_gradient(std::string_view address) const {
  if (gradients_ == nullptr) return {};
  return gradients_->param_gradient(std::string(address));
}

std::vector<std::string> ModelLog::params_with_gradient() const {
  if (gradients_ == nullptr) return {};
  return gradients_->params_with_gradient();
}

std::vector<at::Tensor> ModelLog::returned() const {
  if (gradients_ == nullptr) return {};
  return gradients_->returned;
}

std::vector<BackwardStep> ModelLog::backward_log() const {
  std::vector<BackwardStep> out;
  if (gradients_ == nullptr) return out;
  std::unordered_map<std::size_t, std::vector<std::string>> labels_by_id;
  for (Vertex v : boost::make_iterator_range(boost::vertices(graph_))) {
    labels_by_id[graph_[v].id].push_back(graph_[v].label());
  }
  for (const auto& s : gradients_->steps()) {
    BackwardStep b;
    b.backward = s.backward;
    b.order = s.order;
    b.grad_fn = s.grad_fn;
    b.sequence_nr = s.sequence_nr;
    for (std::size_t id : s.ids) {
      auto it = labels_by_id.find(id);
      if (it != labels_by_id.end())
        b.layers.insert(b.layers.end(), it->second.begin(), it->second.end());
    }
    b.params = s.params;
    b.start_us = s.start_us;
    b.time_us = s.time_us;
    out.push_back(std::move(b));
  }
  return out;
}

bool LayerView::has_gradient() const {
  return log_->gradient(v_).defined();
}

at::Tensor LayerView::gradient() const {
  at::Tensor g = log_->gradient(v_);
  if (g.defined()) return g;
  const auto& store = log_->gradient_store();
  TORCHLENS_CHECK(store != nullptr, "no gradient for ", label(),
                  ": the log was made without LogOptions::save_gradients");
  const std::size_t id = gradient_id(log_->graph(), v_);
  TORCHLENS_CHECK(store->hooked.count(id) != 0 || store->not_in_graph.count(id) != 0,
                  "no gradient for ", label(),
                  ": it is not among the layers save_gradients selected");
  TORCHLENS_CHECK(store->not_in_graph.count(id) == 0, "no gradient for ", label(),
                  ": its value is not part of the autograd graph (nothing it depends on requires "
                  "grad, or it is an integer or boolean tensor)");
  TORCHLENS_CHECK(false, "no gradient for ", label(),
                  " yet: run backward from a loss that depends on it (loss.backward() or "
                  "torch::autograd::grad) after log_forward_pass");
  return g;
}

} // namespace torchlens
