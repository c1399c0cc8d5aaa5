#pragma once
/// \file
/// Gradients of a logged forward pass (LogOptions::save_gradients): what the
/// backward log holds. The log's gradient store is filled by autograd hooks
/// while the caller runs backward, after log_forward_pass returned; read it
/// through ModelLog (gradient, param_gradient, backward_log). See
/// docs/gradients.md.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace torchlens {

/// One autograd node the engine ran that delivered a saved gradient (or a
/// parameter's): TorchLens v2's GradFnPassLog.
struct BackwardStep {
  std::size_t backward = 1;        ///< which backward run of this log (1, 2, ...)
  std::size_t order = 0;           ///< position in the engine's order within that run
  std::string grad_fn;             ///< the node's name (`ConvolutionBackward0`)
  std::uint64_t sequence_nr = 0;   ///< autograd's sequence number of the node
  std::vector<std::string> layers; ///< layer passes (labels) whose gradient it received
  std::vector<std::string> params; ///< parameter addresses (gradient accumulators)
  double start_us = 0;             ///< when it ran, since this backward's first step
  double time_us = 0;              ///< the node's own time (pre-hook to post-hook)
};

} // namespace torchlens
