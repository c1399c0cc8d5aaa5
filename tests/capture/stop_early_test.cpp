// LogOptions::stop_early: the saving pass stops the forward after the last op
// whose activation is kept (the recorder's halt), in C++-frontend and
// TorchScript models; the values saved are those of the whole run.

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

namespace tl = torchlens;

namespace {

struct TailImpl : torch::nn::Module {
  torch::nn::Linear a{4, 4}, b{4, 4};
  int tail_runs = 0;
  TailImpl() {
    register_module("a", a);
    register_module("b", b);
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = torch::relu(a(x));
    ++tail_runs; // after the saved op: a halted pass never gets here
    return torch::tanh(b(h));
  }
};
TORCH_MODULE(Tail);

/// A TorchScript model that counts its own forwards past the saved op in a buffer.
torch::jit::Module counting_script() {
  torch::jit::Module m("Counting");
  m.register_parameter("w", torch::randn({4, 4}), false);
  m.register_buffer("count", torch::zeros({1}));
  m.define(R"(
def forward(self, x):
    y = torch.relu(torch.matmul(x, self.w))
    self.count.add_(1.0)
    return torch.tanh(y).sum(1)
)");
  return m;
}

} // namespace

TEST_CASE("stop_early: a C++-frontend forward stops after the last saved op") {
  torch::manual_seed(0);
  Tail model;
  model->eval();
  const auto x = torch::randn({3, 4});
  const auto want = torch::relu(model->a(x)).detach();
  model->tail_runs = 0;

  auto full = tl::log_forward_pass(model, x, tl::LogOptions().seed(0).save({"relu"}));
  CHECK(model->tail_runs == 2); // metadata pass + saving pass

  model->tail_runs = 0;
  auto halted =
      tl::log_forward_pass(model, x, tl::LogOptions().seed(0).save({"relu"}).stop_early(true));
  CHECK(model->tail_runs == 1); // the metadata pass only: the saving pass stopped at relu
  CHECK(torch::equal(halted["relu"].activation(), want));
  CHECK(torch::equal(halted["relu"].activation(), full["relu"].activation()));
  // the graph is still the whole model's, with nothing past relu saved
  CHECK(halted.size() == full.size());
  CHECK_FALSE(halted["tanh"].has_activation());

  // the capture is gone after a halt: the model runs plainly and logs again
  model->tail_runs = 0;
  CHECK(torch::allclose(model->forward(x), torch::tanh(model->b(want))));
  auto again = tl::log_forward_pass(model, x, tl::LogOptions().seed(0));
  CHECK(again.size() == full.size());
}

TEST_CASE("stop_early: the TorchScript interpreter's rethrow is recognised as the halt") {
  torch::manual_seed(0);
  auto m = counting_script();
  m.eval();
  const auto x = torch::randn({2, 4});
  const auto want = torch::relu(torch::matmul(x, m.attr("w").toTensor()));

  // the buffer is put back before the saving pass, which then runs add_ again
  auto full = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0).save({"relu"}));
  CHECK(m.attr("count").toTensor().item<float>() == 1.0f);
  m.attr("count").toTensor().zero_();

  auto halted =
      tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0).save({"relu"}).stop_early(true));
  CHECK(m.attr("count").toTensor().item<float>() == 0.0f); // stopped before add_
  CHECK(torch::equal(halted["relu"].activation(), want));
  CHECK(torch::equal(full["relu"].activation(), want));
  CHECK(halted.size() == full.size());

  // saving the last op: nothing to stop, the whole forward runs
  m.attr("count").toTensor().zero_();
  auto last = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0).save({"sum"}).stop_early(true));
  CHECK(m.attr("count").toTensor().item<float>() == 1.0f);
  CHECK(torch::allclose(last["sum"].activation(), torch::tanh(want).sum(1)));
}

TEST_CASE("stop_early: a capture after a halted one still sees the module calls") {
  torch::jit::Module inner("Inner");
  inner.register_parameter("w", torch::randn({4, 4}), false);
  inner.define(R"(
def forward(self, x):
    return torch.relu(torch.matmul(x, self.w))
)");
  torch::jit::Module outer("Outer");
  outer.register_module("blk", inner);
  outer.register_module("head", inner.clone());
  outer.define(R"(
def forward(self, x):
    x = self.blk.forward(x)
    return self.head.forward(x).sum(1)
)");
  outer.eval();
  const auto x = torch::randn({2, 4});
  for (int i = 0; i < 2; ++i) {
    auto halted =
        tl::log_forward_pass(outer, {x}, tl::LogOptions().seed(0).save({"blk"}).stop_early(true));
    CHECK(halted["blk"].has_activation());
    auto full = tl::log_forward_pass(outer, {x}, tl::LogOptions().seed(0));
    CHECK(full["blk"].has_activation());
    CHECK(full["head"].has_activation());
  }
}
