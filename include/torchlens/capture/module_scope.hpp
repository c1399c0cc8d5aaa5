#pragma once
/// \file
/// ModuleScope: exact module nesting for C++-frontend models. LibTorch's C++
/// modules have no forward hooks, so capture cannot see a module call; one line
/// at the top of a forward announces it:
///
/// \code
///   torch::Tensor BlockImpl::forward(torch::Tensor x) {
///     torchlens::ModuleScope scope(*this);   // this call of the module, exactly
///     ...
///   }
/// \endcode
///
/// While a capture runs on this thread, every op until the scope closes belongs
/// to this call of the module (its address as named_modules() spells it, and
/// its pass number: a module called three times in a loop has passes 1..3),
/// also for parameter-free modules. Outside a capture it costs one
/// thread-local read. Modules without a scope are placed by parameter
/// ownership and the infer-modules pass; ModuleInfo::exact says which.

namespace torch::nn {
class Module;
}

namespace torchlens {

class ModuleScope {
 public:
  explicit ModuleScope(const torch::nn::Module& module);
  ~ModuleScope();
  ModuleScope(const ModuleScope&) = delete;
  ModuleScope& operator=(const ModuleScope&) = delete;

 private:
  void* recorder_; // the capture that saw the entry, or null
};

} // namespace torchlens
