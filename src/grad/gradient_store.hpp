#pragma once
// Private to src/: the gradient store a ModelLog holds (LogOptions::save_gradients)
// and the autograd hooks that fill it while the caller runs backward
// (docs/gradients.md). The hooks sit on the graph's own nodes, found when each
// op's output was made (Recorder::note_gradient_edge), hold the store weakly and
// never change a gradient: the caller's `.grad` is what it would be without
// logging.

#include <torchlens/capture/engine.hpp>
#include <torchlens/log/model_log.hpp>

#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/edge.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace torchlens::detail {

class GradientStore {
 public:
  using Clock = std::chrono::steady_clock;

  explicit GradientStore(const LogOptions& options);

  /// A hook saw the gradients arriving at `node`: begins a step of the
  /// backward log (a node seen twice starts a new backward run). Returns the
  /// step's index.
  std::size_t begin_step(const void* node, std::string name, std::uint64_t sequence_nr);
  /// The node of step `step` finished (its post hook).
  void end_step(std::size_t step);
  /// Saves the gradient of op output `id` (postfunc, device, detach applied).
  void record(std::size_t step, std::size_t id, const at::Tensor& grad);
  /// Saves the gradient reaching parameter `address`.
  void record_param(std::size_t step, const std::string& address, const at::Tensor& grad);

  /// The saved gradient of op output `id`, or an undefined tensor.
  at::Tensor gradient(std::size_t id) const;
  at::Tensor param_gradient(const std::string& address) const;
  std::vector<std::string> params_with_gradient() const;
  /// Ids with a saved gradient.
  std::vector<std::size_t> ids_with_gradient() const;

  struct Step {
    std::size_t backward = 0, order = 0;
    std::string grad_fn;
    std::uint64_t sequence_nr = 0;
    std::vector<std::size_t> ids;
    std::vector<std::string> params;
    Clock::time_point start;
    double start_us = 0, time_us = 0;
  };
  std::vector<Step> steps() const;

  /// What forward returned (its tensors, in output order).
  std::vector<at::Tensor> returned;
  /// Ids selected for saving that are in the autograd graph (hooked).
  std::unordered_set<std::size_t> hooked;
  /// Ids selected for saving that are not (no grad_fn, no accumulator).
  std::unordered_set<std::size_t> not_in_graph;

 private:
  at::Tensor prepare(const at::Tensor& grad) const;

  LogOptions options_;
  mutable std::mutex mutex_;
  std::vector<at::Tensor> by_id_;
  std::map<std::string, at::Tensor> params_;
  std::vector<Step> steps_;
  std::unordered_set<const void*> seen_; // nodes of the current backward run
  std::size_t backward_ = 0;
  Clock::time_point backward_start_;
};

/// Refuses save_gradients when autograd is off on this thread (no-grad or
/// inference mode): nothing the model computes would have a gradient.
void check_gradients_possible(const LogOptions& options);

/// Hooks the autograd nodes that will deliver the gradients of the op outputs
/// `selected` (by OpNode::id; `edges` from Recorder::grad_edges) and the
/// accumulators of `params`, so that the next backward through them fills
/// `store` (held weakly by the hooks). Ids without an edge go to
/// `store->not_in_graph`, the others to `store->hooked`. attach_gradients and
/// extract's per-stimulus gradients (src/extract) share it.
void hook_gradients(const std::shared_ptr<GradientStore>& store,
                    const std::vector<torch::autograd::Edge>& edges,
                    const std::unordered_set<std::size_t>& selected,
                    const std::vector<ModelDescription::NamedTensor>& params);

/// After the capture whose tensors the log holds: makes the log's gradient
/// store and hooks the autograd nodes of the selected op outputs (`edges`, by
/// OpNode::id, from Recorder::grad_edges) and the accumulators of the model's
/// parameters. `output` is what forward returned.
void attach_gradients(ModelLog& log, const ModelDescription& model,
                      const std::vector<torch::autograd::Edge>& edges, const c10::IValue& output);

} // namespace torchlens::detail
