// `torchlens extract` throughput against plain batched forward passes over the
// same stimuli, in the same run (docs/extract.md). Model: the TorchScript export
// of torchvision's resnet18 (scripts/export_torchvision.py). Stimuli: random
// 3xSxS float32, written to a temporary [N, 3, S, S] .npy first.
//
// Usage: extract_throughput MODEL_DIR [N=256] [BATCH=32] [SIZE=64] [REPS=3]
//
// Rows: plain forward (rows read from the .npy + model.forward, no grad);
// extract (extract_to_dir: structure logged on batch 1, fast captures after,
// rows written + fdatasync + index.json per batch); capture only (the
// Extractor without files), to split capture cost from I/O.

#include "timing.hpp"

#include <torchlens/extract/extract.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace ex = torchlens::extract;
namespace fs = std::filesystem;

namespace {

using torchlens::bench::median;

double seconds(const std::function<void()>& f) {
  return torchlens::bench::time_ms(f) / 1e3;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: extract_throughput MODEL_DIR [N=256] [BATCH=32] [SIZE=64] [REPS=3]\n";
    return 2;
  }
  const std::string model_path = (fs::path(argv[1]) / "resnet18.pt").string();
  const std::int64_t n = argc > 2 ? std::atoll(argv[2]) : 256;
  const std::int64_t batch = argc > 3 ? std::atoll(argv[3]) : 32;
  const std::int64_t size = argc > 4 ? std::atoll(argv[4]) : 64;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 3;
  if (!fs::exists(model_path)) {
    std::cerr << model_path << " not found: /usr/bin/python3 scripts/export_torchvision.py "
              << argv[1] << " resnet18\n";
    return 2;
  }
  const std::vector<std::string> keys{"layer1", "layer3", "avgpool"};

  const fs::path tmp = fs::temp_directory_path() / "torchlens-extract-bench";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string stimuli_path = (tmp / "stimuli.npy").string();
  torch::manual_seed(0);
  torchlens::io::write_npy(stimuli_path, torch::randn({n, 3, size, size}));
  const auto stimuli = ex::Stimuli::open(stimuli_path);

  auto model = torch::jit::load(model_path);
  model.eval();

  auto plain = [&] {
    torch::NoGradGuard no_grad;
    for (std::int64_t s = 0; s < n; s += batch) {
      const auto x = stimuli.rows(s, std::min(batch, n - s));
      (void)model.forward({x});
    }
  };
  int run_id = 0;
  ex::ExtractResult last;
  auto extract = [&] {
    ex::ExtractOptions o;
    o.model_path = model_path;
    o.keys = keys;
    o.batch_size = batch;
    o.seed = 0;
    o.out_dir = (tmp / ("out" + std::to_string(run_id++))).string();
    last = ex::extract_to_dir(model, stimuli, o);
    fs::remove_all(o.out_dir);
  };
  auto capture_only = [&] {
    ex::Extractor e(model, keys, 0, std::min(batch, n));
    for (std::int64_t s = 0; s < n; s += batch)
      (void)e.run(stimuli.rows(s, std::min(batch, n - s)));
  };

  // Stop early at about a quarter of resnet18's depth (layer1 only): seconds per
  // batch after the structure batch (which runs the whole model), in memory.
  const std::int64_t rows = std::min(batch, n);
  auto per_batch = [&](bool stop_early) {
    ex::Extractor e(model, {"layer1"}, 0, rows, stop_early);
    (void)e.run(stimuli.rows(0, rows));
    std::int64_t batches = 0;
    const double s = seconds([&] {
      for (std::int64_t start = rows; start < n; start += rows, ++batches)
        (void)e.run(stimuli.rows(start, std::min(rows, n - start)));
    });
    return s / static_cast<double>(std::max<std::int64_t>(batches, 1));
  };

  // measured before any plain forward: once the profiling executor has run
  // the model, later captures in this process may see its optimised graph
  std::vector<double> th, tf;
  (void)per_batch(true);
  for (int i = 0; i < reps; ++i) {
    th.push_back(per_batch(true));
    tf.push_back(per_batch(false));
  }

  // warm up every path (TorchScript's profiling runs included)
  for (int i = 0; i < 2; ++i) {
    plain();
    capture_only();
  }
  extract();
  std::vector<double> tp, te, tc;
  for (int i = 0; i < reps; ++i) { // interleaved, so drift hits all alike
    tp.push_back(seconds(plain));
    te.push_back(seconds(extract));
    tc.push_back(seconds(capture_only));
  }
  const double p = median(tp), e = median(te), c = median(tc), h = median(th), f = median(tf);
  const double plain_batch = p / static_cast<double>((n + rows - 1) / rows);
  const auto rate = [&](double s) { return static_cast<double>(n) / s; };
  std::cout << "resnet18 (TorchScript), " << n << " stimuli 3x" << size << "x" << size << ", batch "
            << batch << ", layers";
  for (const auto& l : last.layers) {
    std::cout << " " << l.label << "[";
    for (std::size_t i = 1; i < l.shape.size(); ++i) std::cout << (i > 1 ? "," : "") << l.shape[i];
    std::cout << "]";
  }
  std::cout << ", torch threads " << at::get_num_threads() << ", median of " << reps << "\n\n"
            << std::fixed << std::setprecision(2)
            << "| path | seconds | stimuli/s | time vs plain |\n|---|---|---|---|\n"
            << "| plain batched forward | " << p << " | " << std::setprecision(1) << rate(p)
            << " | 1.00x |\n"
            << std::setprecision(2) << "| extract (files, fdatasync, index) | " << e << " | "
            << std::setprecision(1) << rate(e) << " | " << std::setprecision(2) << e / p << "x |\n"
            << "| capture only (Extractor, no files) | " << c << " | " << std::setprecision(1)
            << rate(c) << " | " << std::setprecision(2) << c / p << "x |\n\n"
            << "Stop early (layer1 saved, ~25% of the depth), seconds per batch after the "
               "first:\n\n| path | s/batch | vs plain forward |\n|---|---|---|\n"
            << std::setprecision(4) << "| plain batched forward | " << plain_batch << " | 1.00x |\n"
            << "| capture, whole forward | " << f << " | " << std::setprecision(2)
            << f / plain_batch << "x |\n"
            << std::setprecision(4) << "| capture, stopped after layer1 | " << h << " | "
            << std::setprecision(2) << h / plain_batch << "x |\n";
  fs::remove_all(tmp);
  return 0;
}
