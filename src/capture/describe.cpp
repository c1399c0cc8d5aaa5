// Model descriptions (parameters, buffers, modules by address) for both kinds of
// model, the Sequential driver, and the TorchScript entry point.

#include "libtorch_compat.hpp"
#include "recorder.hpp"
#include "script_model.hpp"

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/torch_error.hpp>

#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/parameterdict.h>
#include <torch/nn/modules/container/parameterlist.h>
#include <torch/nn/modules/container/sequential.h>

#include <string>
#include <string_view>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace torchlens {
namespace detail {

std::string module_type_name(const torch::nn::Module& m) {
  std::string_view name = m.name();
  if (const auto colon = name.rfind("::"); colon != std::string_view::npos) {
    name.remove_prefix(colon + 2);
  }
  if (name.size() > 4 && name.substr(name.size() - 4) == "Impl") name.remove_suffix(4);
  return std::string(name);
}

namespace {

/// `prefix.name`, or `name` at the root; one allocation.
std::string joined(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  std::string out;
  out.reserve(prefix.size() + 1 + name.size());
  out.append(prefix).append(1, '.').append(name);
  return out;
}

/// A module's dynamic type is a container (ModuleList, ModuleDict,
/// ParameterList, ParameterDict, or a class derived from one): it has no
/// forward of its own. Asked of every module on every capture, where four
/// failing dynamic_casts cost ~1 300 instructions, so the answer is kept per
/// thread by the type's type_info, checked against its mangled name (a type
/// whose library was unloaded cannot lend its answer to another at the address).
bool is_container(const torch::nn::Module& m) {
  thread_local std::unordered_map<const std::type_info*, std::pair<std::string, bool>> known;
  const std::type_info& type = typeid(m);
  auto it = known.find(&type);
  if (it != known.end() && it->second.first == type.name()) return it->second.second;
  const bool container = dynamic_cast<const torch::nn::ModuleListImpl*>(&m) != nullptr ||
                         dynamic_cast<const torch::nn::ModuleDictImpl*>(&m) != nullptr ||
                         dynamic_cast<const torch::nn::ParameterListImpl*>(&m) != nullptr ||
                         dynamic_cast<const torch::nn::ParameterDictImpl*>(&m) != nullptr;
  known.insert_or_assign(&type, std::make_pair(std::string(type.name()), container));
  return container;
}

} // namespace

ModelDescription describe(const torch::nn::Module& m) {
  ModelDescription d;
  d.name = module_type_name(m);
  d.root = &m;
  // LibTorch's own pre-order walk (the root first, as ""), with each module's
  // dotted address: each module's parameters and buffers, then its children's
  // subtrees, the order and the addresses named_parameters(), named_buffers()
  // and named_modules() give. apply() reads the children where they are;
  // named_children() copied them, with their index, module by module.
  m.apply([&d](const std::string& address, const torch::nn::Module& mod) {
    if (!address.empty()) {
      d.modules.push_back({address, module_type_name(mod), &mod, !is_container(mod)});
    }
    for (const auto& p : compat::own_parameters(mod)) {
      if (p.value().defined()) d.params.push_back({joined(address, p.key()), p.value()});
    }
    for (const auto& b : mod.named_buffers(/*recurse=*/false)) {
      d.buffers.push_back({joined(address, b.key()), b.value()});
    }
  });
  return d;
}

namespace {
std::string jit_type_name(const torch::jit::Module& m) {
  const auto& qual = m.type()->name();
  return qual ? qual->name() : std::string("Module");
}
} // namespace

ModelDescription describe(const torch::jit::Module& m) {
  ModelDescription d;
  d.name = jit_type_name(m);
  d.script = &m;
  d.root = m._ivalue().get();
  for (const auto& p : m.named_parameters(/*recurse=*/true)) {
    d.params.push_back({p.name, p.value});
  }
  for (const auto& b : m.named_buffers(/*recurse=*/true)) {
    d.buffers.push_back({b.name, b.value});
  }
  // Other tensor attributes (TorchLens treats every non-parameter tensor
  // attribute as a buffer): e.g. a scripted LSTM's `_flat_weights` list, whose
  // tensors are attributes distinct from the registered parameters once saved.
  std::unordered_set<const c10::TensorImpl*> known;
  for (const auto& t : d.params) known.insert(t.tensor.unsafeGetTensorImpl());
  for (const auto& t : d.buffers) known.insert(t.tensor.unsafeGetTensorImpl());
  auto add_attribute = [&](std::string address, const at::Tensor& t) {
    if (t.defined() && known.insert(t.unsafeGetTensorImpl()).second) {
      d.buffers.push_back({std::move(address), t});
    }
  };
  for (const auto& a : m.named_attributes(/*recurse=*/true)) {
    if (a.value.isTensor()) {
      add_attribute(a.name, a.value.toTensor());
    } else if (a.value.isTensorList() || a.value.isList()) {
      const auto& list = a.value.toListRef();
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (!list[i].isTensor()) continue;
        std::string address = a.name;
        address += '.';
        address += std::to_string(i);
        add_attribute(std::move(address), list[i].toTensor());
      }
    }
  }
  for (const auto& sub : m.named_modules()) {
    if (!sub.name.empty()) {
      d.modules.push_back({sub.name, jit_type_name(sub.value), sub.value._ivalue().get(),
                           sub.value.find_method("forward").has_value()});
    }
  }
  return d;
}

std::vector<std::pair<std::string, at::Tensor>> jit_input_tensors(
    const std::vector<c10::IValue>& inputs) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::vector<at::Tensor> flat;
    flatten_outputs(inputs[i], flat);
    for (std::size_t j = 0; j < flat.size(); ++j) {
      std::string address = "input."; // (built stepwise: g++ 12 -Wrestrict false positive)
      address += std::to_string(i);
      if (!inputs[i].isTensor()) {
        address += '.';
        address += std::to_string(j);
      }
      tensors.emplace_back(std::move(address), flat[j]);
    }
  }
  return tensors;
}

torch::jit::Module capture_copy(const torch::jit::Module& m) {
  return m.clone(/*inplace=*/true);
}

at::Tensor run_sequential(torch::nn::SequentialImpl& seq, at::Tensor x) {
  for (auto& any : seq) {
    const auto module = any.ptr();
    const ModuleScope scope(*module);
    if (auto* nested = dynamic_cast<torch::nn::SequentialImpl*>(module.get())) {
      x = run_sequential(*nested, x);
    } else {
      x = any.forward(x);
    }
  }
  return x;
}

} // namespace detail

ModelLog log_forward_pass(torch::jit::Module& model, const std::vector<c10::IValue>& inputs,
                          const LogOptions& options) {
  detail::ScriptLease run(model); // the capture copy, cached per model
  detail::ForwardFn forward = [&](detail::Recorder*) { return run.forward(inputs); };
  return detail::run_logged(run.description(), detail::jit_input_tensors(inputs), forward, options);
}

} // namespace torchlens
