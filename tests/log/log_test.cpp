// The model log as users read it: lookup by every kind of key TorchLens accepts
// (paper §3: label, short label, label:pass, module address and pass, io
// address, ordinal), unknown and ambiguous keys as errors of torchlens's
// family, and the JSON written for it, read back by an independent parser.

#include <torchlens/io/json.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#include "support/doctest.hpp"

#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tl = torchlens;
namespace pt = boost::property_tree;

namespace {

/// fc applied three times in a loop, then a residual add: one recurrent layer
/// (matmul, relu: 3 passes each), one module called three times.
torch::jit::Module looped() {
  torch::jit::Module fc("Fc");
  fc.register_parameter("weight", torch::eye(4) * 0.5, false);
  fc.define("def forward(self, x):\n  return torch.matmul(x, self.weight)\n");
  torch::jit::Module m("Looped");
  m.register_module("fc", fc);
  m.define(R"(
def forward(self, x):
    y = x
    for i in range(3):
        y = torch.relu(self.fc.forward(y))
    return y + x
)");
  m.eval();
  return m;
}

tl::ModelLog log_of(torch::jit::Module& m, const at::Tensor& x) {
  return tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
}

} // namespace

TEST_CASE("every lookup key TorchLens accepts finds the layer it names") {
  auto m = looped();
  const auto x = torch::arange(4, torch::kFloat).reshape({1, 4});
  const auto log = log_of(m, x);
  // the values, computed without the log
  std::vector<at::Tensor> relu;
  at::Tensor y = x;
  for (int i = 0; i < 3; ++i) {
    y = torch::relu(y.matmul(torch::eye(4) * 0.5));
    relu.push_back(y);
  }

  // labels: type_typenum_totalnum, `:pass` for recurrent layers (inputs are not
  // counted: docs/passes/label_layers.md)
  CHECK(log.contains("matmul_1_1:1"));
  CHECK(log["matmul_1_1:3"]->pass_num == 3);
  CHECK(log["relu_1_2:2"]->num_passes == 3);
  CHECK(torch::allclose(log["relu_1_2:2"].activation(), relu[1]));
  // the short label and the label without a pass
  CHECK(log["relu_1:3"].label() == "relu_1_2:3");
  CHECK(log.select("relu_1_2").size() == 3); // a layer without a pass: all its passes
  // module address: the module's output, per pass
  CHECK(log["fc:2"].label() == "matmul_1_1:2");
  CHECK(log.select("fc").size() == 3);
  // io addresses and ordinals
  CHECK(torch::equal(log["input.0"].activation(), x));
  CHECK(torch::allclose(log["output.0"].activation(), relu[2] + x));
  CHECK(log[0].label() == log["input.0"].label());
  CHECK(log[-1].label() == log["output.0"].label());
  CHECK(log[1].label() == "matmul_1_1:1");
}

TEST_CASE("ops of torch.fft, torch.linalg and torch.special have the names Python gives them") {
  CHECK(tl::layer_type_of("aten::fft_rfft2") == "rfft2");
  CHECK(tl::layer_type_of("aten::linalg_slogdet") == "slogdet");
  CHECK(tl::layer_type_of("aten::special_expit") == "expit");
  CHECK(tl::layer_type_of("aten::max_pool2d") == "maxpool2d");
  CHECK(tl::layer_type_of("aten::relu_") == "relu");
  torch::jit::Module m("Spectral");
  m.define(R"(
def forward(self, x):
    y = torch.fft_irfft2(torch.fft_rfft2(x), s=[4, 4])
    sign, logdet = torch.linalg_slogdet(x[0])
    return torch.special_erfcx(y) + logdet
)");
  const auto x = torch::randn({2, 4, 4});
  const auto log = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
  std::vector<std::string> types;
  for (auto layer : log) types.push_back(layer->layer_type);
  CHECK(types == std::vector<std::string>{"input", "rfft2", "irfft2", "select", "slogdet",
                                          "slogdet", "erfcx", "add", "output"});
  CHECK(torch::allclose(log["rfft2_1_1"].activation(), at::fft_rfft2(x)));
  CHECK(torch::allclose(log["irfft2_1_2"].activation(), x, 1e-5, 1e-6));
  CHECK(torch::allclose(log["slogdet_2_5"].activation(), std::get<1>(at::linalg_slogdet(x[0]))));
}

TEST_CASE("the key index is built once, on the first lookup, also when threads race for it") {
  auto m = looped();
  const auto x = torch::arange(4, torch::kFloat).reshape({1, 4});
  for (int round = 0; round < 20; ++round) {
    auto log = log_of(m, x); // no lookup yet: the index is not built
    std::vector<std::string> seen(4);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < seen.size(); ++t) {
      threads.emplace_back(
          [&, t] { seen[t] = log["relu_1:3"].label() + " " + log["fc:2"].label(); });
    }
    for (auto& t : threads) t.join();
    for (const auto& s : seen) CHECK(s == "relu_1_2:3 matmul_1_1:2");
    // a moved log keeps its index with its graph
    tl::ModelLog moved = std::move(log);
    CHECK(moved["relu_1_2:2"]->num_passes == 3);
    CHECK(moved.lookup_keys().count("fc:3") == 1);
  }
}

TEST_CASE("unknown and ambiguous keys: KeyError (c10::IndexError), near matches, one prefix") {
  auto m = looped();
  const auto log = log_of(m, torch::ones({1, 4}));
  try {
    (void)log["relu_1_3"];
    FAIL("an unknown key must throw");
  } catch (const tl::KeyError& e) {
    // one family: a c10::IndexError for LibTorch users, a torchlens::Error for
    // tools, the prefix once in what(), never in message()
    const c10::IndexError& as_c10 = e;
    const tl::Error& as_ours = e;
    CHECK(std::string(as_c10.what_without_backtrace()).rfind("torchlens: no layer matches", 0) ==
          0);
    CHECK(as_ours.message().rfind("no layer matches 'relu_1_3'", 0) == 0);
    CHECK(as_ours.message().find("did you mean") != std::string::npos);
    INFO(as_ours.message());
    CHECK(as_ours.message().find("relu_1:") != std::string::npos);
    CHECK(tl::plain_message(e).find('\n') == std::string::npos);
    CHECK(tl::plain_message(e).rfind("no layer matches", 0) == 0);
  }
  CHECK_THROWS_AS((void)log["matmul_1_1:4"], c10::IndexError); // a pass it does not have
  CHECK_THROWS_AS((void)log[100], tl::KeyError);
  CHECK_FALSE(log.contains("fc:4"));
}

TEST_CASE("errors raised by the library and by LibTorch print as one plain line") {
  const auto plain = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return tl::plain_message(e);
    }
    return std::string("no error");
  };
  CHECK(plain([] { TORCHLENS_CHECK(1 + 1 == 3, "arithmetic ", "is off"); }) == "arithmetic is off");
  CHECK(plain([] { throw tl::UsageError("no pass named 'x'"); }) == "no pass named 'x'");
  CHECK(plain([] { TORCH_CHECK(false, "from LibTorch.\nsecond line"); }) == "from LibTorch");
  CHECK(plain([] { throw std::runtime_error("torchlens: already prefixed"); }) ==
        "already prefixed");
}

TEST_CASE("JSON: what the log holds, read back by an independent parser") {
  auto m = looped();
  const auto log = log_of(m, torch::ones({1, 4}));
  std::ostringstream os;
  tl::io::write_json(os, log);
  std::istringstream in(os.str());
  pt::ptree root;
  pt::read_json(in, root);
  CHECK(root.get<int>("schema_version") == TORCHLENS_JSON_SCHEMA_VERSION);
  CHECK(root.get<std::string>("torchlens_version") == TORCHLENS_VERSION_STRING);
  CHECK(root.get<bool>("is_recurrent"));
  std::set<std::string> labels;
  int layers = 0;
  for (const auto& [_, layer] : root.get_child("layers")) {
    ++layers;
    labels.insert(layer.get<std::string>("label"));
    if (layer.get<std::string>("label") == "relu_1_2:2") {
      CHECK(layer.get<int>("pass") == 2);
      CHECK(layer.get<int>("num_passes") == 3);
      std::vector<std::string> parents;
      for (const auto& [__, p] : layer.get_child("parents")) parents.push_back(p.data());
      CHECK(parents == std::vector<std::string>{"matmul_1_1:2"});
    }
  }
  CHECK(layers == static_cast<int>(log.size()));
  for (auto layer : log) CHECK(labels.count(layer.label()) == 1);
}
