// Cost of validation by re-execution relative to the plain forward pass, in the
// same run: (a) validate_log on a log captured with keep_replay (re-execution
// of every op plus one perturbed re-execution per parent), (b) the whole
// validate_saved_activations (plain forward for ground truth + logging with
// every activation saved + (a)). Models: TorchScript exports (random weights),
// resnet18 and googlenet on 1x3x224x224 unless named as NAME or NAME:2x10x32.
// Usage: validation_overhead MODEL_DIR [REPS] [MODEL...]; MODEL+grad runs in grad mode
// (no-grad otherwise).
// (MODEL_DIR from `/usr/bin/python3 scripts/export_torchvision.py DIR resnet18 googlenet`).

#include "timing.hpp"

#include <torchlens/torchlens.hpp>
#include <torchlens/validate/validate.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace tl = torchlens;

namespace {

using torchlens::bench::median;
using torchlens::bench::time_ms;

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: validation_overhead MODEL_DIR [REPS] [MODEL...]\n";
    return 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 2 ? std::stoi(argv[2]) : 5;
  std::cout
      << "threads: " << at::get_num_threads() << ", reps: " << reps << " (medians)\n\n"
      << "| model | ops | plain ms | re-execution only ms | ratio | validate_log ms | (a) ratio | "
         "validate_saved_activations ms | (b) ratio | perturbations (exempted) |\n"
      << "|---|---|---|---|---|---|---|---|---|---|\n";
  int status = 0;
  std::vector<std::string> models{"resnet18", "googlenet"};
  if (argc > 3) models.assign(argv + 3, argv + argc);
  for (const std::string& arg : models) {
    const auto [name, dims, shape, grad] = torchlens::bench::model_spec(arg);
    auto model = torch::jit::load(dir + "/" + name + ".pt");
    model.eval();
    torch::manual_seed(0);
    const std::vector<c10::IValue> in{torch::randn(shape)};

    // everything under no-grad, as the plain forward it is compared with: the
    // ground truth and the log must come from the same mode (a TransformerEncoder
    // takes its fused path only without grad, and its outputs differ in the last bit)
    torch::AutoGradMode mode(grad);
    std::vector<at::Tensor> truth;
    {
      const auto out = model.forward(in);
      truth.push_back(out.isTuple() ? out.toTupleRef().elements()[0].toTensor() : out.toTensor());
    }
    const auto log = tl::log_forward_pass(model, in, tl::LogOptions().seed(0).keep_replay(true));
    tl::ValidationReport last;
    for (int i = 0; i < 2; ++i) { // warm up every path
      (void)model.forward(in);
      last = tl::validate_log(log, truth);
    }
    std::vector<double> tp, tr, ta, tb;
    for (int i = 0; i < reps; ++i) { // interleaved so drift hits all alike
      tp.push_back(time_ms([&] { (void)model.forward(in); }));
      tr.push_back(time_ms(
          [&] { (void)tl::validate_log(log, truth, tl::ValidateOptions().perturb(false)); }));
      ta.push_back(time_ms([&] { last = tl::validate_log(log, truth); }));
      tb.push_back(time_ms([&] {
        const auto r = tl::validate_saved_activations(model, in, tl::LogOptions().seed(0));
        if (!r.valid) std::cerr << name << ": " << r;
      }));
    }
    if (!last.valid) {
      std::cerr << name << ": " << last;
      status = 1;
    }
    const double p = median(tp), r = median(tr), a = median(ta), b = median(tb);
    std::cout << std::fixed << std::setprecision(1) << "| " << name << " (" << dims
              << (grad ? ", grad" : "") << ") | " << last.layers_checked << " | " << p << " | " << r
              << " | " << r / p << "x | " << a << " | " << a / p << "x | " << b << " | " << b / p
              << "x | " << last.perturbations << " (" << last.exempted << ") |\n";
  }
  return status;
}
