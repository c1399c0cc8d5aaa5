// Peak resident memory of capture against the plain forward pass (issue 14:
// every activation saved must stay within the plain forward's peak plus the
// saved bytes × 1.05). Peaks are per process (VmHWM), so each measurement runs
// in a fresh process: this program starts itself once per model and mode.
// Each run: load the TorchScript export, run three times (plain forward, or
// log_forward_pass saving nothing or everything, the log freed between runs),
// report the peak RSS over the process's life.
// Usage: peak_memory MODEL_DIR [MODEL...]   (NAME or NAME:2x10x32; resnet18,
// densenet121 and mobilenet_v2 by default; exports from
// `/usr/bin/python3 scripts/export_torchvision.py DIR densenet121 ...`)

#include "timing.hpp"

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace tl = torchlens;

namespace {

/// The process's peak resident set (VmHWM) in bytes.
double peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;
  }
  return -1;
}

/// One measurement in this process: prints "peak saved_bytes".
int measure(const std::string& path, const std::string& dims, const std::string& mode) {
  auto model = torch::jit::load(path);
  model.eval();
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const std::vector<c10::IValue> in{torch::randn(torchlens::bench::model_spec("m:" + dims).shape)};
  double saved = 0;
  for (int i = 0; i < 3; ++i) {
    if (mode == "plain") {
      (void)model.forward(in);
    } else {
      const auto spec = mode == "saved" ? tl::SaveSpec::all() : tl::SaveSpec::none();
      const auto log = tl::log_forward_pass(model, in, tl::LogOptions().save(spec));
      saved = static_cast<double>(log.totals().saved_bytes);
    }
  }
  std::cout << std::fixed << peak_rss_bytes() << " " << saved << "\n";
  return 0;
}

struct Run {
  double peak = 0, saved = 0;
};

Run run_child(const std::string& path, const std::string& dims, const std::string& mode) {
  const std::string cmd =
      "/proc/" + std::to_string(::getpid()) + "/exe --one '" + path + "' " + dims + " " + mode;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(cmd.c_str(), "r"), ::pclose);
  Run r;
  if (!pipe || std::fscanf(pipe.get(), "%lf %lf", &r.peak, &r.saved) != 2) {
    std::cerr << "peak_memory: the run of " << path << " (" << mode << ") failed\n";
    std::exit(1);
  }
  return r;
}

} // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--one") return measure(argv[2], argv[3], argv[4]);
  if (argc < 2) {
    std::cerr << "usage: peak_memory MODEL_DIR [MODEL...]\n";
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::string> models{"resnet18", "densenet121", "mobilenet_v2"};
  if (argc > 2) models.assign(argv + 2, argv + argc);
  std::cout << "| model | plain peak MB | metadata-only peak MB | all-saved peak MB | saved MB | "
               "limit: plain + saved × 1.05 MB | all saved within |\n"
            << "|---|---|---|---|---|---|---|\n";
  for (const std::string& arg : models) {
    const auto m = torchlens::bench::model_spec(arg);
    const std::string path = dir + "/" + m.name + ".pt";
    const Run plain = run_child(path, m.dims, "plain");
    const Run meta = run_child(path, m.dims, "metadata");
    const Run saved = run_child(path, m.dims, "saved");
    const double limit = plain.peak + saved.saved * 1.05;
    std::cout << std::fixed << std::setprecision(1) << "| " << m.name << " (" << m.dims << ") | "
              << plain.peak / 1e6 << " | " << meta.peak / 1e6 << " | " << saved.peak / 1e6 << " | "
              << saved.saved / 1e6 << " | " << limit / 1e6 << " | "
              << (saved.peak <= limit ? "yes" : "no") << " |\n";
  }
  return 0;
}
