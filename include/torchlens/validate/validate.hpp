#pragma once
/// \file
/// Validation of saved activations by re-execution (TorchLens's
/// validate_saved_activations; the paper's "Validating the accuracy of saved
/// activations"): the log's structure must be consistent (TorchLens's metadata
/// invariants); outputs must equal a plain forward pass exactly; every op,
/// re-run from its parents' saved activations, must reproduce its own saved
/// activation; and perturbing each parent must change the result, unless the
/// op provably cannot see that parent's values (docs/validation.md lists the
/// rules; every exemption is counted and listed with its reason).

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/config.hpp>

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace torchlens {

/// Why a layer failed validation.
enum class FailureKind {
  output_mismatch, ///< an output node differs from the plain forward pass
  mismatch,        ///< re-running the op from its parents' saved values differs
  no_effect,       ///< perturbing a parent did not change the op's output
  cannot_replay,   ///< the op could not be called again (reason in `detail`)
  unreached,       ///< no saved activation or no record to check it against
  invariant,       ///< the log's structure is inconsistent (reason in `detail`)
};

/// One failing layer.
struct LayerFailure {
  std::string label;
  FailureKind kind;
  std::string detail;   ///< human-readable reason
  double max_error = 0; ///< for mismatches: max |replayed - saved|
};

/// A perturbation excused from the "must change the output" rule, and why.
struct Exemption {
  std::string label;  ///< the layer
  std::string parent; ///< the parent that was (or would have been) perturbed
  std::string reason; ///< `structural argument`, `special argument`, ...
};

/// Tolerances and switches of validation.
struct ValidateOptions {
  TORCHLENS_OPTIONS(
      // Floating-point tolerance of a replay; deterministic CPU ops match exactly
      // in practice, this covers reductions whose order may differ.
      (double, atol, 3e-6), (double, rtol, 1e-5),
      // Also require that perturbing each parent changes the output.
      (bool, perturb, true));
};

/// The result: truthy when valid; printable.
struct ValidationReport {
  bool valid = true;
  int layers_checked = 0; ///< ops re-executed
  int perturbations = 0;  ///< parent perturbations tried (or exempted)
  int exempted = 0;       ///< perturbations excused by an exemption
  std::vector<LayerFailure> failures;
  std::vector<Exemption> exemptions; ///< one per exempted perturbation, with its reason
  double time_ms = 0;
  explicit operator bool() const noexcept { return valid; }
  /// Counts and lists an excused perturbation.
  void exempted_perturbation(std::string label, std::string parent, std::string reason) {
    ++exempted;
    exemptions.push_back({std::move(label), std::move(parent), std::move(reason)});
  }
  /// Printed: the verdict, the counts, every failure, and the exemptions
  /// grouped by reason (count and first layers).
  friend std::ostream& operator<<(std::ostream& os, const ValidationReport& r);
};

/// Checks a log captured with `keep_replay(true)` and every activation saved,
/// against the plain forward pass's outputs (in the order of the output nodes).
ValidationReport validate_log(const ModelLog& log, const std::vector<at::Tensor>& ground_truth,
                              const ValidateOptions& options = {});

/// The same on what validation reads, without a log: a graph, its saved
/// activations by OpNode id (every one saved) and its replay records (a log's
/// `graph()`, `activations_by_id()` and `*replay()`). For passes and tools that
/// hold a graph rather than a log (ValidateActivationsPass).
ValidationReport validate_graph(const ModelGraph& graph,
                                const std::vector<at::Tensor>& activations_by_id,
                                const detail::ReplayRecords& replay,
                                const std::vector<at::Tensor>& ground_truth,
                                const ValidateOptions& options = {});

namespace detail {
/// `restore`, when set, runs after each of the two forward passes, beside the
/// restoration of parameter, buffer and input values (TorchScript: attributes
/// that forward reassigned are set back).
ValidationReport validate_run(const ModelDescription& model,
                              const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                              const ForwardFn& forward, LogOptions log_options,
                              const ValidateOptions& options,
                              const std::function<void()>& restore = {});
} // namespace detail

/// Runs the plain model for ground truth (restoring parameters and buffers it
/// changed), logs it saving everything, and validates the log.
ValidationReport validate_saved_activations(torch::jit::Module& model,
                                            const std::vector<c10::IValue>& inputs,
                                            const LogOptions& log_options = {},
                                            const ValidateOptions& options = {});

/// The same for a C++-frontend module (`input`: one argument or a std::tuple).
template <class Model, class Input>
ValidationReport validate_saved_activations(Model& model, Input input,
                                            const LogOptions& log_options = {},
                                            const ValidateOptions& options = {}) {
  torch::nn::Module& root = detail::module_of(model);
  const auto args = detail::as_args(std::move(input));
  const detail::KeptDescription described(root);
  return detail::validate_run(described.get(), detail::input_tensors(args),
                              detail::forward_fn(model, root, args), log_options, options);
}

} // namespace torchlens
