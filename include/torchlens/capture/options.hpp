#pragma once
/// \file
/// Options of log_forward_pass, in LibTorch's fluent style:
/// `LogOptions().save({"conv2d_1", "features.3"}).output_device(OutputDevice::cpu)`.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torchlens {

class Interventions;
class ModelLog;

/// Which layers keep their activation.
class SaveSpec {
 public:
  enum class Kind { all, none, keys };

  /// Every layer (TorchLens's `layers_to_save="all"`). Saved by reference with
  /// copy-on-write: no tensor is copied unless the model later mutates it.
  static SaveSpec all() { return SaveSpec(Kind::all, {}); }
  /// No activations: metadata only.
  static SaveSpec none() { return SaveSpec(Kind::none, {}); }
  /// Layers selected by key: full label (`conv2d_3_7`, `conv2d_3_7:2`), short
  /// label (`conv2d_3`), module address (`features.3`, `features.3:2`), io address
  /// (`input.0`, `output.0`), ordinal (`"5"`, `"-1"`), or a substring matching
  /// several labels (`"relu"`: all of them). Resolved on a metadata-only pass; a
  /// second pass then saves exactly those tensors.
  static SaveSpec keys(std::vector<std::string> keys) {
    return SaveSpec(Kind::keys, std::move(keys));
  }
  /// Parses the CLI form: `all`, `none`, or `KEY,KEY,...`.
  static SaveSpec parse(const std::string& text);

  SaveSpec() = default;
  /* implicit */ SaveSpec(std::vector<std::string> k) : kind_(Kind::keys), keys_(std::move(k)) {}
  /* implicit */ SaveSpec(std::initializer_list<std::string> k) : kind_(Kind::keys), keys_(k) {}

  Kind kind() const noexcept { return kind_; }
  const std::vector<std::string>& keys() const noexcept { return keys_; }

 private:
  SaveSpec(Kind k, std::vector<std::string> keys) : kind_(k), keys_(std::move(keys)) {}
  Kind kind_ = Kind::all;
  std::vector<std::string> keys_;
};

/// Where saved copies live.
enum class OutputDevice { same, cpu };

/// Options for log_forward_pass (TorchLens §1.1).
struct LogOptions {
  /// Layers whose activations are kept (default: all).
  TORCH_ARG(SaveSpec, save) = SaveSpec::all();
  /// Keep saved activations on the model's device, or move them to the CPU.
  TORCH_ARG(OutputDevice, output_device) = OutputDevice::same;
  /// Detach saved activations from the autograd graph.
  TORCH_ARG(bool, detach) = false;
  /// Applied to each saved activation (its own ops are not logged).
  TORCH_ARG(std::function<at::Tensor(const at::Tensor&)>, postfunc);
  /// Seed for torch's generators before the forward pass; a random one is drawn
  /// (and recorded in the log) when unset.
  TORCH_ARG(std::optional<std::uint64_t>, seed);
  /// Run the default pass pipeline (labels, recurrence, ...) on the graph.
  TORCH_ARG(bool, postprocess) = true;
  /// Group repeated blocks into layers with passes (TorchLens's `detect_loops`);
  /// false: only ops applying the same function to the same parameters are
  /// passes of one layer (group-recurrences' `detect_loops`).
  TORCH_ARG(bool, detect_loops) = true;
  /// The smallest parameter-free block that two back-to-back repeats must hold
  /// to be a loop when neither op is in a module or a buffer (group-recurrences'
  /// `min_param_free_loop_body`: 2, as later TorchLens releases; 1: TorchLens 1.0).
  TORCH_ARG(int, min_param_free_loop_body) = 2;
  /// Reuse the pipeline's result when this capture's raw graph is the one the
  /// last two captures of the same model on this thread gave (compared field
  /// by field, every field but the op times and the saved flags): the labels,
  /// layers, modules and distances are the pipeline's own, copied instead of
  /// recomputed (graphs up to 4 096 vertices; docs/capture.md). false: the
  /// pipeline runs on every capture.
  TORCH_ARG(bool, reuse_postprocess) = true;
  /// Keep what re-executing each op needs (operator, non-tensor arguments,
  /// generator state); validation turns it on.
  TORCH_ARG(bool, keep_replay) = false;
  /// A budget for the saved activations, in bytes (0: none). When saving one
  /// more would exceed it, the capture stops with a c10::Error naming that op
  /// (before the operating system kills the process for memory).
  TORCH_ARG(std::int64_t, max_saved_bytes) = 0;
  /// While a capture runs, the forward's tensors are allocated from
  /// torchlens's capture pool, which keeps their memory in the process when the
  /// log is freed, for the next capture (capture/memory.hpp: its limit, and
  /// release_capture_memory()); on glibc, a long capture (2 048 ops and more)
  /// and the freeing of its log run with glibc's fastbins off. false:
  /// LibTorch's allocator and glibc's settings, as in a plain forward.
  TORCH_ARG(bool, reuse_memory) = true;
  /// Op outputs whose gradient the log keeps when the caller runs backward
  /// (`loss.backward()`, `torch::autograd::grad`) after log_forward_pass
  /// returned: all, none (the default) or the same keys as `save`. Autograd
  /// hooks on the graph's own nodes record them; the caller's tensors are never
  /// touched (docs/gradients.md). The forward must run with grad enabled.
  TORCH_ARG(SaveSpec, save_gradients) = SaveSpec::none();
  /// Applied to each saved gradient (as `postfunc` to activations).
  /// `output_device` and `detach` apply to gradients too.
  TORCH_ARG(std::function<at::Tensor(const at::Tensor&)>, gradient_postfunc);

  /// With `save` naming layers (SaveSpec::keys): the pass that saves them stops
  /// the forward right after the last op whose activation is kept, when nothing
  /// later is needed (TorchLens's `halt`). The log's graph is still the whole
  /// model's (the first, metadata-only pass runs it all); only the saving pass
  /// is cut short. Extraction (torchlens extract) stops early by default.
  /// Ignored with save_gradients (a backward needs the whole forward).
  TORCH_ARG(bool, stop_early) = false;

 public:
  /// Interventions applied while the model runs (the live engine,
  /// intervene/interventions.hpp): the saved activations are the changed
  /// values. A spec with label, module or edge sites needs the reference log
  /// its labels come from.
  LogOptions& intervene(const Interventions& spec);
  LogOptions& intervene(const Interventions& spec, const ModelLog& reference);
  const std::shared_ptr<const Interventions>& interventions() const noexcept {
    return interventions_;
  }

 private:
  std::shared_ptr<const Interventions> interventions_;
};

} // namespace torchlens
