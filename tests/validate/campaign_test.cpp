// The real-model campaign: every torchvision 0.14 classification family plus
// TransformerEncoder, LSTM and GRU models (TorchScript exports with random
// weights from scripts/export_torchvision.py, small inputs) must log and
// validate by re-execution. Prints one table row per model (the table in
// docs/validation.md): ops, time to log, time to validate.
//
// $TORCHLENS_CAMPAIGN_DIR holds the exports, $TORCHLENS_CAMPAIGN_MODELS names
// them (comma-separated); both are set by tests/validate/meson.build.

#include <torchlens/io/model_file.hpp>
#include <torchlens/torchlens.hpp>
#include <torchlens/validate/validate.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace tl = torchlens;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

TEST_CASE("campaign: every exported model logs and validates") {
  const std::string dir = env("TORCHLENS_CAMPAIGN_DIR");
  const auto names = split(env("TORCHLENS_CAMPAIGN_MODELS"));
  REQUIRE_MESSAGE(!dir.empty(), "TORCHLENS_CAMPAIGN_DIR is not set (run through meson test)");
  REQUIRE_FALSE(names.empty());
  at::set_num_threads(1);

  std::cout << "\n| model | input | ops | forward (ms) | log (ms) | validate (ms) | "
               "perturbations (exempted) |\n"
            << "|---|---|---|---|---|---|---|\n";
  int valid = 0;
  for (const auto& name : names) {
    CAPTURE(name);
    std::string path = dir;
    path += "/";
    path += name;
    // through the checked loader: no real archive may be refused (tests/io for hostile ones)
    torch::jit::Module model = torchlens::io::load_torchscript(path + ".pt");
    model.eval();
    const at::Tensor x = torch::jit::load(path + ".ref.pt").attr("x").toTensor();
    const std::vector<c10::IValue> inputs{x};

    // warm up (TorchScript profiles the first two runs and optimizes on the
    // next), then time a plain forward
    double forward_ms = 0;
    {
      torch::NoGradGuard no_grad;
      for (int i = 0; i < 3; ++i) (void)model.forward(inputs);
      const auto t = std::chrono::steady_clock::now();
      (void)model.forward(inputs);
      forward_ms = ms_since(t);
    }
    auto t0 = std::chrono::steady_clock::now();
    const tl::ModelLog log = tl::log_forward_pass(model, inputs, tl::LogOptions().seed(0));
    const double log_ms = ms_since(t0);
    std::size_t ops = 0;
    for (auto v : boost::make_iterator_range(boost::vertices(log.graph()))) {
      // ops re-executed: every op node but the `constant` sources (tensors
      // that are neither inputs, parameters nor buffers: nothing to replay)
      const auto& n = log.graph()[v];
      if (n.kind == tl::NodeKind::op && n.op_name != "prim::Constant") ++ops;
    }

    t0 = std::chrono::steady_clock::now();
    const tl::ValidationReport report =
        tl::validate_saved_activations(model, inputs, tl::LogOptions().seed(0));
    const double validate_ms = ms_since(t0);
    std::ostringstream text;
    text << report;
    INFO(text.str());
    CHECK(report.valid);
    CHECK(report.failures.empty());
    CHECK(report.layers_checked == static_cast<int>(ops));
    CHECK(report.perturbations > 0);
    if (report.valid) ++valid;

    std::ostringstream shape;
    for (std::size_t i = 0; i < static_cast<std::size_t>(x.dim()); ++i) {
      if (i > 0) shape << "×";
      shape << x.size(static_cast<std::int64_t>(i));
    }
    std::cout << std::fixed << std::setprecision(1) << "| " << name << " | " << shape.str() << " | "
              << ops << " | " << forward_ms << " | " << log_ms << " | " << validate_ms << " | "
              << report.perturbations << " (" << report.exempted << ") |"
              << (report.valid ? "" : " INVALID") << "\n"
              << std::flush;
    if (!report.valid) std::cout << report;
    for (const auto& e : report.exemptions) {
      std::cout << "    exempted: " << e.label << " <- " << e.parent << " (" << e.reason << ")\n";
    }
  }
  CHECK(valid == static_cast<int>(names.size()));
}
