#pragma once
/// \file
/// Loading a TorchScript archive that may be corrupt or hostile. LibTorch's
/// loader trusts the file: a zip whose entries claim terabytes is unpacked into
/// memory until the OS kills the process, and a tensor whose shape reaches far
/// past its storage loads without complaint and is then read out of bounds.
/// load_torchscript() checks both, before and after torch::jit::load, and
/// throws one c10::Error naming the file and what is wrong.

#include <cstdint>
#include <string>

namespace torch::jit {
struct Module; // <torch/script.h> to use the result
} // namespace torch::jit

namespace torchlens::io {

/// Checks a TorchScript archive's zip directory before anything is unpacked:
/// a zip at all (zip64 included), every entry inside the file, and the bytes the
/// entries unpack to at most `max_unpacked_bytes` (0: this machine's physical
/// memory). Throws c10::Error otherwise.
void check_torchscript_archive(const std::string& path, std::uint64_t max_unpacked_bytes = 0);

/// Throws c10::Error if a tensor `module` holds — parameters, buffers, other
/// attributes (in lists, tuples, dicts too) and the tensor constants of its
/// code — reaches outside its storage. `name` names the source in the message.
/// Looking at the code compiles every function TorchScript has not compiled
/// yet (it compiles lazily): a compile error is a torch::jit::ErrorReport.
void check_tensor_bounds(const torch::jit::Module& module, const std::string& name);

/// check_torchscript_archive, torch::jit::load (errors rewritten as
/// "<path> is not a TorchScript archive (<LibTorch's reason>)"), then
/// check_tensor_bounds. The module keeps the training flag it was saved with.
torch::jit::Module load_torchscript(const std::string& path, std::uint64_t max_unpacked_bytes = 0);

} // namespace torchlens::io
