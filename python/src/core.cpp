// torchlens_cpp._core: the C++ engine for eager Python models. The Python
// package (python/torchlens_cpp/__init__.py) describes the model, installs the
// module hooks for one call and calls in here; this file drives the capture
// (run_logged / validate_run with a ForwardFn that calls back into Python under
// the GIL), turns module hooks into recorder frames, and exposes the log with
// TorchLens's field names. Tensors cross as torch.Tensor objects, never copied.

#include "binding.hpp"

#include "../../src/capture/recorder.hpp"

#include <torchlens/intervene/interventions.hpp>
#include <torchlens/io/dot.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/io/render.hpp>
#include <torchlens/torchlens.hpp>
#include <torchlens/validate/gradients.hpp>
#include <torchlens/validate/validate.hpp>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace py = pybind11;
namespace tl = torchlens;
namespace td = torchlens::detail;

namespace {

// ---------------------------------------------------------------------------
// Python values <-> tensors

/// The fields of a dataclass instance as a dict (name -> value, in field
/// order), or None for anything else. TorchLens finds tensors in an object's
/// attributes; a dataclass output (`output.logits`) is the common case.
py::object dataclass_fields(py::handle o) {
  // kept for the process: a static py::object would be released after the
  // interpreter is gone
  static const py::handle dataclasses = py::module_::import("dataclasses").release();
  // dataclasses.is_dataclass's own test, without a Python call for every
  // argument of every module call
  if (py::isinstance<py::type>(o) || !py::hasattr(o.get_type(), "__dataclass_fields__")) {
    return py::none();
  }
  py::dict fields;
  for (py::handle f : dataclasses.attr("fields")(o)) {
    const py::str name = f.attr("name");
    fields[name] = o.attr(name);
  }
  return fields;
}

/// Every tensor in a Python value (tensors, tuples, lists, dict values,
/// dataclass fields), in order.
void collect_tensors(py::handle o, std::vector<at::Tensor>& out, int depth = 0) {
  if (THPVariable_Check(o.ptr())) {
    out.push_back(THPVariable_Unpack(o.ptr()));
  } else if (depth < 32 && (py::isinstance<py::tuple>(o) || py::isinstance<py::list>(o))) {
    for (py::handle e : o) collect_tensors(e, out, depth + 1);
  } else if (depth < 32 && py::isinstance<py::dict>(o)) {
    for (auto kv : py::reinterpret_borrow<py::dict>(o)) collect_tensors(kv.second, out, depth + 1);
  } else if (depth < 32) {
    if (py::object fields = dataclass_fields(o); !fields.is_none()) {
      collect_tensors(fields, out, depth + 1);
    }
  }
}

/// A forward() result as capture reads it: tensors, tuples, lists and dicts
/// (keys as text), dataclasses as dicts of their fields; anything else is None
/// (not a tensor the log could hold).
c10::IValue to_ivalue(py::handle o, int depth = 0) {
  if (THPVariable_Check(o.ptr())) return THPVariable_Unpack(o.ptr());
  if (depth >= 32) return {};
  if (py::isinstance<py::tuple>(o)) {
    std::vector<c10::IValue> elems;
    for (py::handle e : o) elems.push_back(to_ivalue(e, depth + 1));
    return c10::ivalue::Tuple::create(std::move(elems));
  }
  if (py::isinstance<py::list>(o)) {
    c10::impl::GenericList list(c10::AnyType::get());
    for (py::handle e : o) list.push_back(to_ivalue(e, depth + 1));
    return list;
  }
  if (py::isinstance<py::dict>(o)) {
    c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
    for (auto kv : py::reinterpret_borrow<py::dict>(o)) {
      dict.insert(py::str(kv.first).cast<std::string>(), to_ivalue(kv.second, depth + 1));
    }
    return dict;
  }
  if (py::object fields = dataclass_fields(o); !fields.is_none()) {
    return to_ivalue(fields, depth + 1);
  }
  return {};
}

// ---------------------------------------------------------------------------
// Module hooks: frames in the recorder of the capture running on this thread

struct Entry {
  const void* module;
  std::vector<std::pair<at::Tensor, std::size_t>> args; // tensor, its vertex at entry
  py::object frame; // the Python frame of this call's Module.__call__ (kept alive)
};

struct HookState {
  td::Recorder* recorder = nullptr;
  std::vector<Entry> calls;
};
thread_local HookState tls_hooks;

/// How the statement the running Python frame executes uses a bool it reads
/// from a tensor, as TorchLens 2.x classifies the source: `assert ...` an
/// assertion; `while ...` a loop condition; `if`/`elif` an `if` condition,
/// whatever its body does (`break`, `raise`). Unknown (a bool kept as a value,
/// a condition over several lines): ScalarUse::none.
torchlens::ScalarUse bool_use_from_source() {
  py::gil_scoped_acquire gil;               // Tensor.__bool__ releases it around the op
  PyFrameObject* frame = PyEval_GetFrame(); // borrowed
  if (frame == nullptr) return torchlens::ScalarUse::none;
  try {
    // kept for the process, as the dataclasses handle: a static py::object
    // would be released after the interpreter shut down
    static const py::handle getline =
        py::object(py::module_::import("linecache").attr("getline")).release();
    const py::object code =
        py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyFrame_GetCode(frame)));
    const py::object filename = code.attr("co_filename");
    const int line = PyFrame_GetLineNumber(frame);
    auto statement = [&](int n) {
      std::string text = getline(filename, n).cast<std::string>();
      const auto begin = text.find_first_not_of(" \t");
      const auto end = text.find_last_not_of(" \t\r\n");
      return begin == std::string::npos ? std::string() : text.substr(begin, end - begin + 1);
    };
    const std::string text = statement(line);
    auto keyword = [&](std::string_view k) {
      return text.starts_with(k) && text.size() > k.size() &&
             (text[k.size()] == ' ' || text[k.size()] == '(');
    };
    if (keyword("assert")) return torchlens::ScalarUse::assertion;
    if (keyword("while")) return torchlens::ScalarUse::loop;
    if (keyword("if") || keyword("elif")) return torchlens::ScalarUse::condition;
  } catch (const py::error_already_set&) {
    PyErr_Clear();
  }
  return torchlens::ScalarUse::none;
}

/// Installs the recorder for the hooks while forward runs (also on exceptions).
class HookScope {
 public:
  explicit HookScope(td::Recorder* rec) : saved_(std::move(tls_hooks)) {
    tls_hooks = HookState{rec, {}};
    if (rec != nullptr) rec->set_bool_use_source(&bool_use_from_source);
  }
  ~HookScope() { tls_hooks = std::move(saved_); }
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  HookState saved_;
};

/// The Python frame that called the hook (the module's __call__), new reference.
py::object caller_frame() {
  PyFrameObject* f = PyEval_GetFrame(); // borrowed
  return f == nullptr ? py::none()
                      : py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(f));
}

/// True when `frame` is the running Python frame or one of its callers. A call
/// in progress is a caller a few frames up, so the walk is short.
bool on_stack(PyObject* frame) {
  PyFrameObject* f = PyEval_GetFrame(); // borrowed
  Py_XINCREF(f);
  while (f != nullptr) {
    if (reinterpret_cast<PyObject*>(f) == frame) {
      Py_DECREF(f);
      return true;
    }
    PyFrameObject* back = PyFrame_GetBack(f); // new reference
    Py_DECREF(f);
    f = back;
  }
  return false;
}

/// Closes the calls whose forward raised and whose exception the model caught:
/// their post-hook never ran, and their __call__ frame is no longer on the stack.
void close_abandoned_calls(td::Recorder* rec) {
  auto& calls = tls_hooks.calls;
  while (!calls.empty() && !calls.back().frame.is_none() && !on_stack(calls.back().frame.ptr())) {
    rec->exit_module();
    calls.pop_back();
  }
}

/// A module of the model this thread is capturing whose calls only the global
/// hooks announce (a TorchScript submodule: ModelDescription::NamedModule::opaque).
bool opaque_in_capture(py::handle module) {
  const td::Recorder* rec = tls_hooks.recorder;
  return rec != nullptr && rec->is_opaque_module(module.ptr());
}

void module_enter(py::handle module, py::handle args) {
  td::Recorder* rec = tls_hooks.recorder;
  if (rec == nullptr) return;
  close_abandoned_calls(rec);
  py::object frame = caller_frame();
  auto& calls = tls_hooks.calls;
  if (!calls.empty() && calls.back().module == module.ptr() && !frame.is_none() &&
      calls.back().frame.ptr() == frame.ptr()) {
    return; // this call's second pre-hook (the model is being logged on two threads at once)
  }
  std::vector<at::Tensor> tensors;
  collect_tensors(args, tensors);
  Entry e{module.ptr(), {}, std::move(frame)};
  e.args.reserve(tensors.size());
  for (auto& t : tensors) {
    const std::size_t node = rec->node_of(t);
    e.args.emplace_back(std::move(t), node);
  }
  rec->enter_module(module.ptr());
  calls.push_back(std::move(e));
}

/// A module's forward called directly (`self.block.forward(x)`: no __call__, so
/// no hooks), through the wrapper the Python package puts on its class for the
/// capture: enters a call of it (true) unless it is not the model's or is the
/// innermost call already (its __call__'s hooks entered it, or its forward is
/// calling its parent class's). The call's frame is the wrapper's.
bool forward_enter(py::handle module, py::handle args) {
  td::Recorder* rec = tls_hooks.recorder;
  if (rec == nullptr || !rec->has_module(module.ptr())) return false;
  close_abandoned_calls(rec);
  const auto& calls = tls_hooks.calls;
  if (!calls.empty() && calls.back().module == module.ptr()) return false;
  module_enter(module, args);
  return true;
}

void module_exit(py::handle module, py::handle output) {
  td::Recorder* rec = tls_hooks.recorder;
  auto& calls = tls_hooks.calls;
  if (rec == nullptr) return;
  close_abandoned_calls(rec);
  if (calls.empty() || calls.back().module != module.ptr()) return; // entered before the capture
  std::vector<at::Tensor> outputs;
  collect_tensors(output, outputs);
  std::vector<at::Tensor> unchanged;
  for (const auto& t : outputs) {
    for (const auto& [arg, node] : calls.back().args) {
      if (node != SIZE_MAX && arg.unsafeGetTensorImpl() == t.unsafeGetTensorImpl() &&
          rec->node_of(t) == node) {
        unchanged.push_back(t);
        break;
      }
    }
  }
  rec->exit_module_returning(outputs, unchanged);
  calls.pop_back();
}

} // namespace

// ---------------------------------------------------------------------------
// The model and the options, from what the Python package hands over

namespace torchlens_py {

td::ForwardFn forward_fn(const PyModel& m) {
  return [&m](td::Recorder* rec) -> c10::IValue {
    py::gil_scoped_acquire gil;
    const HookScope hooks(rec);
    const py::object out = m.forward();
    return to_ivalue(out);
  };
}

void rethrow_python(py::error_already_set& e) {
  e.restore(); // the error indicator again (the GIL is held: e was thrown under it)
  python_error err;
  err.persist();
  throw err;
}

PyRef hold(py::object o) {
  return PyRef(new py::object(std::move(o)), [](py::object* p) {
    if (Py_IsInitialized() != 0) {
      py::gil_scoped_acquire gil;
      delete p;
    } else {
      p->release(); // the interpreter is gone: nothing to release
      delete p;
    }
  });
}

tl::SaveSpec save_spec(const py::object& save, const char* what) {
  if (save.is_none()) return tl::SaveSpec::none();
  if (py::isinstance<py::bool_>(save)) {
    return save.cast<bool>() ? tl::SaveSpec::all() : tl::SaveSpec::none();
  }
  if (py::isinstance<py::str>(save)) {
    const auto text = save.cast<std::string>();
    TORCHLENS_CHECK(text == "all" || text == "none", what, ": '", text,
                    "' is neither 'all' nor 'none' (a list selects layers)");
    return text == "all" ? tl::SaveSpec::all() : tl::SaveSpec::none();
  }
  std::vector<std::string> keys;
  for (py::handle k : save) {
    if (py::isinstance<py::int_>(k)) {
      keys.push_back(std::to_string(k.cast<std::int64_t>()));
    } else {
      keys.push_back(py::str(k).cast<std::string>());
    }
  }
  return tl::SaveSpec::keys(std::move(keys));
}

namespace {

/// A Python tensor -> tensor function; runs inside the capture (GIL released
/// by torch around the op), after it, or in autograd's backward: take the GIL.
std::function<at::Tensor(const at::Tensor&)> tensor_fn(const py::object& f, std::string what) {
  PyRef fn = hold(f);
  return [fn, what = std::move(what)](const at::Tensor& t) -> at::Tensor {
    py::gil_scoped_acquire gil;
    const py::object r = guarded([&] { return (*fn)(t); });
    TORCHLENS_CHECK(THPVariable_Check(r.ptr()), what, " returned ",
                    py::str(py::type::of(r)).cast<std::string>(), ", not a torch.Tensor");
    return THPVariable_Unpack(r.ptr());
  };
}

} // namespace

tl::LogOptions make_options(const py::object& save, std::optional<std::uint64_t> seed, bool detach,
                            const std::string& output_device, const py::object& postfunc,
                            bool keep_replay, const py::object& save_gradients,
                            const py::object& gradient_postfunc, const py::object& intervene,
                            bool detect_loops, int min_param_free_loop_body) {
  tl::LogOptions o;
  o.save(save_spec(save, "layers_to_save"));
  o.detect_loops(detect_loops);
  o.min_param_free_loop_body(min_param_free_loop_body); // checked by log_forward_pass
  o.seed(seed);
  o.detach(detach);
  TORCHLENS_CHECK(output_device == "same" || output_device == "cpu", "output_device: '",
                  output_device, "' is neither 'same' nor 'cpu'");
  o.output_device(output_device == "cpu" ? tl::OutputDevice::cpu : tl::OutputDevice::same);
  if (!postfunc.is_none()) o.postfunc(tensor_fn(postfunc, "activation_postfunc"));
  o.keep_replay(keep_replay);
  o.save_gradients(save_spec(save_gradients, "save_gradients"));
  if (!gradient_postfunc.is_none()) {
    TORCHLENS_CHECK(o.save_gradients().kind() != tl::SaveSpec::Kind::none,
                    "gradient_postfunc needs save_gradients");
    o.gradient_postfunc(tensor_fn(gradient_postfunc, "gradient_postfunc"));
  }
  if (!intervene.is_none()) {
    if (py::isinstance<py::tuple>(intervene)) {
      const auto t = intervene.cast<py::tuple>();
      TORCHLENS_CHECK(t.size() == 2, "intervene: a spec, or a tuple (spec, reference log)");
      o.intervene(t[0].cast<const tl::Interventions&>(), *t[1].cast<LogPtr>());
    } else {
      o.intervene(intervene.cast<const tl::Interventions&>());
    }
  }
  return o;
}

// ---------------------------------------------------------------------------
// TorchScript modules handed over from Python

/// torch's own binding of the module: both extensions share pybind11's internals.
torch::jit::Module script_module_of(py::handle script_module) {
  return py::cast<torch::jit::Module>(script_module.attr("_c"));
}

std::vector<c10::IValue> script_inputs(const torch::jit::Module& module, const py::tuple& args,
                                       const py::dict& kwargs) {
  const auto method = module.find_method("forward");
  TORCHLENS_CHECK(method.has_value(), "the TorchScript module has no forward method");
  torch::jit::Stack stack = torch::jit::createStackForSchema(
      method->function().getSchema(), torch::jit::tuple_slice(args),
      py::reinterpret_borrow<py::kwargs>(kwargs), module._ivalue());
  stack.erase(stack.begin()); // self
  return stack;
}

} // namespace torchlens_py

namespace {

using namespace torchlens_py;

PyModel make_model(const std::string& name,
                   const std::vector<std::pair<std::string, at::Tensor>>& params,
                   const std::vector<std::pair<std::string, at::Tensor>>& buffers,
                   const std::vector<std::tuple<std::string, std::string, py::object>>& modules,
                   py::handle root, std::vector<std::pair<std::string, at::Tensor>> inputs,
                   py::object forward) {
  PyModel m;
  m.description.name = name;
  for (const auto& [address, t] : params) m.description.params.push_back({address, t});
  for (const auto& [address, t] : buffers) m.description.buffers.push_back({address, t});
  // a TorchScript submodule takes no Python hooks: its own calls are announced
  // by the global hooks of _Hooks (torchlens_cpp/__init__.py), nothing inside it
  // (kept for the process, as the dataclasses handle)
  static const py::handle script_module =
      py::object(py::module_::import("torch.jit").attr("ScriptModule")).release();
  for (const auto& [address, type, module] : modules) {
    const bool scripted = py::isinstance(module, script_module);
    m.description.modules.push_back({address, type, module.ptr(), true, scripted});
  }
  m.description.root = root.ptr();
  m.description.calls_observed = true; // forward hooks on every module
  m.description.index = std::make_shared<const tl::detail::DescriptionIndex>(m.description);
  m.inputs = std::move(inputs);
  m.forward = std::move(forward);
  return m;
}

// ---------------------------------------------------------------------------
// The log, with TorchLens's names

std::string frame_text(const tl::ModuleFrame& f) {
  return f.address + ":" + std::to_string(f.pass);
}

py::object torch_dtype(const std::string& name) {
  static py::object torch = py::module_::import("torch");
  if (name.empty()) return py::none();
  return torch.attr(name.c_str());
}

std::vector<std::string> unique(std::vector<std::string> v) {
  std::unordered_set<std::string> seen;
  std::vector<std::string> out;
  for (auto& s : v) {
    if (seen.insert(s).second) out.push_back(std::move(s));
  }
  return out;
}

class Layer {
 public:
  Layer(LogPtr log, tl::Vertex v) : log_(std::move(log)), v_(v) {}
  const tl::OpNode& node() const { return log_->graph()[v_]; }
  tl::LayerView view() const { return tl::LayerView(*log_, v_); }
  const tl::ModelLog& log() const { return *log_; }
  tl::Vertex vertex() const { return v_; }

  /// Module passes this value enters: those of a consumer that it is outside of.
  std::vector<std::string> passes_entered() const {
    const auto& g = log_->graph();
    const auto& own = node().modules;
    std::vector<std::string> out;
    for (auto e : boost::make_iterator_range(boost::out_edges(v_, g))) {
      const auto& frames = g[boost::target(e, g)].modules;
      for (const auto& f : frames) {
        if (f.address.empty()) continue;
        if (std::find(own.begin(), own.end(), f) == own.end()) out.push_back(frame_text(f));
      }
    }
    return unique(std::move(out));
  }

  /// Module passes this value is returned from, innermost first. An output
  /// node, which sits outside every module, leaves those its producer was in
  /// (outermost first), as TorchLens 1.0's output nodes do.
  std::vector<std::string> passes_exited() const {
    std::vector<std::string> out;
    const auto& g = log_->graph();
    if (node().kind == tl::NodeKind::output) {
      for (auto e : boost::make_iterator_range(boost::in_edges(v_, g))) {
        for (const auto& f : g[boost::source(e, g)].modules) out.push_back(frame_text(f));
      }
      return out;
    }
    for (const auto& f : tl::modules_exited(node())) out.push_back(frame_text(f));
    std::reverse(out.begin(), out.end());
    return out;
  }

 private:
  LogPtr log_;
  tl::Vertex v_;
};

std::string strip_pass(const std::string& s) {
  return s.substr(0, s.rfind(':'));
}

py::object layer_tensor(const Layer& l) {
  const at::Tensor& t = l.log().activation(l.vertex());
  if (!t.defined()) return py::none();
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

/// The innermost module pass holding the op (`b.fc:1`), or None.
py::object containing_module(const Layer& l) {
  const auto& m = l.node().modules;
  if (m.empty()) return py::none();
  return py::str(frame_text(m.back()));
}

/// Every module pass holding the op, outermost first (`['b:1', 'b.fc:1']`).
std::vector<std::string> containing_modules(const Layer& l) {
  std::vector<std::string> out;
  for (const auto& f : l.node().modules) out.push_back(frame_text(f));
  return out;
}

py::object layer_gradient(const Layer& l) {
  const at::Tensor g = l.log().gradient(l.vertex());
  if (!g.defined()) return py::none();
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(g));
}

std::string layer_repr(const Layer& l) {
  const auto& n = l.node();
  std::ostringstream os;
  os << "Layer " << n.label() << " (" << n.layer_type << ", shape (";
  for (std::size_t i = 0; i < n.shape.size(); ++i) os << (i ? ", " : "") << n.shape[i];
  if (n.shape.size() == 1) os << ",";
  os << "), " << n.dtype;
  if (!n.modules.empty()) os << ", in " << frame_text(n.modules.back());
  os << ", pass " << n.pass_num << "/" << n.num_passes;
  os << (n.has_saved_activation || l.log().activation(l.vertex()).defined() ? ", saved" : "")
     << ")";
  return os.str();
}

std::vector<Layer> all_layers(const LogPtr& log) {
  std::vector<Layer> out;
  out.reserve(log->size());
  for (tl::Vertex v = 0; v < log->size(); ++v) out.emplace_back(log, v);
  return out;
}

std::vector<std::string> labels_where(const LogPtr& log, tl::NodeKind kind) {
  std::vector<std::string> out;
  for (auto layer : *log) {
    if (layer->kind == kind) out.push_back(layer.label());
  }
  return out;
}

tl::io::DotOptions dot_options(const std::string& vis_opt, int nesting_depth,
                               const std::string& direction, bool buffers) {
  TORCHLENS_CHECK(vis_opt == "unrolled" || vis_opt == "rolled", "vis_opt: '", vis_opt,
                  "' is neither 'unrolled' nor 'rolled'");
  TORCHLENS_CHECK(nesting_depth >= 1, "vis_nesting_depth must be at least 1, not ", nesting_depth);
  tl::io::Direction d = tl::io::Direction::bottom_up;
  if (direction == "topdown") {
    d = tl::io::Direction::top_down;
  } else if (direction == "leftright") {
    d = tl::io::Direction::left_right;
  } else {
    TORCHLENS_CHECK(direction == "bottomup", "vis_direction: '", direction,
                    "' is not 'bottomup', 'topdown' or 'leftright'");
  }
  return tl::io::DotOptions()
      .rolled(vis_opt == "rolled")
      .nesting_depth(nesting_depth)
      .direction(d)
      .show_buffers(buffers);
}

py::dict report_dict(const tl::ValidationReport& r) {
  py::dict d;
  d["valid"] = r.valid;
  d["layers_checked"] = r.layers_checked;
  d["perturbations"] = r.perturbations;
  d["exempted"] = r.exempted;
  py::list failures;
  for (const auto& f : r.failures) {
    py::dict fd;
    fd["label"] = f.label;
    fd["kind"] = [&] {
      switch (f.kind) {
        case tl::FailureKind::output_mismatch:
          return "output_mismatch";
        case tl::FailureKind::mismatch:
          return "mismatch";
        case tl::FailureKind::no_effect:
          return "no_effect";
        case tl::FailureKind::cannot_replay:
          return "cannot_replay";
        case tl::FailureKind::unreached:
          return "unreached";
        case tl::FailureKind::invariant:
          return "invariant";
      }
      return "unknown";
    }();
    fd["detail"] = f.detail;
    fd["max_error"] = f.max_error;
    failures.append(fd);
  }
  d["failures"] = failures;
  std::ostringstream os;
  os << r;
  d["text"] = os.str();
  d["time_ms"] = r.time_ms;
  return d;
}

} // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "torchlens's C++ capture engine for eager PyTorch models (use the torchlens_cpp "
      "package, not this module)";

  // torchlens's errors: KeyError for lookups (with the near matches), RuntimeError otherwise
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (python_error& e) {
      e.restore(); // a Python exception raised in an action, a postfunc or a metric
    } catch (const tl::KeyError& e) {
      PyErr_SetString(PyExc_KeyError, e.what_without_backtrace());
    } catch (const tl::UsageError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  m.def("module_enter", &module_enter, py::arg("module"), py::arg("args"),
        "forward pre-hook: a call of this module begins (no-op outside a capture)");
  m.def(
      "module_exit",
      [](py::handle module, py::handle, py::handle output) { module_exit(module, output); },
      py::arg("module"), py::arg("args"), py::arg("output"),
      "forward hook: the call ends returning output (no-op outside a capture)");
  m.def("forward_enter", &forward_enter, py::arg("module"), py::arg("args"),
        "a direct call of module.forward begins: true when it is a new call of the "
        "model's module (false outside a capture, or within the module's own call)");
  m.def(
      "forward_exit", [](py::handle module, py::handle output) { module_exit(module, output); },
      py::arg("module"), py::arg("output"),
      "the direct call of module.forward that forward_enter began returns output");
  // Global module hooks (installed only while a model with TorchScript
  // submodules is logged): called for every module's call, they announce
  // those of the model's TorchScript submodules, which take no hooks of their own.
  m.def(
      "opaque_module_enter",
      [](py::handle module, py::handle args) {
        if (opaque_in_capture(module)) module_enter(module, args);
      },
      py::arg("module"), py::arg("args"),
      "global forward pre-hook: module_enter for the model's TorchScript submodules only");
  m.def(
      "opaque_module_exit",
      [](py::handle module, py::handle, py::handle output) {
        if (opaque_in_capture(module)) module_exit(module, output);
      },
      py::arg("module"), py::arg("args"), py::arg("output"),
      "global forward hook: module_exit for the model's TorchScript submodules only");
  m.def(
      "capture_memory_stats",
      [] {
        const tl::CaptureMemoryStats s = tl::capture_memory_stats();
        py::dict d;
        d["cached_bytes"] = s.cached_bytes;
        d["live_bytes"] = s.live_bytes;
        d["peak_live_bytes"] = s.peak_live_bytes;
        d["limit_bytes"] = s.limit_bytes;
        d["fresh_blocks"] = s.fresh_blocks;
        d["reused_blocks"] = s.reused_blocks;
        return d;
      },
      "the capture memory pool's state (torchlens/capture/memory.hpp)");
  m.def("release_capture_memory", &tl::release_capture_memory,
        "returns the capture pool's cached blocks to the system; the bytes released");
  m.def("set_capture_memory_limit", &tl::set_capture_memory_limit, py::arg("bytes"),
        "caps the bytes the capture pool keeps cached (0: none)");
  m.def("render_available", &tl::io::render_available,
        "True when torchlens was built with Graphviz (rendering to PDF/SVG/PNG)");

  py::class_<PyModel>(m, "_Model")
      .def(py::init(&make_model), py::arg("name"), py::arg("params"), py::arg("buffers"),
           py::arg("modules"), py::arg("root"), py::arg("inputs"), py::arg("forward"));

  m.def(
      "log_forward_pass",
      [](const PyModel& model, const py::object& save, std::optional<std::uint64_t> seed,
         bool detach, const std::string& output_device, const py::object& postfunc,
         bool keep_replay, const py::object& save_gradients, const py::object& gradient_postfunc,
         const py::object& intervene, bool detect_loops, int min_param_free_loop_body) {
        const tl::LogOptions options =
            make_options(save, seed, detach, output_device, postfunc, keep_replay, save_gradients,
                         gradient_postfunc, intervene, detect_loops, min_param_free_loop_body);
        const td::ForwardFn forward = forward_fn(model);
        std::shared_ptr<tl::ModelLog> log;
        {
          py::gil_scoped_release nogil;
          log = std::make_shared<tl::ModelLog>(
              td::run_logged(model.description, model.inputs, forward, options));
        }
        return log;
      },
      py::arg("model"), py::arg("save"), py::arg("seed"), py::arg("detach"),
      py::arg("output_device"), py::arg("postfunc"), py::arg("keep_replay"),
      py::arg("save_gradients"), py::arg("gradient_postfunc"), py::arg("intervene"),
      py::arg("detect_loops"), py::arg("min_param_free_loop_body"));

  m.def(
      "validate",
      [](const PyModel& model, std::optional<std::uint64_t> seed, bool perturb, double atol,
         double rtol) {
        tl::LogOptions options;
        options.seed(seed);
        const td::ForwardFn forward = forward_fn(model);
        tl::ValidationReport report;
        {
          py::gil_scoped_release nogil;
          report = td::validate_run(model.description, model.inputs, forward, options,
                                    tl::ValidateOptions().perturb(perturb).atol(atol).rtol(rtol));
        }
        return report_dict(report);
      },
      py::arg("model"), py::arg("seed"), py::arg("perturb"), py::arg("atol"), py::arg("rtol"));

  m.def(
      "validate_gradients",
      [](const LogPtr& log, double atol, double rtol) {
        tl::GradientReport r;
        {
          py::gil_scoped_release nogil;
          r = tl::validate_gradients(*log, tl::GradientValidateOptions().atol(atol).rtol(rtol));
        }
        py::dict d;
        d["valid"] = r.valid;
        d["layers_checked"] = r.layers_checked;
        d["vjps"] = r.vjps;
        d["max_error"] = r.max_error;
        const auto items = [](const std::vector<tl::GradientFailure>& fs) {
          py::list out;
          for (const auto& f : fs) {
            py::dict fd;
            fd["label"] = f.label;
            fd["detail"] = f.detail;
            fd["max_error"] = f.max_error;
            out.append(fd);
          }
          return out;
        };
        d["failures"] = items(r.failures);
        d["skipped"] = items(r.skipped);
        std::ostringstream os;
        os << r;
        d["text"] = os.str();
        return d;
      },
      py::arg("log"), py::arg("atol"), py::arg("rtol"));

  // TorchScript modules: torchlens's TorchScript path (module calls from the
  // interpreter), arguments converted by the forward schema as TorchScript does
  m.def(
      "log_script",
      [](py::handle script_module, const py::tuple& args, const py::dict& kwargs,
         const py::object& save, std::optional<std::uint64_t> seed, bool detach,
         const std::string& output_device, const py::object& postfunc, bool keep_replay,
         const py::object& save_gradients, const py::object& gradient_postfunc,
         const py::object& intervene, bool detect_loops, int min_param_free_loop_body) {
        torch::jit::Module module = script_module_of(script_module);
        const std::vector<c10::IValue> inputs = script_inputs(module, args, kwargs);
        const tl::LogOptions options =
            make_options(save, seed, detach, output_device, postfunc, keep_replay, save_gradients,
                         gradient_postfunc, intervene, detect_loops, min_param_free_loop_body);
        std::shared_ptr<tl::ModelLog> log;
        {
          py::gil_scoped_release nogil;
          log = std::make_shared<tl::ModelLog>(tl::log_forward_pass(module, inputs, options));
        }
        return log;
      },
      py::arg("model"), py::arg("args"), py::arg("kwargs"), py::arg("save"), py::arg("seed"),
      py::arg("detach"), py::arg("output_device"), py::arg("postfunc"), py::arg("keep_replay"),
      py::arg("save_gradients"), py::arg("gradient_postfunc"), py::arg("intervene"),
      py::arg("detect_loops"), py::arg("min_param_free_loop_body"));
  m.def(
      "validate_script",
      [](py::handle script_module, const py::tuple& args, const py::dict& kwargs,
         std::optional<std::uint64_t> seed, bool perturb, double atol, double rtol) {
        torch::jit::Module module = script_module_of(script_module);
        const std::vector<c10::IValue> inputs = script_inputs(module, args, kwargs);
        tl::LogOptions options;
        options.seed(seed);
        tl::ValidationReport report;
        {
          py::gil_scoped_release nogil;
          report = tl::validate_saved_activations(
              module, inputs, options,
              tl::ValidateOptions().perturb(perturb).atol(atol).rtol(rtol));
        }
        return report_dict(report);
      },
      py::arg("model"), py::arg("args"), py::arg("kwargs"), py::arg("seed"), py::arg("perturb"),
      py::arg("atol"), py::arg("rtol"));

  py::class_<Layer>(m, "LayerPass", "one layer pass of a log, with TorchLens's field names")
      .def_property_readonly("tensor_contents", &layer_tensor,
                             "the saved activation (the tensor itself, no copy), or None")
      .def_property_readonly(
          "has_saved_activations",
          [](const Layer& l) { return l.log().activation(l.vertex()).defined(); })
      // gradients (save_gradients): TorchLens's names, old (grad_contents) and new
      .def_property_readonly("gradient", &layer_gradient,
                             "the saved gradient of the latest backward that reached this layer "
                             "pass, or None")
      .def_property_readonly("grad_contents", &layer_gradient)
      .def_property_readonly("has_saved_gradient",
                             [](const Layer& l) { return l.log().gradient(l.vertex()).defined(); })
      .def_property_readonly("has_saved_grad",
                             [](const Layer& l) { return l.log().gradient(l.vertex()).defined(); })
      .def_property_readonly("grad_shape",
                             [](const Layer& l) -> py::object {
                               const at::Tensor g = l.log().gradient(l.vertex());
                               if (!g.defined()) return py::none();
                               return py::tuple(py::cast(g.sizes().vec()));
                             })
      .def_property_readonly("grad_dtype",
                             [](const Layer& l) -> py::object {
                               const at::Tensor g = l.log().gradient(l.vertex());
                               if (!g.defined()) return py::none();
                               return torch_dtype(std::string(c10::toString(g.scalar_type())));
                             })
      .def_property_readonly("grad_fsize",
                             [](const Layer& l) -> py::object {
                               const at::Tensor g = l.log().gradient(l.vertex());
                               if (!g.defined()) return py::none();
                               return py::int_(g.nbytes());
                             })
      .def_property_readonly("layer_label", [](const Layer& l) { return l.node().label(); })
      .def_property_readonly("layer_label_short",
                             [](const Layer& l) { return l.node().label_short(); })
      .def_property_readonly("layer_label_no_pass",
                             [](const Layer& l) { return std::string(l.node().label_no_pass()); })
      .def_property_readonly(
          "layer_label_short_no_pass",
          [](const Layer& l) { return std::string(l.node().label_short_no_pass()); })
      .def_property_readonly("layer_type", [](const Layer& l) { return l.node().layer_type; })
      .def_property_readonly("layer_type_num", [](const Layer& l) { return l.node().type_num; })
      .def_property_readonly("layer_total_num", [](const Layer& l) { return l.node().total_num; })
      .def_property_readonly("pass_num", [](const Layer& l) { return l.node().pass_num; })
      .def_property_readonly("num_passes", [](const Layer& l) { return l.node().num_passes; })
      .def_property_readonly("layer_passes_total",
                             [](const Layer& l) { return l.node().num_passes; })
      .def_property_readonly(
          "creation_order", [](const Layer& l) { return l.node().id; },
          "OpNode::id: the order capture saw it in (keys the activations)")
      .def_property_readonly("func_applied_name",
                             [](const Layer& l) {
                               const auto& op = l.node().op_name;
                               const auto colon = op.rfind("::");
                               return colon == std::string::npos ? op.str() : op.substr(colon + 2);
                             })
      .def_property_readonly("op_name", [](const Layer& l) { return l.node().op_name; })
      .def_property_readonly("tensor_shape",
                             [](const Layer& l) {
                               py::tuple t(l.node().shape.size());
                               for (std::size_t i = 0; i < l.node().shape.size(); ++i)
                                 t[i] = l.node().shape[i];
                               return t;
                             })
      .def_property_readonly("tensor_dtype",
                             [](const Layer& l) { return torch_dtype(l.node().dtype); })
      .def_property_readonly("tensor_fsize", [](const Layer& l) { return l.node().bytes; })
      .def_property_readonly("tensor_device", [](const Layer& l) { return l.node().device; })
      .def_property_readonly("parent_layers",
                             [](const Layer& l) { return unique(l.view().parents()); })
      .def_property_readonly("child_layers",
                             [](const Layer& l) { return unique(l.view().children()); })
      .def_property_readonly(
          "has_parents",
          [](const Layer& l) { return boost::in_degree(l.vertex(), l.log().graph()) > 0; })
      .def_property_readonly(
          "has_children",
          [](const Layer& l) { return boost::out_degree(l.vertex(), l.log().graph()) > 0; })
      .def_property_readonly("is_input_layer",
                             [](const Layer& l) { return l.node().kind == tl::NodeKind::input; })
      .def_property_readonly("is_output_layer",
                             [](const Layer& l) { return l.node().kind == tl::NodeKind::output; })
      .def_property_readonly("is_buffer_layer",
                             [](const Layer& l) { return l.node().kind == tl::NodeKind::buffer; })
      .def_property_readonly("buffer_address",
                             [](const Layer& l) -> py::object {
                               if (l.node().kind != tl::NodeKind::buffer) return py::none();
                               return py::str(l.node().io_address);
                             })
      .def_property_readonly("input_output_address",
                             [](const Layer& l) -> py::object {
                               const auto k = l.node().kind;
                               if (k != tl::NodeKind::input && k != tl::NodeKind::output)
                                 return py::none();
                               return py::str(l.node().io_address);
                             })
      .def_property_readonly("is_output_parent",
                             [](const Layer& l) { return l.node().feeds_output; })
      .def_property_readonly("is_output_ancestor",
                             [](const Layer& l) { return l.node().is_output_ancestor; })
      .def_property_readonly("has_input_ancestor",
                             [](const Layer& l) { return l.node().has_input_ancestor; })
      .def_property_readonly("is_internally_generated",
                             [](const Layer& l) { return l.node().is_internally_generated; })
      .def_property_readonly("is_internally_terminated",
                             [](const Layer& l) { return l.node().is_internally_terminated; })
      .def_property_readonly("is_terminal_bool_layer",
                             [](const Layer& l) { return l.node().is_terminal_bool; })
      .def_property_readonly("in_cond_branch",
                             [](const Layer& l) { return l.node().in_cond_branch; })
      .def_property_readonly(
          "cond_branch_start_children",
          [](const Layer& l) {
            const auto& g = l.log().graph();
            std::vector<std::string> out;
            for (auto e : boost::make_iterator_range(boost::out_edges(l.vertex(), g))) {
              if (g[e].is_cond_branch_start) {
                out.push_back(g[boost::target(e, g)].label());
              }
            }
            return out;
          })
      .def_property_readonly("scalar_bool_value",
                             [](const Layer& l) -> py::object {
                               const auto& v = l.node().scalar_bool_value;
                               if (!v) return py::none();
                               return py::bool_(*v);
                             })
      .def_property_readonly("min_distance_from_input",
                             [](const Layer& l) { return l.node().min_distance_from_input; })
      .def_property_readonly("max_distance_from_input",
                             [](const Layer& l) { return l.node().max_distance_from_input; })
      .def_property_readonly("min_distance_from_output",
                             [](const Layer& l) { return l.node().min_distance_from_output; })
      .def_property_readonly("max_distance_from_output",
                             [](const Layer& l) { return l.node().max_distance_from_output; })
      .def_property_readonly("function_is_inplace",
                             [](const Layer& l) { return l.node().is_inplace; })
      .def_property_readonly("func_time_elapsed",
                             [](const Layer& l) { return l.node().time_us / 1e6; })
      .def_property_readonly("computed_with_params",
                             [](const Layer& l) { return !l.node().params.empty(); })
      .def_property_readonly("num_param_tensors",
                             [](const Layer& l) { return l.node().params.size(); })
      .def_property_readonly("parent_param_addresses",
                             [](const Layer& l) {
                               std::vector<std::string> out;
                               for (const auto& p : l.node().params) out.push_back(p.address);
                               return out;
                             })
      .def_property_readonly("parent_param_shapes",
                             [](const Layer& l) {
                               py::list out;
                               for (const auto& p : l.node().params)
                                 out.append(py::tuple(py::cast(p.shape)));
                               return out;
                             })
      .def_property_readonly("num_params_total",
                             [](const Layer& l) {
                               std::int64_t n = 0;
                               for (const auto& p : l.node().params) n += p.numel;
                               return n;
                             })
      // module nesting (TorchLens's names; passes as "address:pass")
      .def_property_readonly("containing_module_origin", containing_module)
      .def_property_readonly("containing_modules_origin_nested", containing_modules)
      // TorchLens 1.0's names for the same two, and the nesting depth
      .def_property_readonly("containing_module", containing_module)
      .def_property_readonly("containing_modules", containing_modules)
      .def_property_readonly("module_nesting_depth",
                             [](const Layer& l) { return l.node().modules.size(); })
      .def_property_readonly("is_computed_inside_submodule",
                             [](const Layer& l) { return !l.node().modules.empty(); })
      .def_property_readonly("module_passes_exited", &Layer::passes_exited)
      .def_property_readonly("modules_exited",
                             [](const Layer& l) {
                               std::vector<std::string> out;
                               for (const auto& p : l.passes_exited()) out.push_back(strip_pass(p));
                               return out;
                             })
      .def_property_readonly("is_submodule_output",
                             [](const Layer& l) {
                               return l.node().kind != tl::NodeKind::output &&
                                      l.node().modules_exited > 0;
                             })
      .def_property_readonly("module_passes_entered", &Layer::passes_entered)
      .def_property_readonly("modules_entered",
                             [](const Layer& l) {
                               std::vector<std::string> out;
                               for (const auto& p : l.passes_entered())
                                 out.push_back(strip_pass(p));
                               return unique(std::move(out));
                             })
      .def_property_readonly("is_submodule_input",
                             [](const Layer& l) { return !l.passes_entered().empty(); })
      .def_property_readonly(
          "module_inferred", [](const Layer& l) { return l.node().module_inferred; },
          "containment placed by the infer-modules pass, not observed")
      .def_property_readonly("lookup_keys",
                             [](const Layer& l) { return l.log().keys_of(l.vertex()); })
      .def("__repr__", &layer_repr);

  py::class_<tl::ModelLog, std::shared_ptr<tl::ModelLog>>(
      m, "ModelLog", "what log_forward_pass returns: every layer pass, indexed like TorchLens")
      .def("__len__", &tl::ModelLog::size)
      .def("__getitem__",
           [](const LogPtr& log, std::int64_t i) { return Layer(log, (*log)[i].vertex()); })
      .def("__getitem__", [](const LogPtr& log,
                             const std::string& key) { return Layer(log, log->at(key).vertex()); })
      .def("__contains__",
           [](const LogPtr& log, const std::string& key) { return log->contains(key); })
      .def("__iter__", [](const LogPtr& log) { return py::iter(py::cast(all_layers(log))); })
      .def("__str__",
           [](const LogPtr& log) {
             std::ostringstream os;
             os << *log;
             return os.str();
           })
      .def("__repr__",
           [](const LogPtr& log) {
             return "<torchlens_cpp ModelLog of " + log->model_name() + ": " +
                    std::to_string(log->size()) + " layer passes>";
           })
      .def_property_readonly("model_name", &tl::ModelLog::model_name)
      .def_property_readonly("layer_list", &all_layers)
      .def_property_readonly("layer_labels",
                             [](const LogPtr& log) {
                               std::vector<std::string> out;
                               for (auto layer : *log) out.push_back(layer.label());
                               return out;
                             })
      .def_property_readonly("layer_labels_no_pass",
                             [](const LogPtr& log) {
                               std::vector<std::string> out;
                               for (auto layer : *log)
                                 out.push_back(std::string(layer->label_no_pass()));
                               return unique(std::move(out));
                             })
      .def_property_readonly(
          "input_layers", [](const LogPtr& log) { return labels_where(log, tl::NodeKind::input); })
      .def_property_readonly(
          "output_layers",
          [](const LogPtr& log) { return labels_where(log, tl::NodeKind::output); })
      .def_property_readonly(
          "buffer_layers",
          [](const LogPtr& log) { return labels_where(log, tl::NodeKind::buffer); })
      .def_property_readonly("layers_with_saved_activations",
                             [](const LogPtr& log) {
                               std::vector<std::string> out;
                               for (auto v : log->saved_layers())
                                 out.push_back(log->graph()[v].label());
                               return out;
                             })
      .def_property_readonly("layers_with_saved_gradients",
                             [](const LogPtr& log) {
                               std::vector<std::string> out;
                               for (auto v : log->gradient_layers())
                                 out.push_back(log->graph()[v].label());
                               return out;
                             })
      .def_property_readonly("has_saved_gradients",
                             [](const LogPtr& log) { return !log->gradient_layers().empty(); })
      .def_property_readonly("tracks_gradients", &tl::ModelLog::tracks_gradients,
                             "True when save_gradients selected layers (hooks wait for backward)")
      .def_property_readonly(
          "returned",
          [](const LogPtr& log) {
            py::list out;
            for (const auto& t : log->returned())
              out.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(t)));
            return out;
          },
          "the tensors forward returned, in output order (kept with save_gradients: build the "
          "loss from them)")
      .def(
          "param_gradient",
          [](const LogPtr& log, const std::string& address) -> py::object {
            const at::Tensor g = log->param_gradient(address);
            if (!g.defined()) return py::none();
            return py::reinterpret_steal<py::object>(THPVariable_Wrap(g));
          },
          py::arg("address"),
          "the gradient that reached a parameter in the latest backward, or None")
      .def_property_readonly("params_with_gradient", &tl::ModelLog::params_with_gradient)
      .def_property_readonly(
          "backward_log",
          [](const LogPtr& log) {
            py::list out;
            for (const auto& s : log->backward_log()) {
              py::dict d;
              d["backward"] = s.backward;
              d["order"] = s.order;
              d["grad_fn"] = s.grad_fn;
              d["sequence_nr"] = s.sequence_nr;
              d["layers"] = s.layers;
              d["params"] = s.params;
              d["start_us"] = s.start_us;
              d["time_us"] = s.time_us;
              out.append(d);
            }
            return out;
          },
          "one dict per autograd node that delivered a saved gradient, in the engine's order")
      .def_property_readonly("num_tensors_total",
                             [](const LogPtr& log) { return log->totals().num_tensors; })
      .def_property_readonly("tensor_fsize_total",
                             [](const LogPtr& log) { return log->totals().tensor_bytes; })
      .def_property_readonly("num_tensors_saved",
                             [](const LogPtr& log) { return log->totals().num_saved; })
      .def_property_readonly("tensor_fsize_saved",
                             [](const LogPtr& log) { return log->totals().saved_bytes; })
      .def_property_readonly("total_param_tensors",
                             [](const LogPtr& log) { return log->totals().num_param_tensors; })
      .def_property_readonly("total_params",
                             [](const LogPtr& log) { return log->totals().num_params; })
      .def_property_readonly("total_params_fsize",
                             [](const LogPtr& log) { return log->totals().param_bytes; })
      .def_property_readonly("is_recurrent",
                             [](const LogPtr& log) { return log->info().is_recurrent; })
      .def_property_readonly("max_recurrent_loops",
                             [](const LogPtr& log) { return log->info().max_recurrent_loops; })
      .def_property_readonly("is_branching",
                             [](const LogPtr& log) { return log->info().is_branching; })
      .def_property_readonly("has_conditional",
                             [](const LogPtr& log) { return log->info().has_conditional; })
      .def_property_readonly("has_conditional_branching", // TorchLens 1.0's name
                             [](const LogPtr& log) { return log->info().has_conditional; })
      .def_property_readonly("conditional_branch_edges",
                             [](const LogPtr& log) {
                               const auto& g = log->graph();
                               std::vector<std::pair<std::string, std::string>> out;
                               for (auto e : boost::make_iterator_range(boost::edges(g))) {
                                 if (g[e].is_cond_branch_start) {
                                   out.emplace_back(g[boost::source(e, g)].label(),
                                                    g[boost::target(e, g)].label());
                                 }
                               }
                               return out;
                             })
      .def_property_readonly("random_seed_used",
                             [](const LogPtr& log) { return log->info().random_seed; })
      .def_property_readonly("elapsed_time_function_calls",
                             [](const LogPtr& log) { return log->info().forward_time_ms / 1e3; })
      .def_property_readonly("elapsed_time_torchlens_logging",
                             [](const LogPtr& log) { return log->info().logging_time_ms / 1e3; })
      .def_property_readonly("module_addresses",
                             [](const LogPtr& log) {
                               std::vector<std::string> out;
                               for (const auto& mi : log->info().modules) out.push_back(mi.address);
                               return out;
                             })
      .def_property_readonly("module_types",
                             [](const LogPtr& log) {
                               py::dict d;
                               for (const auto& mi : log->info().modules)
                                 d[py::str(mi.address)] = mi.type;
                               return d;
                             })
      .def_property_readonly("module_num_passes",
                             [](const LogPtr& log) {
                               py::dict d;
                               for (const auto& mi : log->info().modules)
                                 d[py::str(mi.address)] = mi.num_passes;
                               return d;
                             })
      .def(
          "to_json",
          [](const LogPtr& log) {
            std::ostringstream os;
            tl::io::write_json(os, *log);
            return os.str();
          },
          "the log's metadata as torchlens's JSON document (docs/json.md)")
      .def(
          "to_dot",
          [](const LogPtr& log, const std::string& vis_opt, int nesting_depth,
             const std::string& direction, bool buffers) {
            return tl::io::to_dot(log->graph(),
                                  dot_options(vis_opt, nesting_depth, direction, buffers));
          },
          py::arg("vis_opt") = "unrolled", py::arg("vis_nesting_depth") = 1000,
          py::arg("vis_direction") = "bottomup", py::arg("vis_buffer_layers") = false,
          "the drawing as Graphviz DOT text")
      .def(
          "render_graph",
          [](const LogPtr& log, const std::string& path, const std::string& format,
             const std::string& vis_opt, int nesting_depth, const std::string& direction,
             bool buffers) {
            tl::io::render(*log, tl::io::RenderOptions().path(path).format(format).dot(
                                     dot_options(vis_opt, nesting_depth, direction, buffers)));
          },
          py::arg("path"), py::arg("format") = "", py::arg("vis_opt") = "unrolled",
          py::arg("vis_nesting_depth") = 1000, py::arg("vis_direction") = "bottomup",
          py::arg("vis_buffer_layers") = false,
          "renders the drawing through Graphviz (format from the path's extension)");

  bind_intervene(m);
  bind_extract(m);
}
