// Per-stimulus gradients from the extract library (torchlens/extract/extract.hpp,
// docs/extract.md "Gradients"): the Extractor's gradients() against
// torch::autograd::grad computed here, the padding rows of a short batch, the
// refusals (training mode, rows that interact, targets), and the caller's
// parameters left without .grad. The CLI and resnet18 are tested in
// extract_gradients_test.py.

#include <torchlens/extract/extract.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <filesystem>
#include <string>

namespace ex = torchlens::extract;
namespace fs = std::filesystem;

namespace {

torch::jit::Module scripted(const std::string& name, const std::string& forward) {
  torch::manual_seed(0);
  torch::jit::Module m(name);
  m.register_parameter("w", torch::randn({6, 4}), false);
  // as every module scripted in Python has (train() and eval() set it)
  m.register_attribute("training", c10::BoolType::get(), true);
  m.define(forward);
  m.eval();
  return m;
}

const char* kTanh = R"(
def forward(self, x):
    h = torch.relu(torch.matmul(x, self.w))
    return torch.tanh(h) * 2.0
)";

} // namespace

TEST_CASE("extract gradients: each row is its own stimulus's gradient, padding rows checked") {
  auto model = scripted("Tanh", kTanh);
  const at::Tensor x = torch::randn({5, 6});
  // batch of 8 rows: 3 padding rows, which must receive no gradient
  ex::Extractor e(model, {"relu"}, 0, 8, true, ex::GradientTarget::parse("output:1"));
  const auto acts = e.run(x);
  REQUIRE(acts.size() == 1);
  REQUIRE(e.gradients().size() == 1);
  const at::Tensor w = model.attr("w").toTensor();
  const at::Tensor h = torch::relu(torch::matmul(x, w)).detach().requires_grad_(true);
  const at::Tensor want =
      torch::autograd::grad({(torch::tanh(h) * 2.0).select(1, 1).sum()}, {h})[0];
  CHECK(torch::allclose(acts[0], h.detach(), 1e-6, 1e-6));
  CHECK(e.gradients()[0].sizes() == want.sizes());
  CHECK(torch::allclose(e.gradients()[0], want, 1e-6, 1e-6));
  CHECK(want.abs().sum().item<double>() > 0); // not trivially zero
  CHECK_FALSE(w.grad().defined());            // the backward asks for the stimuli only

  // argmax and cross_entropy: against the same scalar, one stimulus at a time
  ex::Extractor ce(model, {"relu"}, 0, 8, true, ex::GradientTarget::parse("loss:cross_entropy"));
  const at::Tensor targets = torch::tensor({3, 0, 2, 1, 3}, torch::kLong);
  (void)ce.run(x, targets);
  for (std::int64_t i = 0; i < 5; ++i) {
    const at::Tensor hi = h.detach().narrow(0, i, 1).clone().requires_grad_(true);
    const at::Tensor loss =
        torch::nn::functional::cross_entropy(torch::tanh(hi) * 2.0, targets.narrow(0, i, 1));
    const at::Tensor gi = torch::autograd::grad({loss}, {hi})[0];
    CHECK(torch::allclose(ce.gradients()[0].narrow(0, i, 1), gi, 1e-5, 1e-6));
  }
}

TEST_CASE("extract gradients: refusals") {
  CHECK_THROWS_WITH_AS(ex::GradientTarget::parse("output:"),
                       doctest::Contains("bad --gradients-of"), ex::ExtractError);
  CHECK(ex::GradientTarget::parse("output:12").text() == "output:12");
  CHECK(ex::GradientTarget::parse("output:argmax").text() == "output:argmax");

  auto model = scripted("Tanh", kTanh);
  model.train();
  CHECK_THROWS_WITH_AS(ex::Extractor(model, {"relu"}, 0, 4, true, ex::GradientTarget{}),
                       doctest::Contains("need the model in eval mode"), ex::ExtractError);

  // rows that interact: the padding rows of a short batch receive a gradient
  auto mixer = scripted("Mixer", R"(
def forward(self, x):
    return torch.matmul(x - x.mean(0), self.w)
)");
  ex::Extractor e(mixer, {"input.0"}, 0, 4, true, ex::GradientTarget{});
  CHECK_THROWS_WITH_AS(e.run(torch::randn({3, 6})), doctest::Contains("rows of a batch interact"),
                       ex::ExtractError);

  // extract_to_dir: targets checked against the stimuli before anything runs
  const fs::path work = fs::temp_directory_path() / "torchlens-extract-gradients";
  fs::remove_all(work);
  fs::create_directories(work);
  torchlens::io::write_npy((work / "x.npy").string(), torch::randn({5, 6}));
  const auto stimuli = ex::Stimuli::open((work / "x.npy").string());
  auto eval_model = scripted("Tanh", kTanh);
  ex::ExtractOptions o;
  o.model_path = "tanh.pt";
  o.keys = {"relu"};
  o.out_dir = (work / "out").string();
  o.gradients_of = ex::GradientTarget::parse("loss:cross_entropy");
  CHECK_THROWS_WITH_AS(ex::extract_to_dir(eval_model, stimuli, o),
                       doctest::Contains("needs the class of every stimulus"), ex::ExtractError);
  o.targets = torch::zeros({4}, torch::kLong);
  CHECK_THROWS_WITH_AS(ex::extract_to_dir(eval_model, stimuli, o),
                       doctest::Contains("[5] integers"), ex::ExtractError);
  CHECK_FALSE(fs::exists(work / "out"));
  o.targets = torch::tensor({0, 1, 2, 3, 0}, torch::kLong);
  const auto r = ex::extract_to_dir(eval_model, stimuli, o);
  CHECK(r.rows_done == 5);
  REQUIRE(r.layers.size() == 2);
  CHECK(r.layers[1].gradient);
  CHECK(fs::exists(work / "out" / (r.layers[0].label + ".grad.npy")));
}

TEST_CASE("extract_to_memory and Stimuli::from_tensor: the values extract_to_dir writes") {
  const fs::path work = fs::temp_directory_path() / "torchlens-extract-memory";
  fs::remove_all(work);
  fs::create_directories(work);
  auto model = scripted("Tanh", kTanh);
  const at::Tensor x = torch::randn({5, 6});
  const at::Tensor x_before = x.clone();
  torchlens::io::write_npy((work / "x.npy").string(), x);
  ex::ExtractOptions o;
  o.keys = {"relu", "tanh"};
  o.batch_size = 2; // a short last batch: padding
  o.gradients_of = ex::GradientTarget::parse("output:3");
  o.dtype = c10::kDouble;

  const auto in_memory = ex::Stimuli::from_tensor(x);
  CHECK(in_memory.size() == 5);
  CHECK(in_memory.path().rfind("memory:sha256:", 0) == 0);
  CHECK(in_memory.path() != ex::Stimuli::from_tensor(x + 1).path());
  const auto mem = ex::extract_to_memory(model, in_memory, o);
  CHECK(torch::equal(x, x_before));
  REQUIRE(mem.layers.size() == 4); // relu, tanh, then their gradients
  REQUIRE(mem.tensors.size() == 4);
  CHECK(mem.layers[2].gradient);

  o.out_dir = (work / "out").string();
  const auto r = ex::extract_to_dir(model, ex::Stimuli::open((work / "x.npy").string()), o);
  REQUIRE(r.layers.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(mem.layers[i].label == r.layers[i].label);
    CHECK(mem.layers[i].shape == r.layers[i].shape);
    const std::string file = r.layers[i].label + (r.layers[i].gradient ? ".grad.npy" : ".npy");
    const at::Tensor written = torchlens::io::read_npy((work / "out" / file).string());
    CHECK(mem.tensors[i].dtype() == torch::kDouble);
    CHECK(torch::equal(mem.tensors[i], written));
  }
  // against a plain computation
  const at::Tensor h = torch::relu(torch::matmul(x, model.attr("w").toTensor()));
  CHECK(torch::allclose(mem.tensors[0], h.to(torch::kDouble), 1e-6, 1e-6));
  CHECK(torch::allclose(mem.tensors[1], torch::tanh(h).to(torch::kDouble), 1e-6, 1e-6));
  // d(2 tanh(h)[:, 3]) / d tanh(h) is 2 in column 3, 0 elsewhere
  CHECK(torch::equal(mem.tensors[3],
                     torch::zeros({5, 4}, torch::kDouble).index_fill_(1, torch::tensor({3}), 2.0)));

  CHECK_THROWS_WITH_AS(ex::extract_to_memory(model, in_memory, o),
                       doctest::Contains("writes no files"), ex::ExtractError);
  o.out_dir.clear();
  o.statistics = true;
  CHECK_THROWS_WITH_AS(ex::extract_to_memory(model, in_memory, o),
                       doctest::Contains("not of extract_to_memory"), ex::ExtractError);
  CHECK_THROWS_WITH_AS(ex::Stimuli::from_tensor(torch::zeros({0, 3})),
                       doctest::Contains("hold no stimuli"), ex::ExtractError);
  CHECK_THROWS_WITH_AS(ex::Stimuli::from_tensor(torch::tensor(1.0)),
                       doctest::Contains("not a scalar"), ex::ExtractError);
}
