#pragma once
/// \file
/// The capture engine's narrow interface, used by the log_forward_pass and
/// validate_saved_activations templates: what capture needs to know about a
/// model (ModelDescription), its forward as a callable (ForwardFn), and the
/// driver that captures and returns a log (run_logged). The engine itself (the
/// Recorder, the capture session) and everything that touches the dispatcher
/// live in src/capture/.

#include <torchlens/capture/options.hpp>
#include <torchlens/log/model_log.hpp>

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}
namespace torch::jit {
struct Module;
}

namespace torchlens::detail {

class Recorder;
class TorchScriptIndex;
struct DescriptionIndex;

/// What capture needs to know about a model before it runs: its name, its
/// parameters and buffers by address, its modules.
struct ModelDescription {
  struct NamedTensor {
    std::string address; ///< `layer1.0.conv1.weight`
    at::Tensor tensor;
  };
  struct NamedModule {
    std::string address;            ///< `layer1.0` (as named_modules() spells it)
    std::string type;               ///< `BasicBlock`
    const void* identity = nullptr; ///< the torch::nn::Module or TorchScript object
    /// False for containers that are iterated or indexed, never called
    /// (ModuleList, ModuleDict, ParameterList, ParameterDict): no op runs in
    /// a call of theirs, so capture never places one there.
    bool callable = true;
    /// Its own calls are announced but none inside it are (a TorchScript
    /// submodule of an eager Python model: the interpreter runs its children
    /// without Python hooks): below it, as in a C++-frontend model, an op is
    /// placed by the parameters it reads, even when `calls_observed`.
    bool opaque = false;
  };
  std::string name;
  std::vector<NamedTensor> params;
  std::vector<NamedTensor> buffers;
  std::vector<NamedModule> modules; ///< every submodule, root excluded
  const void* root = nullptr;       ///< identity of the root module
  /// The TorchScript module (module calls come from its interpreter), or null
  /// for a C++-frontend model. Not owned: it outlives every capture of it.
  const torch::jit::Module* script = nullptr;
  /// The index of `script`'s graphs when a cache already built it (src/capture/
  /// script_model.hpp); null: each capture builds its own.
  std::shared_ptr<const TorchScriptIndex> script_index;
  /// Every module call is announced (the Python binding's forward hooks): an
  /// op is never placed in a module by the parameters it reads (except below
  /// an `opaque` module).
  bool calls_observed = false;
  /// What every capture derives from the fields above (interned addresses and
  /// types, the modules by identity and by address, each parameter's enclosing
  /// modules): made by describe(), so that a description kept between captures
  /// (TorchScript's lease, a C++ model's KeptDescription, an Extractor's)
  /// derives it once. Null in a description assembled by hand: each capture then
  /// derives its own.
  std::shared_ptr<const DescriptionIndex> index;
};

ModelDescription describe(const torch::nn::Module& m);
ModelDescription describe(const torch::jit::Module& m);

/// describe(m) for a C++-frontend model, kept per thread for the next capture
/// (describing a model and deriving its index cost more than a small model's
/// forward). A model captured again on the same thread reuses its description
/// while the module tree is the one described: the same module objects of the
/// same dynamic types under the same names, the same parameter and buffer
/// tensors under the same names (checked by one walk of the tree, each time).
/// Between captures a kept description holds no tensor, only weak references
/// (the model's memory is the model's), and a few models are kept per thread.
/// One lease of a model at a time per thread: a nested one describes afresh.
class KeptDescription {
 public:
  explicit KeptDescription(const torch::nn::Module& m);
  ~KeptDescription();
  KeptDescription(const KeptDescription&) = delete;
  KeptDescription& operator=(const KeptDescription&) = delete;
  [[nodiscard]] const ModelDescription& get() const { return *description_; }
  /// This lease reused a kept description (tests, benchmarks).
  [[nodiscard]] bool reused() const { return reused_; }

  struct Entry;

 private:
  Entry* entry_ = nullptr;                ///< the kept entry leased, or null
  std::unique_ptr<ModelDescription> own_; ///< otherwise, a description of its own
  const ModelDescription* description_ = nullptr;
  bool reused_ = false;
};

/// The module a capture runs: a copy sharing every parameter, buffer and
/// attribute value with `m` but with methods of its own. A TorchScript method
/// keeps the executor (and the graph: inlined once optimisation has run) of
/// its first call, so a capture of a model the caller already ran would see
/// inlined calls without module frames, and a caller's later runs would keep
/// the capture's unoptimised graph. The copy has fresh executors, created
/// under capture's settings; the caller's model is left as it was.
torch::jit::Module capture_copy(const torch::jit::Module& m);

/// The model's forward. Under capture it receives the recorder so that drivers
/// (Sequential) can announce module calls; plain runs (ground truth) get null.
using ForwardFn = std::function<c10::IValue(Recorder*)>;

/// Runs `forward` once under capture (twice when a key list selects layers),
/// applies the default pipeline, returns the log. `inputs` are the tensors
/// handed to forward, with their addresses (`input.0`), in order.
ModelLog run_logged(const ModelDescription& model,
                    const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                    const ForwardFn& forward, const LogOptions& options);

/// `Conv2d` from `torch::nn::Conv2dImpl`.
std::string module_type_name(const torch::nn::Module& m);

} // namespace torchlens::detail
