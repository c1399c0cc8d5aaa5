// Extraction from C++-frontend models through the library (docs/extract.md,
// "C++-frontend models"): the Extractor and extract_to_dir run a torch::nn
// model batch after batch, and the rows they return or write equal the module
// outputs computed here on the whole set at once.

#include <torchlens/extract/extract.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/torch.h>
#include "support/doctest.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace ex = torchlens::extract;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("torchlens-extract-frontend-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

/// Two linear layers around a relu, called without ModuleScope: capture places
/// the ops by the parameters they read.
struct TwoLayerImpl : torch::nn::Module {
  TwoLayerImpl()
      : fc1(register_module("fc1", torch::nn::Linear(6, 8))),
        fc2(register_module("fc2", torch::nn::Linear(8, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))) * 2.0; }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(TwoLayer);

} // namespace

TEST_CASE("Extractor on a Sequential: module outputs by address, batch after batch") {
  torch::manual_seed(0);
  torch::nn::Linear l1(6, 8), l2(8, 3);
  torch::nn::ReLU relu;
  torch::nn::Sequential seq(l1, relu, l2);
  seq->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({10, 6});
  // `1` is the module, not the ordinal (a Sequential child's name wins, as in TorchLens)
  ex::Extractor e(seq, {"0", "1", "2"}, 0, 4);
  std::vector<std::vector<at::Tensor>> parts(3);
  for (std::int64_t b = 0; b < 10; b += 4) {
    const auto acts = e.run(x.narrow(0, b, std::min<std::int64_t>(4, 10 - b)));
    REQUIRE(acts.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) parts[i].push_back(acts[i]);
  }
  const at::Tensor h1 = l1->forward(x), h2 = torch::relu(h1), h3 = l2->forward(h2);
  const std::vector<at::Tensor> want{h1, h2, h3};
  REQUIRE(e.layers().size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    const at::Tensor got = torch::cat(parts[i]);
    CHECK(got.sizes() == want[i].sizes());
    CHECK(torch::allclose(got, want[i], 1e-6, 1e-6));
    CHECK(e.layers()[i].module == std::to_string(i));
  }
  // the frontend's Linear is addmm for 2-d inputs in LibTorch 1.13 (linear elsewhere)
  CHECK(e.layers()[1].op == "aten::relu");
  CHECK(e.layers()[0].op == e.layers()[2].op);
}

TEST_CASE("extract_to_dir on a custom module: the .npy files hold every stimulus's rows") {
  torch::manual_seed(1);
  TwoLayer model;
  model->eval();
  const fs::path work = fresh_dir("two-layer");
  const at::Tensor x = torch::randn({13, 6});
  torchlens::io::write_npy((work / "x.npy").string(), x);
  const auto stimuli = ex::Stimuli::open((work / "x.npy").string());
  ex::ExtractOptions o;
  o.model_path = "two-layer (C++ frontend)";
  o.keys = {"fc1", "relu", "mul"};
  o.batch_size = 5;
  o.out_dir = (work / "out").string();
  const auto r = ex::extract_to_dir(model, stimuli, o);
  CHECK(r.rows_done == 13);
  REQUIRE(r.layers.size() == 3);
  at::Tensor h1, h2, y;
  {
    torch::NoGradGuard no_grad;
    h1 = model->fc1(x);
    h2 = torch::relu(h1);
    y = model->fc2(h2) * 2.0;
  }
  const std::vector<at::Tensor> want{h1, h2, y};
  for (std::size_t i = 0; i < 3; ++i) {
    const at::Tensor got =
        torchlens::io::read_npy((fs::path(o.out_dir) / (r.layers[i].label + ".npy")).string());
    CHECK(got.sizes() == want[i].sizes());
    CHECK(torch::allclose(got, want[i], 1e-6, 1e-6));
  }
  CHECK(r.layers[0].module == "fc1"); // placed by the parameters it read

  // per-stimulus gradients work for frontend models too: d(sum of outputs)/d(relu)
  o.out_dir = (work / "grads").string();
  o.keys = {"relu"};
  o.gradients_of = ex::GradientTarget::parse("sum");
  const auto g = ex::extract_to_dir(model, stimuli, o);
  REQUIRE(g.layers.size() == 2); // the activation and its gradient
  const at::Tensor h = torch::relu(model->fc1(x)).detach().requires_grad_(true);
  const at::Tensor want_grad = torch::autograd::grad({(model->fc2(h) * 2.0).sum()}, {h})[0];
  const at::Tensor got_grad =
      torchlens::io::read_npy((fs::path(o.out_dir) / (g.layers[0].label + ".grad.npy")).string());
  CHECK(torch::allclose(got_grad, want_grad, 1e-6, 1e-6));
}

TEST_CASE("a frontend model in training mode is refused for per-stimulus gradients") {
  TwoLayer model;
  model->train();
  CHECK_THROWS_WITH_AS(ex::Extractor(model, {"relu"}, 0, 4, true, ex::GradientTarget::parse("sum")),
                       doctest::Contains("eval mode"), ex::ExtractError);
}
