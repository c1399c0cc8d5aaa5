// A program that uses an installed torchlens, as a lab's code would: built by
// scripts/check-install.sh with Meson (pkg-config), Meson (subproject) and CMake
// (find_package). Logs a small model and checks what it logged.

#include <torchlens/torchlens.hpp>

#include <torch/torch.h>

#include <iostream>

struct NetImpl : torch::nn::Module {
  NetImpl() : fc(register_module("fc", torch::nn::Linear(3, 2))) {}
  torch::Tensor forward(torch::Tensor x) {
    const torchlens::ModuleScope scope(*this);
    return torch::relu(fc(x));
  }
  torch::nn::Linear fc;
};
TORCH_MODULE(Net);

int main() {
  torch::manual_seed(0);
  Net net;
  const auto x = torch::randn({4, 3});
  const auto log = torchlens::log_forward_pass(net, x, torchlens::LogOptions().seed(0));
  const bool ok = torch::allclose(log["output_1"].activation(), net(x)) &&
                  log["fc"].label() == "addmm_1_2" && log["relu_1_3"].parents().size() == 1 &&
                  TORCHLENS_JSON_SCHEMA_VERSION == 3;
  std::cout << (ok ? "consumer OK, torchlens " : "consumer MISMATCH, torchlens ")
            << TORCHLENS_VERSION_STRING << "\n";
  return ok ? 0 : 1;
}
