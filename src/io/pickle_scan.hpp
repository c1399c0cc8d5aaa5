#pragma once
// Private to src/: a walk over a pickle (protocols 0-5) that checks what
// LibTorch's unpickler trusts — every argument inside the bytes, MARKs and the
// stack balanced, memo ids bounded by what was memoised — and collects the
// persistent storage ids ('storage', torch.XStorage, key, location, numel) so
// that their sizes can be checked against the archive's records. Used by
// model_file.cpp before torch::jit::load; it unpickles nothing.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace torchlens::io::pickle {

struct StorageRef {
  std::string type; // "FloatStorage"
  std::string key;  // the record under data/ (or constants/)
  std::uint64_t numel = 0;
};

/// Bytes per element of a `torch.XStorage` type; 0 when unknown.
std::size_t storage_element_size(const std::string& type);

/// Walks `bytes`; throws c10::Error ("<name> is malformed at byte N: ...") on
/// the first thing LibTorch's unpickler would read out of bounds, allocate
/// without bound, or index past its stacks for.
std::vector<StorageRef> scan(std::string_view bytes, const std::string& name);

} // namespace torchlens::io::pickle
