// The same model on every device LibTorch has here: capture, activations,
// module addresses, validation (random ops included) and TorchScript, on the
// CPU and, where LibTorch sees one, on a CUDA device (CI has none;
// scripts/check-libtorch.sh runs them on a GPU machine, against any LibTorch).

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <sstream>
#include <string>

namespace tl = torchlens;

namespace {

/// The CPU, and the first CUDA device when there is one.
std::vector<c10::Device> devices() {
  std::vector<c10::Device> out{c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) {
    out.emplace_back(c10::kCUDA, 0);
  } else {
    MESSAGE("no CUDA device: the cases run on the CPU only");
  }
  return out;
}

std::string name_of(const c10::Device& d) {
  return d.str();
}

/// LayerNorm → Linear → ReLU with a residual add.
struct BlockImpl : torch::nn::Module {
  BlockImpl()
      : norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})))),
        fc(register_module("fc", torch::nn::Linear(8, 8))) {}
  at::Tensor forward(const at::Tensor& x) {
    tl::ModuleScope scope(*this); // exact module addresses (docs/capture.md)
    return x + torch::relu(fc(norm(x)));
  }
  torch::nn::LayerNorm norm;
  torch::nn::Linear fc;
};
TORCH_MODULE(Block);

/// conv → batch norm → relu → linear, two blocks of a ModuleList (the second
/// applied twice), an embedding read at the argmax (an integer tensor on the
/// GPU), a write through a view, and dropout.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv(register_module("conv",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(4))),
        proj(register_module("proj", torch::nn::Linear(4 * 4 * 4, 8))),
        blocks(register_module("blocks", torch::nn::ModuleList(Block(), Block()))),
        emb(register_module("emb", torch::nn::Embedding(8, 8))),
        drop(register_module("drop", torch::nn::Dropout(0.5))) {}

  at::Tensor stem(const at::Tensor& x) { return proj(torch::relu(bn(conv(x))).flatten(1)); }
  at::Tensor forward(const at::Tensor& x) {
    tl::ModuleScope scope(*this);
    at::Tensor h = stem(x);
    h = blocks[0]->as<BlockImpl>()->forward(h);
    h = blocks[1]->as<BlockImpl>()->forward(h);
    h = blocks[1]->as<BlockImpl>()->forward(h);
    h = h + emb(h.argmax(1));
    h.select(1, 0).copy_(h.select(1, 1) * 2);
    return drop(h);
  }

  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
  torch::nn::Linear proj;
  torch::nn::ModuleList blocks;
  torch::nn::Embedding emb;
  torch::nn::Dropout drop;
};
TORCH_MODULE(Net);

/// conv on a GPU may run in TF32: the CPU reference agrees to ~1e-3 there.
bool close_to_cpu(const at::Tensor& t, const at::Tensor& cpu) {
  return torch::allclose(t.cpu(), cpu, 1e-2, 1e-3);
}

std::string report(const tl::ValidationReport& r) {
  std::ostringstream s;
  s << r;
  return s.str();
}

} // namespace

TEST_SUITE("devices") {
  TEST_CASE("one model on each device: activations, devices and module addresses") {
    for (const c10::Device& dev : devices()) {
      CAPTURE(name_of(dev));
      torch::manual_seed(0);
      Net net;
      net->eval();
      const at::Tensor x_cpu = torch::randn({2, 3, 4, 4});
      torch::NoGradGuard no_grad;
      const at::Tensor stem_cpu = net->stem(x_cpu);
      const at::Tensor out_cpu = net->forward(x_cpu);
      net->to(dev);
      const at::Tensor x = x_cpu.to(dev);

      auto log = tl::log_forward_pass(net, x, tl::LogOptions().seed(0));
      CHECK(log.size() == 34); // the input, 32 ops, the output
      CHECK(log["blocks.0"].label() == "add_1_11");
      CHECK(log["blocks.1:2"].label() == "add_2_16:2"); // blocks.1 applied twice: a loop
      for (auto layer : log) {
        INFO(layer.label());
        CHECK(layer->device.str() == name_of(dev));
        CHECK(layer.activation().device() == dev);
      }
      CHECK(log["conv"]->layer_type.str() == "conv2d");
      // the device's values, and an independent CPU computation of the same weights
      const at::Tensor stem = net->stem(x);
      CHECK(torch::allclose(log["proj"].activation(), stem));
      CHECK(close_to_cpu(log["proj"].activation(), stem_cpu));
      const at::Tensor b0 = net->blocks[0]->as<BlockImpl>()->forward(stem);
      const at::Tensor b1 = net->blocks[1]->as<BlockImpl>()->forward(b0);
      const at::Tensor b2 = net->blocks[1]->as<BlockImpl>()->forward(b1);
      CHECK(torch::allclose(log["blocks.0"].activation(), b0));
      CHECK(torch::allclose(log["blocks.1:1"].activation(), b1));
      CHECK(torch::allclose(log["blocks.1:2"].activation(), b2));
      CHECK(log["blocks.1:2"].module() == "blocks.1");
      CHECK(torch::allclose(log["output_1"].activation(), net->forward(x)));
      CHECK(close_to_cpu(log["output_1"].activation(), out_cpu));
      // the integer tensor the embedding reads
      const auto argmax = log[log["emb"].parents().at(0)];
      CHECK(argmax->layer_type.str() == "argmax");
      CHECK(torch::equal(argmax.activation(), b2.argmax(1)));

      // activations moved to the CPU as they are saved
      auto on_cpu = tl::log_forward_pass(
          net, x, tl::LogOptions().seed(0).output_device(tl::OutputDevice::cpu));
      CHECK(on_cpu["output_1"].activation().device().is_cpu());
      CHECK(on_cpu["output_1"]->device.str() == name_of(dev)); // where the op ran
      CHECK(torch::allclose(on_cpu["output_1"].activation(), net->forward(x).cpu()));
    }
  }

  TEST_CASE("validation on each device: integer perturbations, a view write, dropout") {
    for (const c10::Device& dev : devices()) {
      CAPTURE(name_of(dev));
      torch::manual_seed(0);
      Net net;
      net->to(dev);
      const at::Tensor x = torch::randn({2, 3, 4, 4}).to(dev);
      net->eval();
      const auto eval = tl::validate_saved_activations(net, x);
      CHECK_MESSAGE(eval.valid, report(eval));
      CHECK(eval.layers_checked == 30);
      // training: batch norm's running statistics change on the device, and
      // dropout draws from the device's generator, whose state each replay
      // must restore
      net->train();
      const auto train = tl::validate_saved_activations(net, x);
      CHECK_MESSAGE(train.valid, report(train));
      auto log = tl::log_forward_pass(net, x, tl::LogOptions().seed(1));
      CHECK(log["output_1"].activation().eq(0).any().item<bool>()); // dropout zeroed some
    }
  }

  TEST_CASE("a TorchScript module moved to each device") {
    for (const c10::Device& dev : devices()) {
      CAPTURE(name_of(dev));
      torch::manual_seed(0);
      torch::jit::Module m("Looped");
      m.register_parameter("w", torch::randn({5, 5}), false);
      m.define(R"(
def forward(self, x):
    for i in range(3):
        x = torch.tanh(torch.matmul(x, self.w))
    if bool(x.sum() > 0):
        x = x * 2
    y = x.clone()
    y[0] = 1.0
    return y + 1
)");
      m.to(dev);
      const at::Tensor x = torch::randn({2, 5}).to(dev);
      auto log = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
      CHECK(torch::allclose(log["output_1"].activation(), m.forward({x}).toTensor()));
      CHECK(log.select("tanh_1_2").size() == 3); // one layer, a pass per iteration
      CHECK(log["tanh_1_2:3"].activation().device() == dev);
      const auto r = tl::validate_saved_activations(m, {x});
      CHECK_MESSAGE(r.valid, report(r));
    }
  }
}
