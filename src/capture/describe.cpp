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

#include <algorithm>
#include <memory>
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

namespace {

/// One module of a described tree, as the kept description checks it.
struct Visited {
  const torch::nn::Module* module;
  const std::type_info* type;
};

/// describe(m), and the modules walked (the root first) into `walk` when given.
ModelDescription describe_tree(const torch::nn::Module& m, std::vector<Visited>* walk) {
  ModelDescription d;
  d.name = module_type_name(m);
  d.root = &m;
  // LibTorch's own pre-order walk (the root first, as ""), with each module's
  // dotted address: each module's parameters and buffers, then its children's
  // subtrees, the order and the addresses named_parameters(), named_buffers()
  // and named_modules() give. apply() reads the children where they are;
  // named_children() copied them, with their index, module by module.
  m.apply([&d, walk](const std::string& address, const torch::nn::Module& mod) {
    if (walk != nullptr) walk->push_back({&mod, &typeid(mod)});
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
  d.index = std::make_shared<const DescriptionIndex>(d);
  return d;
}

/// `full` is `prefix.key` (`key` at the root).
bool is_joined(std::string_view full, std::string_view prefix, std::string_view key) {
  if (prefix.empty()) return full == key;
  return full.size() == prefix.size() + 1 + key.size() && full.starts_with(prefix) &&
         full[prefix.size()] == '.' && full.ends_with(key);
}

} // namespace

ModelDescription describe(const torch::nn::Module& m) {
  return describe_tree(m, nullptr);
}

/// A C++ model's description kept between its captures on one thread.
struct KeptDescription::Entry {
  const torch::nn::Module* root = nullptr;
  std::vector<Visited> walk; ///< the modules described, the root first
  /// Every parameter, then every buffer, described: weak references keep a
  /// dead tensor's address from being taken by another one, so that an
  /// address seen again is the tensor described.
  std::vector<c10::weak_intrusive_ptr<c10::TensorImpl>> pins;
  ModelDescription description; ///< its tensors undefined between leases
  bool busy = false;

  /// Describes `m` afresh.
  void describe(const torch::nn::Module& m) {
    root = &m;
    walk.clear();
    description = describe_tree(m, &walk);
    pins.clear();
    pins.reserve(description.params.size() + description.buffers.size());
    for (const auto& p : description.params) pins.emplace_back(p.tensor.getIntrusivePtr());
    for (const auto& b : description.buffers) pins.emplace_back(b.tensor.getIntrusivePtr());
  }

  /// `m` is the tree described; its tensors are put back into the description.
  /// One walk, no allocation beyond LibTorch's own (apply()'s addresses, a
  /// copy of each module's buffer list).
  bool check(const torch::nn::Module& m) {
    auto& d = description;
    std::size_t module = 0, param = 0, buffer = 0;
    bool same = true;
    const auto pinned = [&](std::size_t i, const at::Tensor& t) {
      return pins[i]._unsafe_get_target() == t.unsafeGetTensorImpl();
    };
    m.apply([&](const std::string& address, const torch::nn::Module& mod) {
      if (!same) return;
      same = module < walk.size() && walk[module].module == &mod &&
             walk[module].type == &typeid(mod) &&
             (module == 0 || d.modules[module - 1].address == address);
      ++module;
      for (const auto& p : compat::own_parameters(mod)) {
        if (!same) return;
        if (!p.value().defined()) continue;
        same = param < d.params.size() && pinned(param, p.value()) &&
               is_joined(d.params[param].address, address, p.key());
        if (same) d.params[param++].tensor = p.value();
      }
      for (const auto& b : mod.named_buffers(/*recurse=*/false)) {
        if (!same) return;
        same = buffer < d.buffers.size() && pinned(d.params.size() + buffer, b.value()) &&
               is_joined(d.buffers[buffer].address, address, b.key());
        if (same) d.buffers[buffer++].tensor = b.value();
      }
    });
    return same && module == walk.size() && param == d.params.size() && buffer == d.buffers.size();
  }

  /// Between leases the description holds no tensor.
  void release() {
    for (auto& p : description.params) p.tensor = at::Tensor();
    for (auto& b : description.buffers) b.tensor = at::Tensor();
    busy = false;
  }
};

namespace {
/// A thread's kept descriptions, the most recently leased last.
constexpr std::size_t kKeptModels = 4;
thread_local std::vector<std::unique_ptr<KeptDescription::Entry>> kept_descriptions;
} // namespace

KeptDescription::KeptDescription(const torch::nn::Module& m) {
  auto& kept = kept_descriptions;
  auto it = std::find_if(kept.begin(), kept.end(), [&](const auto& e) { return e->root == &m; });
  if (it != kept.end() && (*it)->busy) {
    // a capture of this model inside one of its captures: a description of its own
    own_ = std::make_unique<ModelDescription>(describe(m));
    description_ = own_.get();
    return;
  }
  if (it == kept.end()) {
    if (kept.size() >= kKeptModels) {
      auto idle = std::find_if(kept.begin(), kept.end(), [](const auto& e) { return !e->busy; });
      if (idle != kept.end()) kept.erase(idle); // the least recently leased
    }
    kept.push_back(std::make_unique<Entry>());
    kept.back()->describe(m);
  } else {
    std::rotate(it, it + 1, kept.end()); // now the most recently leased
    Entry& e = *kept.back();
    reused_ = e.check(m);
    if (!reused_) e.describe(m);
  }
  entry_ = kept.back().get();
  entry_->busy = true;
  description_ = &entry_->description;
}

KeptDescription::~KeptDescription() {
  if (entry_ != nullptr) entry_->release();
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
  d.index = std::make_shared<const DescriptionIndex>(d);
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
