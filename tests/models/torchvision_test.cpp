// torchvision models exported by scripts/export_torchvision.py (TorchScript,
// random weights, eval mode): op counts against counts computed independently
// in Python, module addresses, the final output against Python's reference
// output, and saved activations against submodules run directly.
//
// The exports live in $TORCHLENS_TORCHVISION_DIR (set by tests/models/meson.build,
// which runs the export script as a cached custom_target).

#include "model_test_helpers.hpp"

#include <torchlens/io/model_file.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string export_dir() {
  const char* dir = std::getenv("TORCHLENS_TORCHVISION_DIR");
  return dir != nullptr ? dir : "torchvision";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "missing export: ", path,
                  " (run scripts/export_torchvision.py with /usr/bin/python3)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Parses the flat `"key": {"name": int, ...}` object of the export json.
std::map<std::string, std::int64_t> json_counts(const std::string& json, const std::string& key) {
  std::map<std::string, std::int64_t> out;
  const auto start = json.find('"' + key + '"');
  REQUIRE(start != std::string::npos);
  const auto open = json.find('{', start);
  const auto close = json.find('}', open);
  REQUIRE(open != std::string::npos);
  REQUIRE(close != std::string::npos);
  const std::string body = json.substr(open + 1, close - open - 1);
  std::size_t pos = 0;
  while ((pos = body.find('"', pos)) != std::string::npos) {
    const auto end = body.find('"', pos + 1);
    const std::string name = body.substr(pos + 1, end - pos - 1);
    const auto colon = body.find(':', end);
    out[name] = std::stoll(body.substr(colon + 1));
    pos = body.find_first_of(",", colon);
    if (pos == std::string::npos) {
      break;
    }
  }
  return out;
}

struct Export {
  torch::jit::Module model;
  at::Tensor x, y;
  std::string json;
};

Export load(const std::string& name) {
  const auto dir = export_dir();
  Export e;
  e.json = read_file(dir + "/" + name + ".json");
  e.model = torchlens::io::load_torchscript(dir + "/" + name + ".pt");
  e.model.eval();
  auto ref = torchlens::io::load_torchscript(dir + "/" + name + ".ref.pt");
  e.x = ref.attr("x").toTensor();
  e.y = ref.attr("y").toTensor();
  return e;
}

at::Tensor first_output(const c10::IValue& v) {
  if (v.isTuple()) {
    return v.toTupleRef().elements().at(0).toTensor();
  }
  return v.toTensor();
}

bool inside(const torchlens::LayerView& l, const std::string& address) {
  for (const auto& f : l->modules) {
    if (f.address == address) {
      return true;
    }
  }
  return false;
}

/// The layer feeding a module's first op from outside the module.
std::optional<torchlens::LayerView> module_input(const torchlens::ModelLog& log,
                                                 const std::string& address) {
  for (auto l : log) {
    if (!inside(l, address)) {
      continue;
    }
    for (const auto& p : l.parents()) {
      auto parent = log[p];
      if (!inside(parent, address)) {
        return parent;
      }
    }
  }
  return std::nullopt;
}

torch::jit::Module submodule(const torch::jit::Module& root, const std::string& address) {
  torch::jit::Module m = root;
  std::stringstream ss(address);
  std::string part;
  while (std::getline(ss, part, '.')) {
    m = m.attr(part).toModule();
  }
  return m;
}

/// The common checks of every exported model.
void check_model(const std::string& name, const std::string& module_address,
                 const std::string& leaf_address, const std::string& leaf_type) {
  CAPTURE(name);
  auto e = load(name);
  torch::NoGradGuard ng;
  auto log = torchlens::log_forward_pass(e.model, {e.x});
  INFO("log has ", log.size(), " layers");

  // per-type op counts: exactly those of the frozen graph (Python), both ways
  const auto expected = json_counts(e.json, "op_counts");
  std::map<std::string, std::int64_t> actual;
  for (auto l : log) {
    if (l->kind == torchlens::NodeKind::op) {
      ++actual[l->layer_type];
    }
  }
  for (const auto& [type, n] : expected) {
    CAPTURE(type);
    CHECK(actual[type] == n);
  }
  for (const auto& [type, n] : actual) {
    CAPTURE(type);
    CHECK_MESSAGE(expected.count(type) == 1, "op type not in the exported graph: ", type, " x", n);
  }
  // cross-check against module calls counted by forward hooks (eager)
  const auto calls = json_counts(e.json, "module_calls");
  CHECK(actual["conv2d"] == calls.at("Conv2d"));
  CHECK(actual["batchnorm"] == calls.at("BatchNorm2d"));
  CHECK(actual["linear"] == calls.at("Linear"));
  CHECK(tlt::count_kind(log, torchlens::NodeKind::input) == 1);

  // final output against Python's reference, and against a plain forward now
  const auto out = log["output_1"].activation();
  CHECK(torch::allclose(out, e.y, 1e-4, 1e-5));
  CHECK(torch::equal(first_output(e.model.forward({e.x})), first_output(e.model.forward({e.x}))));
  CHECK(torch::allclose(first_output(e.model.forward({e.x})), out, 1e-5, 1e-6));

  // a leaf module address resolves to an op of the right type
  REQUIRE(log.contains(leaf_address));
  CHECK(log[leaf_address]->layer_type == leaf_type);
  CHECK(log[leaf_address].module() == leaf_address);

  // a submodule's saved output equals the submodule run on its saved input
  REQUIRE(log.contains(module_address));
  auto in = module_input(log, module_address);
  REQUIRE(in.has_value());
  auto sub = submodule(e.model, module_address);
  const auto direct = first_output(sub.forward({in->activation()}));
  CHECK(torch::allclose(log[module_address].activation(), direct, 1e-4, 1e-5));
}

} // namespace

TEST_SUITE("torchvision") {
  TEST_CASE("resnet18") {
    check_model("resnet18", "layer1", "layer1.0.conv1", "conv2d");

    // in-place relu_ after add_: the add keeps its pre-relu value
    auto e = load("resnet18");
    torch::NoGradGuard ng;
    auto log = torchlens::log_forward_pass(e.model, {e.x});
    auto in = module_input(log, "layer1.0");
    REQUIRE(in.has_value());
    const auto x = in->activation();
    auto blk = submodule(e.model, "layer1.0");
    auto run = [&](const char* name, const at::Tensor& t) {
      return blk.attr(name).toModule().forward({t}).toTensor();
    };
    const auto sum = run("bn2", run("conv2", torch::relu(run("bn1", run("conv1", x))))) + x;
    REQUIRE(sum.min().item<float>() < 0);
    std::optional<torchlens::LayerView> add;
    for (auto l : log) {
      if (l->layer_type == "add" && inside(l, "layer1.0")) {
        add = l;
        break;
      }
    }
    REQUIRE(add.has_value());
    CHECK((*add)->is_inplace);
    CHECK(torch::allclose(add->activation(), sum, 1e-4, 1e-5));
    CHECK(torch::allclose(log["layer1.0"].activation(), torch::relu(sum), 1e-4, 1e-5));
    const auto* frame = &log["layer1.0.conv1"]->modules.back();
    CHECK(frame->type == "Conv2d");

    // a Sequential is one unrolled call per child, all with the loop body's
    // source range: only the last child's output leaves it (forward hooks agree)
    for (const char* seq : {"layer1", "layer2", "layer3", "layer4"}) {
      const auto& outs = log.module_outputs().at(std::string(seq) + ":1");
      REQUIRE(outs.size() == 1);
      CHECK(inside(torchlens::LayerView(log, outs.front()), std::string(seq) + ".1"));
    }
    // the first block's output leaves the block, not the Sequential
    const auto first = log["layer2.0"];
    const auto exits = first.module_outputs();
    CHECK(std::find(exits.begin(), exits.end(), "layer2.0:1") != exits.end());
    CHECK(std::find(exits.begin(), exits.end(), "layer2:1") == exits.end());
    // and layer2.1's first op reads it inside layer2
    CHECK(inside(first, "layer2"));
  }

  TEST_CASE("a model the caller already ran logs exactly as a fresh one") {
    // TorchScript keeps a method's first executor; after plain runs it holds
    // the optimised (inlined) graph, in which submodule calls have no frames
    auto e = load("resnet18");
    torch::NoGradGuard ng;
    const auto options = torchlens::LogOptions().save(torchlens::SaveSpec::none()).seed(0);
    const auto fresh = torchlens::log_forward_pass(e.model, {e.x}, options);
    for (int i = 0; i < 4; ++i) (void)e.model.forward({e.x});
    const auto after = torchlens::log_forward_pass(e.model, {e.x}, options);
    REQUIRE(after.size() == fresh.size());
    CHECK(after.info().modules.size() == fresh.info().modules.size());
    int differing = 0;
    for (std::size_t i = 0; i < fresh.size(); ++i) {
      const auto a = fresh[static_cast<std::int64_t>(i)];
      const auto b = after[static_cast<std::int64_t>(i)];
      differing += a.label() != b.label() || a.module() != b.module() ||
                   a.module_outputs() != b.module_outputs();
    }
    CHECK(differing == 0);
    CHECK(after["layer2.0.downsample.0"]->modules.back().address == "layer2.0.downsample.0");
  }

  TEST_CASE("googlenet") {
    check_model("googlenet", "inception3a", "inception3a.branch1.conv", "conv2d");
  }

  TEST_CASE("mobilenet_v2") {
    check_model("mobilenet_v2", "features.3", "features.0.0", "conv2d");
  }

  TEST_CASE("densenet121") {
    check_model("densenet121", "features.denseblock1", "features.denseblock1.denselayer1.conv1",
                "conv2d");
  }

} // TEST_SUITE
