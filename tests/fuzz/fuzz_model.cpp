// Fuzz target for the model loader's error path: any bytes as a TorchScript
// archive must load or give a c10::Error — never a crash, a hang, another
// exception, or an allocation the file does not justify (the unpack limit is
// 256 MiB here). What loads must hold only tensors inside their storages, and
// its code must compile: the loader's checks, re-asserted.

#include "scratch.hpp"

#include <torchlens/io/model_file.hpp>

#include <c10/util/Exception.h>
#include <torch/script.h>

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string& path = torchlens::fuzz::write_scratch(bytes, "model.pt");
  try {
    const torch::jit::Module m = torchlens::io::load_torchscript(path, 256ULL << 20);
    try {
      torchlens::io::check_tensor_bounds(m, path);
    } catch (const c10::Error&) {
      torchlens::fuzz::fail("fuzz_model", "a loaded model holds a tensor outside its storage");
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
