// Cost of interventions against the plain forward pass in the same run
// (docs/interventions.md), on TorchScript exports with random weights:
//   (a) live: one site zeroed while the model runs, no log (run_with_interventions);
//   (b) replay from one site at 75 % depth (only the downstream cone runs);
//   (c) a patching sweep: one denoising patch per relu (or per site of the
//       first type found), replayed; against (sites x plain forward).
// Usage: intervention_overhead MODEL_DIR [REPS] [MODEL...]
// (MODEL_DIR from `/usr/bin/python3 scripts/export_torchvision.py DIR resnet18
// transformer_encoder`).

#include "timing.hpp"

#include <torchlens/intervene.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace tl = torchlens;
using torchlens::bench::median;
using torchlens::bench::time_ms;

namespace {

/// Every op pass of the first type present among relu, gelu, add, or else of
/// the type of the op in the middle of the graph (under no-grad, PyTorch's
/// TransformerEncoder runs one fused op per layer).
std::vector<std::string> sites_of(const tl::ModelLog& log) {
  std::vector<std::string> types = {"relu", "gelu", "add"};
  types.push_back(log[static_cast<std::int64_t>(log.size() / 2)]->layer_type);
  for (const auto& type : types) {
    std::vector<std::string> out;
    for (auto layer : log) {
      if (layer->layer_type == type && layer->kind == tl::NodeKind::op)
        out.push_back(layer.label());
    }
    if (!out.empty()) return out;
  }
  return {};
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: intervention_overhead MODEL_DIR [REPS] [MODEL...]\n";
    return 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 2 ? std::stoi(argv[2]) : 11;
  std::vector<std::string> names;
  for (int i = 3; i < argc; ++i) names.emplace_back(argv[i]);
  if (names.empty()) names = {"resnet18", "transformer_encoder"};
  at::set_num_threads(1);
  std::cout << "threads: 1, reps: " << reps << " (medians, interleaved)\n\n"
            << "| model | sites | plain ms | (a) live, 1 site, no log | (b) replay from 75 % | "
               "(c) patch sweep / (sites x plain) |\n|---|---|---|---|---|---|\n";
  for (const auto& name : names) {
    auto model = torch::jit::load(dir + "/" + name + ".pt");
    model.eval();
    const at::Tensor x = torch::jit::load(dir + "/" + name + ".ref.pt").attr("x").toTensor();
    const std::vector<c10::IValue> in{x};
    const std::vector<c10::IValue> in2{x.flip(0) * 0.5};
    torch::NoGradGuard no_grad;
    const auto options = tl::LogOptions().keep_replay(true).seed(0);
    const tl::ModelLog ref = tl::log_forward_pass(model, in, options);
    const tl::ModelLog corrupt = tl::log_forward_pass(model, in2, options);
    const auto sites = sites_of(ref);
    if (sites.empty()) {
      std::cerr << name << ": no op to intervene on\n";
      return 1;
    }
    const auto live = tl::Interventions()
                          .at(tl::sel::label(sites[sites.size() / 2]), tl::zero_ablate())
                          .resolve(ref);
    const auto late = tl::Interventions()
                          .at(tl::sel::label(sites[sites.size() * 3 / 4]), tl::zero_ablate())
                          .resolve(ref);
    tl::patching::PatchOptions sweep;
    sweep.site(tl::sel::func(ref[sites.front()]->layer_type))
        .metric([](const at::Tensor& y) { return y.flatten()[0].item<double>(); })
        .engine(tl::Engine::replay);
    std::vector<double> plain, a, b, c;
    for (int r = 0; r < 3; ++r) { // warm up every path (TorchScript's profiling runs first)
      (void)model.forward(in);
      (void)tl::run_with_interventions(model, in, live);
      (void)tl::replay(ref, late);
    }
    for (int r = 0; r < reps; ++r) {
      plain.push_back(time_ms([&] { (void)model.forward(in); }));
      a.push_back(time_ms([&] { (void)tl::run_with_interventions(model, in, live); }));
      b.push_back(time_ms([&] { (void)tl::replay(ref, late); }));
      if (r < 3)
        c.push_back(time_ms([&] { (void)tl::patching::activation_patch(ref, corrupt, sweep); }));
    }
    const double p = median(plain);
    std::cout << std::fixed << std::setprecision(2) << "| " << name << " | " << sites.size()
              << " | " << p << " | " << median(a) / p << "x | " << median(b) / p << "x | "
              << median(c) / (p * static_cast<double>(sites.size())) << "x |\n";
  }
  return 0;
}
