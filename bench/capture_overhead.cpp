// Cost of log_forward_pass relative to the plain forward pass, in the same run:
// (a) metadata only, (b) every activation saved. Models: TorchScript exports of
// torchvision's resnet18 and googlenet (random weights, 1x3x224x224), the
// C++-frontend demo model and TorchLens's recurrent toy (LinearLoop: one Linear
// applied five times after a mul, as a C++-frontend and as a TorchScript model:
// tiny ops, so the per-op and per-capture costs dominate), and C++-frontend
// TransformerEncoders: issue 14's small one (2 layers, d=16, seq 5, no-grad) and
// one at three depths (the ratio must not grow with the model).
// Repeated captures of one graph reuse the pass pipeline's result
// (LogOptions::reuse_postprocess); "(a) every time" is metadata only with the
// pipeline run on every capture, as a model's first capture runs it.
// Usage: capture_overhead MODEL_DIR [REPS]
// [NAME[:DxDxD]...] (default resnet18 googlenet at 1x3x224x224) (MODEL_DIR from
// scripts/export_torchvision.py).

#include "../src/cli/demo_model.hpp"
#include "../tests/support/toy_models.hpp"

#include "timing.hpp"

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace tl = torchlens;

namespace {

using torchlens::bench::median;
using torchlens::bench::time_ms;

/// Peak resident memory of the process so far (VmHWM).
double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return static_cast<double>(std::stol(line.substr(6))) / 1e3;
  }
  return 0;
}

void report(const std::string& name, int reps, const std::function<void()>& plain,
            const std::function<tl::ModelLog(tl::LogOptions)>& logged) {
  for (int i = 0; i < 2; ++i) { // warm up every path
    plain();
    (void)logged(tl::LogOptions().seed(0).save(tl::SaveSpec::none()));
    (void)logged(tl::LogOptions().seed(0));
  }
  const auto every_time =
      tl::LogOptions().seed(0).save(tl::SaveSpec::none()).reuse_postprocess(false);
  // interleave the four so drift hits them alike
  std::vector<double> tp, tn, tr, ta;
  for (int i = 0; i < reps; ++i) {
    tp.push_back(time_ms(plain));
    tn.push_back(
        time_ms([&] { (void)logged(tl::LogOptions().seed(0).save(tl::SaveSpec::none())); }));
    tr.push_back(time_ms([&] { (void)logged(every_time); }));
    ta.push_back(time_ms([&] { (void)logged(tl::LogOptions().seed(0)); }));
  }
  const double p = median(tp), n = median(tn), r = median(tr), a = median(ta);
  auto log = logged(tl::LogOptions().seed(0));
  const auto totals = log.totals();
  // tiny models take microseconds: four decimals below 1 ms
  const auto ms = [](double x) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(x < 1 ? 4 : 2) << x;
    return os.str();
  };
  std::cout << std::fixed << std::setprecision(2) << "| " << name << " | " << log.size() << " | "
            << ms(p) << " | " << ms(n) << " | " << n / p << "x | " << r / p << "x | " << ms(a)
            << " | " << a / p << "x | " << totals.tensor_bytes / 1e6 << " MB | "
            << totals.saved_bytes / 1e6 << " MB | " << peak_rss_mb() << " MB |\n";
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr
        << "usage: capture_overhead MODEL_DIR [REPS] [MODEL...]  (NAME, NAME:2x10x32, NAME+grad)\n";
    return 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 2 ? std::stoi(argv[2]) : 15;
  torch::NoGradGuard no_grad; // inference, as a feature extractor runs
  const bool kept = torchlens::bench::keep_freed_memory();
  std::cout << "threads: " << at::get_num_threads() << ", reps: " << reps << " (medians), "
            << (kept ? "freed memory kept in the process (mallopt)" : "glibc's default heap")
            << "\n\n";
  std::cout << "| model | layers | plain ms | metadata ms | (a) ratio | (a) every time | all saved "
               "ms | (b) ratio | all tensors | held by log | peak RSS so far |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  // models: NAME (input 1x3x224x224) or NAME:2x10x32, from argv[3...]
  std::vector<std::string> models{"resnet18", "googlenet"};
  if (argc > 3) models.assign(argv + 3, argv + argc);
  for (const std::string& arg : models) {
    const auto [name, dims, shape, grad] = torchlens::bench::model_spec(arg);
    torch::AutoGradMode mode(grad); // no-grad unless NAME+grad
    auto model = torch::jit::load(dir + "/" + name + ".pt");
    model.eval();
    torch::manual_seed(0);
    std::vector<c10::IValue> in{torch::randn(shape)};
    report(
        name + " (TorchScript, " + dims + (grad ? ", grad" : "") + ")", reps,
        [&] { (void)model.forward(in); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(model, in, o); });
  }
  {
    torch::manual_seed(0);
    tl::cli::DemoNet demo;
    demo->eval();
    auto x = torch::randn({8, 3, 64, 64});
    report(
        "demo (C++ frontend, 8x3x64x64)", reps, [&] { (void)demo->forward(x); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(demo, x, o); });
  }
  // Issue 14's small encoder: 2 layers, d_model 16 (2 heads, feed-forward 32),
  // a sequence of 5, no-grad (LibTorch's C++ layer has no fused path: ~35 ops a
  // layer), where per-op costs weigh most against the forward.
  {
    torch::manual_seed(0);
    torch::nn::TransformerEncoder enc(torch::nn::TransformerEncoderOptions(
        torch::nn::TransformerEncoderLayerOptions(16, 2).dim_feedforward(32), 2));
    enc->eval();
    auto x = torch::randn({5, 1, 16});
    report(
        "TransformerEncoder (C++ frontend, 2 layers, d=16, seq 5, 5x1x16)", reps,
        [&] { (void)enc->forward(x); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(enc, x, o); });
  }
  // Depth: a C++-frontend TransformerEncoder of 2, 12 and 48 layers in grad
  // mode (its unfused path, ~37 ops a layer, modules inferred from the
  // parameters each op reads). The ratio should not grow with the depth.
  for (const std::int64_t layers : {2, 12, 48}) {
    torch::manual_seed(0);
    torch::AutoGradMode grad(true);
    torch::nn::TransformerEncoder enc(torch::nn::TransformerEncoderOptions(
        torch::nn::TransformerEncoderLayerOptions(32, 4).dim_feedforward(64), layers));
    enc->eval();
    auto x = torch::randn({10, 2, 32});
    report(
        "TransformerEncoder (C++ frontend, " + std::to_string(layers) + " layers, 10x2x32, grad)",
        reps, [&] { (void)enc->forward(x); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(enc, x, o); });
  }
  {
    torch::manual_seed(0);
    toy::LinearLoop loop;
    loop->eval();
    auto x = torch::randn(toy::LinearLoopImpl::input_shape());
    report(
        "recurrent toy (C++ frontend LinearLoop, 2x4)", std::max(reps, 101),
        [&] { (void)loop->forward(x); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(loop, x, o); });
  }
  {
    auto loop = toy::ts::linear_loop();
    loop.eval();
    const std::vector<c10::IValue> in{toy::ts::input()};
    report(
        "recurrent toy (TorchScript linear_loop, 3x3)", std::max(reps, 101),
        [&] { (void)loop.forward(in); },
        [&](tl::LogOptions o) { return tl::log_forward_pass(loop, in, o); });
  }
  return 0;
}
