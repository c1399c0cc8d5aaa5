// Cost of saving every gradient (docs/gradients.md) against the plain forward +
// backward in the same run, on TorchScript exports with random weights:
//   (a) plain: model.forward, loss.backward();
//   (b) log_forward_pass saving every activation and every gradient, then the
//       same backward from the log's returned output (the hooks fill the log).
// Usage: gradient_overhead MODEL_DIR [REPS] [MODEL...]
// (MODEL_DIR from `/usr/bin/python3 scripts/export_torchvision.py DIR resnet18`).

#include "timing.hpp"

#include <torchlens/torchlens.hpp>

#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace tl = torchlens;
using torchlens::bench::median;
using torchlens::bench::time_ms;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: gradient_overhead MODEL_DIR [REPS] [MODEL...]\n";
    return 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 2 ? std::stoi(argv[2]) : 11;
  std::vector<std::string> names;
  for (int i = 3; i < argc; ++i) names.emplace_back(argv[i]);
  if (names.empty()) names = {"resnet18"};
  at::set_num_threads(1);
  std::cout << "threads: 1, reps: " << reps << " (medians, interleaved)\n\n"
            << "| model | layers | gradients saved | plain fwd+bwd ms | logged fwd+bwd, all "
               "activations and gradients |\n|---|---|---|---|---|\n";
  for (const auto& name : names) {
    auto model = torch::jit::load(dir + "/" + name + ".pt");
    model.eval();
    const at::Tensor x0 = torch::jit::load(dir + "/" + name + ".ref.pt").attr("x").toTensor();
    torch::jit::GraphOptimizerEnabledGuard plain_graph(false); // as capture runs it
    const auto options = tl::LogOptions().seed(0).save_gradients(tl::SaveSpec::all());
    std::size_t layers = 0, saved = 0;
    std::vector<double> plain, logged;
    for (int r = 0; r < reps; ++r) {
      plain.push_back(time_ms([&] {
        auto x = x0.clone().requires_grad_(true);
        model.forward({x}).toTensor().pow(2).mean().backward();
      }));
      logged.push_back(time_ms([&] {
        auto x = x0.clone().requires_grad_(true);
        auto log = tl::log_forward_pass(model, {x}, options);
        log.returned().at(0).pow(2).mean().backward();
        layers = log.size();
        saved = log.gradient_layers().size();
      }));
      for (const auto& p : model.parameters()) p.mutable_grad().reset();
    }
    const double p = median(plain), l = median(logged);
    std::cout << "| " << name << ", " << c10::str(x0.sizes()) << " | " << layers << " | " << saved
              << " | " << std::fixed << std::setprecision(1) << p << " | " << std::setprecision(2)
              << l / p << "× |\n";
  }
  return 0;
}
