#pragma once
// The built-in model of `torchlens demo`: small, but with everything torchlens
// handles: nested modules (exact: each forward opens a ModuleScope), a residual
// branch that merges, a loop over shared weights, an `if` on a tensor value,
// injected noise, and buffers.

#include <torchlens/capture/module_scope.hpp>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

namespace torchlens::cli {

struct ResidualBlockImpl : torch::nn::Module {
  explicit ResidualBlockImpl(std::int64_t c)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)))),
        bn1(register_module("bn1", torch::nn::BatchNorm2d(c))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    const torchlens::ModuleScope scope(*this); // exact nesting and passes
    auto y = torch::relu(bn1(conv1(x)));
    y = conv2(y);
    return torch::relu(y + x); // the branch merges
  }
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::Conv2d conv2;
};
TORCH_MODULE(ResidualBlock);

struct DemoNetImpl : torch::nn::Module {
  DemoNetImpl()
      : stem(register_module("stem",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)))),
        block1(register_module("block1", ResidualBlock(8))),
        block2(register_module("block2", ResidualBlock(8))),
        shared(register_module("shared", torch::nn::Linear(8, 8))),
        head(register_module("head", torch::nn::Linear(8, 4))) {}
  torch::Tensor forward(torch::Tensor x) {
    const torchlens::ModuleScope scope(*this);
    x = torch::relu(stem(x));
    x = block2(block1(x));
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    x = x + 0.01 * torch::randn_like(x); // injected noise
    for (int i = 0; i < 3; ++i) {
      x = torch::tanh(shared(x)); // a loop over shared weights
    }
    if ((x.mean() > 0).item<bool>()) { // an if on a tensor value
      x = x * 2;
    } else {
      x = -x;
    }
    return head(x);
  }
  torch::nn::Conv2d stem;
  ResidualBlock block1, block2;
  torch::nn::Linear shared, head;
};
TORCH_MODULE(DemoNet);

/// Input shape the demo model expects.
inline std::vector<std::int64_t> demo_input_shape() {
  return {1, 3, 16, 16};
}

} // namespace torchlens::cli
