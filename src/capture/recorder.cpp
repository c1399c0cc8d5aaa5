// The capture engine: a boxed fallback on a mode dispatch key sees exactly the
// ops the model calls (nested decompositions run with the key excluded), and
// feeds them to the thread's Recorder. See docs/capture.md.

#include "recorder.hpp"

#include <torchlens/log/model_log.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ScalarOps.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/clone.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/library.h>

#include <algorithm>
#include <chrono>
#include <sstream>

namespace torchlens::detail {

namespace {

constexpr auto kCaptureKey = c10::DispatchKey::TESTING_ONLY_GenericMode;
thread_local Recorder* tls_recorder = nullptr;

void capture_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_recursion(kCaptureKey);
  Recorder* rec = tls_recorder;
  if (rec == nullptr || rec->paused()) {
    op.callBoxed(stack);
    return;
  }
  rec->record(op, stack);
}

const c10::StorageImpl* storage_of(const at::Tensor& t) {
  if (!t.defined() || !t.unsafeGetTensorImpl()->has_storage()) {
    return nullptr;
  }
  return t.storage().unsafeGetStorageImpl();
}

std::uint32_t version_of(const at::Tensor& t) {
  const auto& vc = t.unsafeGetTensorImpl()->version_counter();
  return vc.enabled() ? vc.current_version() : 0;
}

std::string dtype_name(c10::ScalarType s) {
  switch (s) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::Double:
      return "float64";
    case c10::ScalarType::Half:
      return "float16";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Long:
      return "int64";
    case c10::ScalarType::Int:
      return "int32";
    case c10::ScalarType::Short:
      return "int16";
    case c10::ScalarType::Char:
      return "int8";
    case c10::ScalarType::Byte:
      return "uint8";
    case c10::ScalarType::Bool:
      return "bool";
    case c10::ScalarType::ComplexFloat:
      return "complex64";
    case c10::ScalarType::ComplexDouble:
      return "complex128";
    default:
      return c10::toString(s);
  }
}

bool is_scalar_read_op(const std::string& name) {
  return name == "aten::item" || name == "aten::is_nonzero" ||
         name == "aten::_local_scalar_dense" || name == "aten::equal" || name == "aten::allclose";
}

} // namespace

TORCH_LIBRARY_IMPL(_, TESTING_ONLY_GenericMode, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&capture_fallback>());
}

std::vector<std::pair<at::Tensor, bool>> flatten_returns(c10::ArrayRef<c10::IValue> returns,
                                                         bool scalar_read) {
  std::vector<std::pair<at::Tensor, bool>> outputs;
  for (const auto& r : returns) {
    if (r.isTensor()) {
      outputs.emplace_back(r.toTensor(), false);
    } else if (r.isTensorList()) {
      for (const auto& t : r.toTensorVector()) outputs.emplace_back(t, false);
    } else if (scalar_read && (r.isScalar() || r.isBool())) {
      outputs.emplace_back(r.isBool() ? at::scalar_tensor(r.toBool(), at::kBool)
                                      : c10::scalar_to_tensor(r.toScalar()),
                           true);
    }
  }
  return outputs;
}

void flatten_outputs(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) flatten_outputs(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) flatten_outputs(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) flatten_outputs(kv.value(), out);
  }
}

// ---------------------------------------------------------------------------
// Installing and removing the recorder (RAII, also when the model throws).

class CaptureScope {
 public:
  explicit CaptureScope(Recorder& rec) : include_(kCaptureKey) {
    TORCH_CHECK(tls_recorder == nullptr,
                "torchlens: log_forward_pass cannot be nested inside another capture");
    tls_recorder = &rec;
  }
  ~CaptureScope() { tls_recorder = nullptr; }
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;

 private:
  c10::impl::IncludeDispatchKeyGuard include_;
};

c10::IValue Recorder::run(const ForwardFn& forward) {
  CaptureScope scope(*this);
  return forward(this);
}

// ---------------------------------------------------------------------------

Recorder::Recorder(const ModelDescription& model, const LogOptions& options, SavePolicy policy)
    : model_(model), options_(options), policy_(std::move(policy)) {
  for (const auto& p : model.params) {
    const auto dot = p.address.rfind('.');
    params_[p.tensor.unsafeGetTensorImpl()] =
        ParamState{p.address, dot == std::string::npos ? "" : p.address.substr(0, dot), p.tensor};
  }
  for (const auto& b : model.buffers) {
    buffers_[b.tensor.unsafeGetTensorImpl()] = BufferState{b.address};
    keep_alive_.push_back(b.tensor);
  }
  for (const auto& m : model.modules) {
    module_types_[m.address] = m.type;
  }
  graph[boost::graph_bundle].model_name = model.name;
}

const OpInfo& Recorder::info_for(const c10::OperatorHandle& op) {
  const c10::FunctionSchema& schema = op.schema();
  auto it = op_infos_.find(&schema);
  if (it != op_infos_.end()) {
    return it->second;
  }
  OpInfo info;
  info.name = schema.name();
  info.overload = schema.overload_name();
  info.layer_type = layer_type_of(info.name);
  for (const auto& a : schema.arguments()) {
    info.arg_names.push_back(a.name());
    info.arg_written.push_back(a.alias_info() != nullptr && a.alias_info()->isWrite());
  }
  for (const auto& r : schema.returns()) {
    if (r.alias_info() != nullptr && !r.alias_info()->isWrite()) {
      info.returns_view = true;
    }
  }
  info.scalar_read = is_scalar_read_op(info.name);
  return op_infos_.emplace(&schema, std::move(info)).first->second;
}

std::size_t Recorder::new_node(OpNode node) {
  node.id = boost::num_vertices(graph);
  const std::size_t id = node.id;
  boost::add_vertex(std::move(node), graph);
  activations.emplace_back();
  records.emplace_back();
  return id;
}

void Recorder::track(const at::Tensor& t, std::size_t node) {
  auto* impl = t.unsafeGetTensorImpl();
  tensors_.insert_or_assign(
      impl,
      Tracked{c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), node, version_of(t)});
  if (const auto* st = storage_of(t)) {
    outputs_by_storage_.insert_or_assign(st, Geometry{node, t.sizes().vec(), t.strides().vec(),
                                                      t.storage_offset(), t.scalar_type()});
  }
}

bool Recorder::Geometry::matches(const at::Tensor& t) const {
  return t.sizes() == c10::IntArrayRef(sizes) && t.strides() == c10::IntArrayRef(strides) &&
         t.storage_offset() == offset && t.scalar_type() == dtype;
}

void Recorder::log_base_update(const at::Tensor& view, std::size_t writer) {
  const at::Tensor base(view._base());
  if (!base.defined()) return;
  // the base's value before the write: its tracked node, whatever its version now
  std::vector<Parent> parents;
  if (auto it = tensors_.find(base.unsafeGetTensorImpl()); it != tensors_.end()) {
    parents.push_back(Parent{it->second.node, 0, -1});
  } else {
    std::vector<const ParamState*> params;
    resolve_arg(base, 0, -1, parents, params);
  }
  OpNode n;
  n.kind = NodeKind::op;
  n.op_name = "torchlens::base_update";
  n.layer_type = "baseupdate";
  n.is_inplace = true;
  n.modules = graph[writer].modules;
  n.module_observed = graph[writer].module_observed;
  fill_tensor_fields(n, base);
  const std::size_t id = new_node(std::move(n));
  for (const auto& p : parents) {
    if (p.node != writer) boost::add_edge(p.node, id, TensorEdge{0, -1, "base", false}, graph);
  }
  boost::add_edge(writer, id, TensorEdge{1, -1, "written", false}, graph);
  // replayable as as_strided_scatter(base, written, size, stride, offset), with
  // the view's geometry relative to the base (validation re-executes it)
  static const auto scatter =
      c10::Dispatcher::singleton().findSchemaOrThrow("aten::as_strided_scatter", "");
  OpRecord& rec = records[id];
  rec.op = scatter;
  rec.args = {c10::IValue(), c10::IValue(), c10::IValue(view.sizes().vec()),
              c10::IValue(view.strides().vec()),
              c10::IValue(view.storage_offset() - base.storage_offset())};
  rec.from_edges = {true, true, false, false, false};
  rec.is_tensor = {true, true, false, false, false};
  track(base, id);
  save(id, base, /*copy=*/false);
}

void Recorder::fill_tensor_fields(OpNode& n, const at::Tensor& t) const {
  n.shape.assign(t.sizes().begin(), t.sizes().end());
  n.dtype = dtype_name(t.scalar_type());
  n.device = t.device().str();
  n.bytes = static_cast<std::int64_t>(t.nbytes());
  n.requires_grad = t.requires_grad();
  if (const auto& fn = t.grad_fn()) {
    n.grad_fn = fn->name();
  }
}

void Recorder::protect_storage(const c10::StorageImpl* s) {
  if (s == nullptr) {
    return;
  }
  auto it = saved_by_storage_.find(s);
  if (it == saved_by_storage_.end()) {
    return;
  }
  for (std::size_t id : it->second) {
    activations[id] = activations[id].clone();
  }
  saved_by_storage_.erase(it);
}

void Recorder::save(std::size_t id, const at::Tensor& t, bool copy) {
  if (policy_.mode == SavePolicy::Mode::none ||
      (policy_.mode == SavePolicy::Mode::ids && policy_.ids.count(id) == 0)) {
    return;
  }
  at::Tensor s = options_.detach() ? t.detach() : t;
  if (options_.output_device() == OutputDevice::cpu && !s.device().is_cpu()) {
    s = s.to(c10::kCPU);
  } else if (copy) {
    s = s.clone();
  }
  if (options_.postfunc()) {
    paused_ = true;
    try {
      s = options_.postfunc()(s);
    } catch (...) {
      paused_ = false;
      throw;
    }
    paused_ = false;
  }
  const auto* st = storage_of(s);
  if (st != nullptr && st == storage_of(t)) {
    saved_by_storage_[st].push_back(id); // saved by reference: copy on write
  }
  activations[id] = std::move(s);
  graph[id].has_saved_activation = true;
}

void Recorder::add_input(const std::string& address, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), "torchlens: input ", address, " is an undefined tensor");
  OpNode n;
  n.kind = NodeKind::input;
  n.op_name = "input";
  n.layer_type = "input";
  n.io_address = address;
  n.module_observed = true;
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  track(t, id);
  keep_alive_.push_back(t);
  save(id, t, /*copy=*/true); // the caller owns it and may change it later
}

std::size_t Recorder::buffer_node(BufferState& b, const at::Tensor& t) {
  const std::uint32_t v = version_of(t);
  if (b.node != SIZE_MAX && b.version == v) {
    return b.node;
  }
  OpNode n;
  n.kind = NodeKind::buffer;
  n.op_name = "buffer";
  n.layer_type = "buffer";
  n.io_address = b.address;
  n.buffer_pass = ++b.passes;
  n.module_observed = true;
  const auto dot = b.address.rfind('.');
  if (dot != std::string::npos) {
    // a buffer belongs to its owning module, whose frames we know by address
    std::string owner = b.address.substr(0, dot);
    std::vector<std::string> chain;
    for (std::size_t pos = 0;;) {
      const auto next = owner.find('.', pos);
      chain.push_back(owner.substr(0, next));
      if (next == std::string::npos) break;
      pos = next + 1;
    }
    for (const auto& a : chain) {
      auto it = module_types_.find(a);
      if (it == module_types_.end()) break; // `lstm._flat_weights.0`: a list, not a module
      n.modules.push_back(ModuleFrame{a, it->second, std::max(1, module_passes_[a])});
    }
  }
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  auto w = written_by_.find(t.unsafeGetTensorImpl());
  if (w != written_by_.end()) {
    boost::add_edge(w->second, id, TensorEdge{0, -1, "written", false}, graph);
  }
  b.node = id;
  b.version = v;
  save(id, t, /*copy=*/true); // buffers change under the model's feet (running stats)
  return id;
}

std::size_t Recorder::constant_node(const at::Tensor& t) {
  OpNode n;
  n.kind = NodeKind::op;
  n.op_name = "prim::Constant";
  n.layer_type = "constant";
  n.is_internally_generated = true;
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  track(t, id);
  keep_alive_.push_back(t);
  save(id, t, /*copy=*/false);
  return id;
}

bool Recorder::resolve_arg(const at::Tensor& t, int pos, int list_index,
                           std::vector<Parent>& parents, std::vector<const ParamState*>& params) {
  if (!t.defined()) {
    return false;
  }
  const auto* impl = t.unsafeGetTensorImpl();
  if (auto it = tensors_.find(impl); it != tensors_.end()) {
    std::size_t node = it->second.node;
    const std::uint32_t v = version_of(t);
    if (v != it->second.version) {
      // Mutated through an alias (x[i] = v writes a view of x): the last op that
      // wrote this storage at this version is the producer of the value we see.
      auto w = storage_writers_.find(storage_of(t));
      if (w != storage_writers_.end() && w->second.version == v) {
        node = w->second.node;
      } else {
        TORCH_WARN_ONCE("torchlens: a tensor was modified by an operation that was not ",
                        "logged; its consumers are linked to its last logged value");
      }
    }
    parents.push_back(Parent{node, pos, list_index});
    return true;
  }
  if (auto it = params_.find(impl); it != params_.end()) {
    params.push_back(&it->second);
    return false;
  }
  if (auto it = buffers_.find(impl); it != buffers_.end()) {
    parents.push_back(Parent{buffer_node(it->second, t), pos, list_index});
    return true;
  }
  if (auto it = outputs_by_storage_.find(storage_of(t));
      it != outputs_by_storage_.end() && it->second.matches(t)) {
    const std::size_t node = it->second.node; // same data, new TensorImpl
    track(t, node);
    parents.push_back(Parent{node, pos, list_index});
    return true;
  }
  parents.push_back(Parent{constant_node(t), pos, list_index});
  return true;
}

std::vector<Recorder::RawFrame> Recorder::torchscript_frames() const {
  std::vector<RawFrame> frames;
  const auto hierarchy = torch::jit::currentModuleHierarchy();
  if (hierarchy.empty()) {
    return frames;
  }
  const auto callstack = torch::jit::currentCallstack();
  const bool aligned = callstack.size() == hierarchy.size();
  const std::size_t n = hierarchy.size();
  std::string address;
  std::vector<std::size_t> key;
  for (std::size_t k = 0; k < n; ++k) {
    const std::string& entry = hierarchy[k];
    if (k > 0 && aligned) {
      key.push_back(callstack[n - k].range.start()); // call site in the enclosing frame
    }
    if (entry.rfind("TOP(", 0) == 0 || entry.rfind("SELF(", 0) == 0 ||
        entry.rfind("CALL_FUNCTION", 0) == 0) {
      continue;
    }
    const auto open = entry.find('(');
    const auto close = entry.find(')', open);
    if (open == std::string::npos || close == std::string::npos) {
      continue;
    }
    const std::string name = entry.substr(0, open);
    address = address.empty() ? name : address + "." + name;
    frames.push_back(RawFrame{address, entry.substr(open + 1, close - open - 1), key});
  }
  return frames;
}

std::vector<ModuleFrame> Recorder::module_frames(const std::vector<const ParamState*>& params,
                                                 bool& observed) {
  std::vector<RawFrame> frames;
  if (model_.torchscript) {
    frames = torchscript_frames();
    observed = true;
  } else {
    frames = driven_;
    observed = !driven_.empty();
    if (!params.empty()) {
      // Parameter ownership: the op ran inside the module owning the parameter.
      const std::string& owner = params.front()->owner;
      const std::string base = frames.empty() ? "" : frames.back().address;
      if (!owner.empty() && (base.empty() || owner.rfind(base + ".", 0) == 0)) {
        std::size_t pos = base.empty() ? 0 : base.size() + 1;
        for (;;) {
          const auto next = owner.find('.', pos);
          const std::string a = owner.substr(0, next);
          auto it = module_types_.find(a);
          frames.push_back(RawFrame{a, it == module_types_.end() ? "" : it->second, {}});
          if (next == std::string::npos) break;
          pos = next + 1;
        }
        observed = true;
      }
    }
  }
  if (!observed) {
    return {};
  }
  // Passes: a frame continues the open call of the same module when nothing
  // outside it ran in between, its call site is the same, and it does not
  // reuse a parameter it already used in this call.
  std::size_t keep = 0;
  while (keep < open_.size() && keep < frames.size() &&
         open_[keep].frame.address == frames[keep].address &&
         open_[keep].frame.key == frames[keep].key) {
    ++keep;
  }
  for (const ParamState* p : params) {
    for (std::size_t d = 0; d < keep; ++d) {
      if (open_[d].frame.address == p->owner &&
          open_[d].params_used.count(p->tensor.unsafeGetTensorImpl()) != 0) {
        keep = d;
        break;
      }
    }
  }
  open_.resize(keep);
  for (std::size_t d = keep; d < frames.size(); ++d) {
    int& count = module_passes_[frames[d].address];
    if (count == 0) {
      module_order_.push_back(frames[d].address);
      module_types_.emplace(frames[d].address, frames[d].type);
    }
    open_.push_back(OpenFrame{frames[d], ++count, {}});
  }
  for (const ParamState* p : params) {
    for (auto& f : open_) {
      if (f.frame.address == p->owner) {
        f.params_used.insert(p->tensor.unsafeGetTensorImpl());
      }
    }
  }
  std::vector<ModuleFrame> out;
  out.reserve(open_.size());
  for (const auto& f : open_) {
    out.push_back(ModuleFrame{f.frame.address, f.frame.type, f.pass});
  }
  return out;
}

void Recorder::enter_module(const std::string& address, const std::string& type) {
  driven_.push_back(RawFrame{address, type, {++driver_serial_}});
}

void Recorder::exit_module() {
  TORCH_INTERNAL_ASSERT(!driven_.empty());
  driven_.pop_back();
}

void Recorder::record(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const OpInfo& info = info_for(op);
  const std::size_t num_args = info.arg_names.size();
  TORCH_INTERNAL_ASSERT(stack->size() >= num_args);
  const auto args = torch::jit::last(*stack, num_args);

  // Parents, parameters, and the non-tensor arguments (kept for printing/replay).
  std::vector<Parent> parents;
  std::vector<const ParamState*> params;
  std::vector<at::Tensor> arg_tensors;
  OpRecord rec;
  rec.op = op;
  rec.args.reserve(num_args);
  for (std::size_t i = 0; i < num_args; ++i) {
    const c10::IValue& a = args[i];
    const int pos = static_cast<int>(i);
    if (a.isTensor()) {
      const bool edge = resolve_arg(a.toTensor(), pos, -1, parents, params);
      arg_tensors.push_back(a.toTensor());
      rec.args.push_back(edge ? c10::IValue() : a);
      rec.from_edges.push_back(edge);
      rec.is_tensor.push_back(true);
    } else if (a.isTensorList()) {
      auto list = a.toTensorList().copy();
      bool any_edge = false;
      for (std::size_t j = 0; j < list.size(); ++j) {
        const at::Tensor t = list.get(j);
        arg_tensors.push_back(t);
        if (resolve_arg(t, pos, static_cast<int>(j), parents, params)) {
          any_edge = true;
          list.set(j, at::Tensor());
        }
      }
      rec.args.emplace_back(std::move(list));
      rec.from_edges.push_back(any_edge);
      rec.is_tensor.push_back(true);
    } else if (a.isList() && a.toList().elementType()->kind() == c10::TypeKind::OptionalType) {
      auto list = a.toList().copy(); // Tensor?[] (index)
      bool any_edge = false;
      for (std::size_t j = 0; j < list.size(); ++j) {
        const c10::IValue e = list.get(j);
        if (!e.isTensor()) continue;
        arg_tensors.push_back(e.toTensor());
        if (resolve_arg(e.toTensor(), pos, static_cast<int>(j), parents, params)) {
          any_edge = true;
          list.set(j, c10::IValue());
        }
      }
      rec.args.emplace_back(std::move(list));
      rec.from_edges.push_back(any_edge);
      rec.is_tensor.push_back(true);
    } else {
      rec.args.push_back(a);
      rec.from_edges.push_back(false);
      rec.is_tensor.push_back(false);
    }
  }

  // Copy-on-write: saved activations that this op is about to overwrite.
  std::vector<std::uint32_t> versions_before;
  versions_before.reserve(arg_tensors.size());
  std::vector<at::Tensor> args_written_views(num_args);
  for (std::size_t i = 0; i < num_args; ++i) {
    if (info.arg_written[i] && args[i].isTensor()) {
      const at::Tensor& w = args[i].toTensor();
      protect_storage(storage_of(w));
      if (w.is_view() && !w.is_inference()) args_written_views[i] = w;
    }
  }
  for (const auto& t : arg_tensors) {
    versions_before.push_back(t.defined() ? version_of(t) : 0);
  }

  bool observed = false;
  std::vector<ModuleFrame> frames = module_frames(params, observed);
  if (options_.keep_replay()) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rec.rng_state = gen.get_state();
  }

  const auto t0 = std::chrono::steady_clock::now();
  op.callBoxed(stack);
  const auto t1 = std::chrono::steady_clock::now();
  const double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
  op_time_us_ += us;

  // Outputs: one vertex per returned tensor (and per scalar read).
  const std::size_t num_returns = op.schema().returns().size();
  const auto outputs = flatten_returns(torch::jit::last(*stack, num_returns), info.scalar_read);

  bool wrote_any = false;
  for (std::size_t i = 0; i < num_args; ++i) wrote_any = wrote_any || info.arg_written[i];

  std::vector<ParamRef> param_refs;
  for (const ParamState* p : params) {
    param_refs.push_back(ParamRef{
        p->address, std::vector<std::int64_t>(p->tensor.sizes().begin(), p->tensor.sizes().end()),
        p->tensor.numel(), static_cast<std::int64_t>(p->tensor.nbytes()),
        p->tensor.requires_grad()});
  }

  std::size_t first_id = SIZE_MAX;
  int index = 0;
  for (const auto& [t, scalar] : outputs) {
    if (!t.defined()) {
      ++index;
      continue;
    }
    OpNode n;
    n.kind = NodeKind::op;
    n.op_name = info.name;
    n.overload = info.overload;
    n.layer_type = info.layer_type;
    n.output_index = index++;
    n.num_outputs = static_cast<int>(outputs.size());
    n.is_inplace = wrote_any;
    n.is_view = info.returns_view;
    n.params = param_refs;
    n.time_us = us;
    n.is_internally_generated = parents.empty();
    n.is_scalar_read = scalar;
    if (scalar && t.scalar_type() == at::kBool) {
      n.scalar_bool_value = t.item<bool>();
    } else if (t.dim() == 0 && t.scalar_type() == at::kBool && t.device().is_cpu()) {
      n.scalar_bool_value = t.item<bool>();
    }
    n.modules = frames;
    n.module_observed = observed;
    fill_tensor_fields(n, t);
    const std::size_t id = new_node(std::move(n));
    if (first_id == SIZE_MAX) {
      first_id = id;
    }
    records[id] = rec;
    for (const auto& p : parents) {
      boost::add_edge(p.node, id,
                      TensorEdge{p.arg_pos, p.list_index, info.arg_names[p.arg_pos], false}, graph);
    }
    if (!scalar) {
      track(t, id);
      if (wrote_any || info.returns_view) {
        if (const auto* st = storage_of(t)) {
          storage_writers_[st] = Writer{id, version_of(t)};
        }
      }
    }
    save(id, t, /*copy=*/false);
  }

  // An in-place write into a view changed its base too: log the base's new value
  // so later uses of the base see the whole tensor (TorchLens's setitem).
  if (wrote_any && first_id != SIZE_MAX) {
    for (std::size_t i = 0; i < num_args; ++i) {
      if (info.arg_written[i] && args_written_views[i].defined()) {
        log_base_update(args_written_views[i], first_id);
      }
    }
  }

  // Writes the schema does not announce (batch_norm's running stats in training):
  // the next read of such a buffer becomes a new buffer pass fed by this op.
  for (std::size_t i = 0; i < arg_tensors.size(); ++i) {
    const auto& t = arg_tensors[i];
    if (t.defined() && first_id != SIZE_MAX && version_of(t) != versions_before[i]) {
      written_by_[t.unsafeGetTensorImpl()] = first_id;
    }
  }
}

void Recorder::set_returned(const c10::IValue& value) {
  auto& info = graph[boost::graph_bundle];
  std::function<void(const c10::IValue&, const std::string&)> walk =
      [&](const c10::IValue& v, const std::string& address) {
        if (v.isTensor()) {
          const at::Tensor& t = v.toTensor();
          std::vector<Parent> parents;
          std::vector<const ParamState*> params;
          resolve_arg(t, 0, -1, parents, params);
          std::size_t node;
          if (!parents.empty()) {
            node = parents.front().node;
          } else {
            node = constant_node(t); // a parameter returned as is
          }
          info.returned.push_back(ReturnedTensor{node, address});
          if (const auto* st = storage_of(t)) {
            protect_storage(st); // the caller owns the returned tensor now
          }
        } else if (v.isTuple()) {
          const auto& elems = v.toTupleRef().elements();
          for (std::size_t i = 0; i < elems.size(); ++i) {
            walk(elems[i], address + "." + std::to_string(i));
          }
        } else if (v.isList()) {
          const auto& elems = v.toListRef();
          for (std::size_t i = 0; i < elems.size(); ++i) {
            walk(elems[i], address + "." + std::to_string(i));
          }
        } else if (v.isGenericDict()) {
          for (const auto& kv : v.toGenericDict()) {
            std::ostringstream key;
            key << kv.key();
            std::string k = key.str();
            k.erase(std::remove(k.begin(), k.end(), '"'), k.end());
            k.erase(std::remove(k.begin(), k.end(), '\''), k.end());
            walk(kv.value(), address + "." + k);
          }
        }
      };
  if (value.isTuple() || value.isList() || value.isGenericDict()) {
    walk(value, "output");
  } else {
    walk(value, "output.0");
  }
}

void Recorder::finish(double forward_ms) {
  // Saved references that alias what the caller keeps (parameters, buffers,
  // inputs) become copies, so later changes on the caller's side cannot alter them.
  for (const auto& [impl, p] : params_) protect_storage(storage_of(p.tensor));
  for (const auto& t : keep_alive_) protect_storage(storage_of(t));
  saved_by_storage_.clear();
  tensors_.clear();

  // Printable non-tensor arguments.
  for (auto v : boost::make_iterator_range(boost::vertices(graph))) {
    const auto& rec = records[graph[v].id];
    if (!rec.op || graph[v].op_name == "torchlens::base_update") continue;
    const auto& schema = rec.op->schema();
    for (std::size_t i = 0; i < rec.args.size(); ++i) {
      if (rec.is_tensor[i]) continue; // an edge or a parameter, not a scalar
      std::ostringstream os;
      os << rec.args[i];
      graph[v].scalar_args.push_back(ScalarArg{schema.arguments()[i].name(), os.str()});
    }
  }

  auto& info = graph[boost::graph_bundle];
  info.next_id = boost::num_vertices(graph);
  info.forward_time_ms = forward_ms;
  info.logging_time_ms = std::max(0.0, forward_ms - op_time_us_ / 1000.0);
  for (const auto& address : module_order_) {
    ModuleInfo m{address, module_types_[address], module_passes_[address], 0};
    for (const auto& p : model_.params) {
      if (p.address.rfind(address + ".", 0) == 0) m.num_params += p.tensor.numel();
    }
    info.modules.push_back(std::move(m));
  }
}

} // namespace torchlens::detail
