// Gradients on real models nobody here wrote (torchvision's resnet18,
// PyTorch's TransformerEncoder and LSTM, exported to TorchScript with random
// weights by scripts/export_torchvision.py): every saved gradient equals the
// gradient the autograd engine computes independently with respect to the
// saved tensor (torch::autograd::grad's own mechanism: gradients captured at
// the tensor's edge, no hooks), and the caller's input and parameter `.grad`
// are the same with and without logging.

#include <torchlens/io/model_file.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <cstdlib>
#include <string>
#include <vector>

namespace tl = torchlens;

namespace {

struct Export {
  torch::jit::Module model;
  at::Tensor x;
};

Export load(const std::string& name) {
  const char* dir = std::getenv("TORCHLENS_INTERVENE_MODELS");
  REQUIRE_MESSAGE(dir != nullptr, "TORCHLENS_INTERVENE_MODELS is not set (tests/grad/meson.build)");
  Export e;
  e.model = tl::io::load_torchscript(std::string(dir) + "/" + name + ".pt");
  e.model.eval();
  e.x = tl::io::load_torchscript(std::string(dir) + "/" + name + ".ref.pt").attr("x").toTensor();
  return e;
}

at::Tensor loss_of(const at::Tensor& out) {
  return out.pow(2).mean(); // a 0-d mean, as TorchLens #36 reported
}

/// Where the gradient of a saved activation arrives: its own edge, or for a
/// value torchlens cloned before a later in-place write overwrote it (a
/// CloneBackward0 on a layer that is no clone op) the edge of the original.
torch::autograd::Edge edge_of(const tl::LayerView& layer) {
  const at::Tensor& a = layer.activation();
  if (layer->op_name != "aten::clone" && a.grad_fn() && a.grad_fn()->name() == "CloneBackward0") {
    return a.grad_fn()->next_edges()[0];
  }
  return torch::autograd::impl::gradient_edge(a);
}

void check_model(const std::string& name, std::size_t min_compared) {
  CAPTURE(name);
  auto e = load(name);
  auto x = e.x.clone().requires_grad_(true);
  auto log = tl::log_forward_pass(e.model, {x},
                                  tl::LogOptions().seed(0).save_gradients(tl::SaveSpec::all()));
  auto loss = loss_of(log.returned().at(0));

  // independent: the engine captures the gradient at each saved tensor's edge
  std::vector<tl::Vertex> layers;
  torch::autograd::edge_list edges;
  for (auto layer : log) {
    if (layer->kind == tl::NodeKind::output || !layer.has_activation()) continue;
    const at::Tensor& a = layer.activation();
    if (!a.requires_grad() || !at::isFloatingType(a.scalar_type())) continue;
    auto edge = edge_of(layer);
    if (!edge.is_valid()) continue;
    layers.push_back(layer.vertex());
    edges.push_back(std::move(edge));
  }
  auto truth = torch::autograd::Engine::get_default_engine().execute(
      {torch::autograd::impl::gradient_edge(loss)}, {torch::ones_like(loss)},
      /*keep_graph=*/true, /*create_graph=*/false, /*accumulate_grad=*/false, edges);
  REQUIRE(truth.size() == layers.size());
  loss.backward();

  std::size_t compared = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const tl::LayerView layer(log, layers[i]);
    CAPTURE(layer.label());
    CHECK(layer.has_gradient() == truth[i].defined());
    if (!truth[i].defined() || !layer.has_gradient()) continue;
    const auto g = layer.gradient();
    CHECK(g.sizes() == truth[i].sizes());
    CHECK(torch::allclose(g, truth[i], 1e-4, 1e-6));
    ++compared;
  }
  MESSAGE(name << ": " << compared << " saved gradients equal the engine's");
  CHECK(compared >= min_compared);
  CHECK(log["input.0"].has_gradient());
  CHECK(torch::allclose(log["input.0"].gradient(), x.grad()));
}

} // namespace

TEST_CASE("resnet18: every saved gradient equals the engine's at the same tensor") {
  check_model("resnet18", 60);
}

TEST_CASE("a TransformerEncoder: every saved gradient equals the engine's") {
  check_model("transformer_encoder", 40);
}

TEST_CASE("an LSTM: every saved gradient equals the engine's") {
  check_model("lstm", 5);
}

TEST_CASE(
    "validation of gradients on resnet18, a TransformerEncoder and an LSTM; a planted fault") {
  for (const std::string name : {"resnet18", "transformer_encoder", "lstm"}) {
    CAPTURE(name);
    auto e = load(name);
    auto log = tl::log_forward_pass(
        e.model, {e.x.clone().requires_grad_(true)},
        tl::LogOptions().seed(0).keep_replay(true).save_gradients(tl::SaveSpec::all()));
    loss_of(log.returned().at(0)).backward();
    const auto report = tl::validate_gradients(log);
    MESSAGE(name << ": " << report);
    CHECK(report.valid);
    CHECK(report.layers_checked >= (name == "lstm" ? 4 : 60));
    if (name != "resnet18") continue;
    // plant a fault in a convolution's gradient: it and its parent fail
    const std::string conv = log["conv2d_5"].label();
    log["conv2d_5"].gradient().mul_(1.01).add_(1e-3);
    const auto bad = tl::validate_gradients(log);
    CHECK_FALSE(bad.valid);
    bool caught = false;
    for (const auto& f : bad.failures) caught = caught || f.label == conv;
    CHECK(caught);
  }
}

TEST_CASE("the caller's input and parameter .grad are the same with and without logging") {
  for (const std::string name : {"resnet18", "transformer_encoder", "lstm"}) {
    CAPTURE(name);
    auto e = load(name);
    torch::jit::GraphOptimizerEnabledGuard plain_graph(false); // as capture runs it
    auto xp = e.x.clone().requires_grad_(true);
    loss_of(e.model.forward({xp}).toTensor()).backward();
    std::vector<at::Tensor> plain;
    for (const auto& p : e.model.parameters()) {
      plain.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      p.mutable_grad().reset();
    }
    auto xl = e.x.clone().requires_grad_(true);
    auto log = tl::log_forward_pass(e.model, {xl},
                                    tl::LogOptions().seed(0).save_gradients(tl::SaveSpec::all()));
    loss_of(log.returned().at(0)).backward();
    REQUIRE(xl.grad().defined());
    CHECK(torch::allclose(xl.grad(), xp.grad(), 1e-6, 1e-9));
    std::size_t i = 0, with_grad = 0;
    for (const auto& p : e.model.parameters()) {
      REQUIRE(plain[i].defined() == p.grad().defined());
      if (p.grad().defined()) {
        CHECK(torch::allclose(p.grad(), plain[i], 1e-6, 1e-9));
        ++with_grad;
      }
      ++i;
    }
    CHECK(with_grad > 0);
    CHECK(log.params_with_gradient().size() == with_grad);
  }
}
