#pragma once
/// \file
/// Activation validation as a pass: insert it anywhere in a pipeline run on a
/// captured graph, e.g. after a pass of your own that rewrites the graph, to
/// check that every op still re-executes to its saved activation (TorchLens's
/// validation, §4.7). Torch-side, so it lives here and not in passes/.

#include <torchlens/config.hpp>
#include <torchlens/error.hpp>
#include <torchlens/pipeline/facts.hpp>
#include <torchlens/pipeline/pass.hpp>
#include <torchlens/validate/validate.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace torchlens::passes {

/// Options of validate-activations (`ValidateActivationsPass::Options`).
struct ValidateActivationsOptions {
  TORCHLENS_OPTIONS(
      // false: count the failing layers instead of throwing.
      (bool, throw_on_failure, true),
      // Tolerances and switches of the validation itself.
      (ValidateOptions, validate));
};

/// Re-executes every op of the graph from the saved activations of its parents
/// (from a log captured with keep_replay, every activation saved) and checks the
/// outputs against the plain forward pass; throws InvariantError (a
/// std::logic_error) naming the failing layers, or only counts them with Options().throw_on_failure(false).
struct ValidateActivationsPass : pass_info<ValidateActivationsPass, ValidateActivationsOptions> {
  static constexpr std::string_view name = "validate-activations";
  static constexpr std::string_view description =
      "re-execute every op from its parents' saved activations (TorchLens validation)";
  /// The output nodes carry the comparison with the plain forward pass.
  using consumes = facts::list<facts::OutputNodesAdded>;
  /// Re-executes ops on the side; the graph is not changed.
  using invalidates = facts::none;
  static constexpr bool is_idempotent = true;

  /// `log` supplies the activations and replay records (by OpNode id); it must
  /// outlive the pass. `ground_truth`: the plain forward pass's outputs.
  ValidateActivationsPass(const ModelLog& log, std::vector<at::Tensor> ground_truth, Options o = {})
      : pass_info(std::move(o)), log_(&log), truth_(std::move(ground_truth)) {}

  /// Statistics "ops re-executed", "perturbations", "failing layers".
  PassResult run(ModelGraph& g, PassContext&) const {
    if (log_->replay() == nullptr) {
      throw UsageError("validate-activations needs a log captured with keep_replay(true)");
    }
    const ValidationReport report =
        validate_graph(g, log_->activations_by_id(), *log_->replay(), truth_, options.validate());
    PassResult result;
    result.changed = false; // re-executes ops on the side
    result.add("ops re-executed", report.layers_checked)
        .add("perturbations", report.perturbations)
        .add("failing layers", static_cast<std::int64_t>(report.failures.size()));
    if (!report.valid && options.throw_on_failure()) {
      std::string msg = "validate-activations: ";
      for (const auto& f : report.failures) msg += f.label + " ";
      throw InvariantError(msg + "failed");
    }
    return result;
  }

 private:
  const ModelLog* log_;
  std::vector<at::Tensor> truth_;
};

} // namespace torchlens::passes
