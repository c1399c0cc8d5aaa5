#pragma once
/// \file
/// Activation patching (TransformerLens's generic_activation_patch, on any op):
/// for each site, and optionally each index along one dimension, the run on one
/// input gets the value the other input gave there; a metric of the output
/// tells how much of the difference that site carries.
///
///   denoise (default): corrupted run, clean value patched in;
///   noise:             clean run, corrupted value patched in;
///   effect = (metric − corrupted metric) / (clean metric − corrupted metric).
///
/// Patches are replayed from the logs (only the cone of the site runs); where
/// replay is not valid (a branch could flip) and a model is at hand, the model
/// is rerun.

#include <torchlens/intervene/engines.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace torchlens::patching {

enum class Direction { denoise, noise };

struct PatchRow;

struct PatchOptions {
  /// Adds a site: every op pass (or edge) it selects is patched on its own.
  PatchOptions& site(Site s) {
    sites_.push_back(std::move(s));
    return *this;
  }
  const std::vector<Site>& sites() const noexcept { return sites_; }
  /// One patch per index along this dimension of each site's value (a
  /// position, a channel, a head); unset: the whole value at once.
  TORCH_ARG(std::optional<std::int64_t>, grid_dim);
  /// A number from the model's first output (a logit difference, a loss).
  TORCH_ARG(std::function<double(const at::Tensor&)>, metric);
  TORCH_ARG(Direction, direction) = Direction::denoise;
  TORCH_ARG(Engine, engine) = Engine::automatic;
  /// Seed of both runs (the model overloads).
  TORCH_ARG(std::uint64_t, seed) = 0;
  /// Called after each patch with (patches done, patches in all) and the row
  /// just computed: a progress bar for long sweeps (the CLI's).
  TORCH_ARG(std::function<void(std::size_t, std::size_t, const PatchRow&)>, progress);

 private:
  std::vector<Site> sites_;
};

struct PatchRow {
  std::string site;        ///< the site as given
  std::string label;       ///< the layer pass patched (`relu_2_5`, `relu_1_2 -> add_1_3`)
  std::int64_t index = -1; ///< the grid index, or -1
  double metric = 0;
  /// (metric − corrupted) / (clean − corrupted) in both directions (NaN when they are
  /// equal): denoising, 1 = the site carries the whole difference; noising, 0 = it does.
  double effect = 0;
  Engine engine = Engine::replay;
};

struct PatchResult {
  double clean_metric = 0, corrupted_metric = 0;
  std::vector<PatchRow> rows;
  void to_json(const std::string& path) const;
  void to_csv(const std::string& path) const;
  friend std::ostream& operator<<(std::ostream& os, const PatchResult& r);
};

/// Runs the model again on the input of `base` with `spec` (resolved on `base`).
using RerunFn = std::function<ModelLog(const ModelLog& base, const Interventions& spec)>;

/// From two logs of the same model (LogOptions().keep_replay(true), every
/// activation saved). Without `rerun`, a patch whose replay diverges throws.
PatchResult activation_patch(const ModelLog& clean, const ModelLog& corrupted,
                             const PatchOptions& options, const RerunFn& rerun = {});

/// Logs both inputs, then patches.
template <class Model, class Input>
PatchResult activation_patch(Model& model, Input clean, Input corrupted,
                             const PatchOptions& options) {
  const LogOptions log_options = LogOptions().keep_replay(true).seed(options.seed());
  const ModelLog clean_log = log_forward_pass(model, clean, log_options);
  const ModelLog corrupted_log = log_forward_pass(model, corrupted, log_options);
  const RerunFn rerun = [&](const ModelLog& base, const Interventions& spec) {
    return torchlens::rerun(model, &base == &clean_log ? clean : corrupted, base, spec).log;
  };
  return activation_patch(clean_log, corrupted_log, options, rerun);
}

} // namespace torchlens::patching
