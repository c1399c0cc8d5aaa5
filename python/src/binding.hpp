#pragma once
// What the extension's translation units share (python/src/core.cpp: the
// capture, the log, hooks; intervene.cpp: interventions and patching;
// extract.cpp: extraction over many stimuli): the
// model as Python hands it over, its forward as a capture ForwardFn, the
// options from log_forward_pass's arguments, and Python callables held so that
// they are released under the GIL wherever their last C++ owner dies.

#include <torchlens/capture/engine.hpp>
#include <torchlens/log/model_log.hpp>

#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace torch::jit {
struct Module;
}

namespace pybind11::detail {
/// An interned torchlens::Name reads as a Python str, and a str converts to one.
template <>
struct type_caster<torchlens::Name> {
  PYBIND11_TYPE_CASTER(torchlens::Name, const_name("str"));
  bool load(handle src, bool convert) {
    make_caster<std::string> text;
    if (!text.load(src, convert)) return false;
    value = cast_op<std::string&>(text);
    return true;
  }
  static handle cast(const torchlens::Name& n, return_value_policy, handle) {
    return PyUnicode_DecodeUTF8(n.data(), static_cast<Py_ssize_t>(n.size()), nullptr);
  }
};
} // namespace pybind11::detail

namespace torchlens_py {

namespace py = pybind11;

using LogPtr = std::shared_ptr<torchlens::ModelLog>;

/// An eager model with its inputs: what the package's _describe builds.
struct PyModel {
  torchlens::detail::ModelDescription description;
  std::vector<std::pair<std::string, at::Tensor>> inputs;
  py::object forward; // calls the model with its inputs (hooks installed by the caller)
};

/// The ForwardFn of a Python model: called without the GIL (capture runs
/// released), takes it for the Python forward and the conversion of its result.
torchlens::detail::ForwardFn forward_fn(const PyModel& m);

/// A Python callable owned by C++ code (a postfunc, an action, a metric): the
/// last owner may be an autograd hook or a log destroyed where the GIL is not
/// held, so the reference is dropped under the GIL.
using PyRef = std::shared_ptr<py::object>;
PyRef hold(py::object o);

/// Calls Python code from inside the engine (an action, a predicate, a
/// postfunc, a metric). A Python exception leaves as torch's python_error,
/// which torch's op bindings and autograd turn back into the original
/// exception (pybind11's error_already_set would reach the caller as a
/// RuntimeError); the extension's translator restores it elsewhere.
[[noreturn]] void rethrow_python(py::error_already_set& e);
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    rethrow_python(e);
  }
}

/// `'all'`, `'none'`, None, True/False (gradients) or a list of keys.
torchlens::SaveSpec save_spec(const py::object& save, const char* what);

/// The capture options of log_forward_pass's arguments. `intervene`: None, an
/// Interventions, or a tuple (Interventions, reference ModelLog).
torchlens::LogOptions make_options(const py::object& save, std::optional<std::uint64_t> seed,
                                   bool detach, const std::string& output_device,
                                   const py::object& postfunc, bool keep_replay,
                                   const py::object& save_gradients,
                                   const py::object& gradient_postfunc,
                                   const py::object& intervene);

/// The torch::jit::Module behind a torch.jit.ScriptModule.
torch::jit::Module script_module_of(py::handle script_module);
/// forward's arguments as TorchScript converts them (List[Tensor], Dict, ...).
std::vector<c10::IValue> script_inputs(const torch::jit::Module& module, const py::tuple& args,
                                       const py::dict& kwargs);

/// Interventions, replay, rerun and activation patching (intervene.cpp).
void bind_intervene(py::module_& m);
/// Extraction over many stimuli for TorchScript models (extract.cpp).
void bind_extract(py::module_& m);

} // namespace torchlens_py
