// Fuzz target for the .npy reader: any bytes, as a header in memory and as a
// file on disk, must give a tensor or a c10::Error; nothing else. A tensor that
// comes back must agree with its file: the header parsed alone, the data bytes
// the header claims, those bytes themselves. Built two ways (tests/fuzz/README.md):
// under libFuzzer by scripts/fuzz.sh, and linked to driver.cpp as a meson test
// that replays the corpus (tests/fuzz/corpus/npy), truncations and mutations.

#include "scratch.hpp"

#include <torchlens/io/npy.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace {
[[noreturn]] void fail(const char* what) {
  torchlens::fuzz::fail("fuzz_npy", what);
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  bool header_ok = false;
  torchlens::io::NpyHeader header;
  try {
    header = torchlens::io::parse_npy_header(bytes, "input");
    header_ok = true;
    if (header.data_offset > size) fail("data offset past the end of the bytes");
  } catch (const c10::Error&) {
  }
  const std::string& path = torchlens::fuzz::write_scratch(bytes, "input.npy");
  try {
    const at::Tensor t = torchlens::io::read_npy(path);
    if (!header_ok) fail("read_npy accepted a header parse_npy_header refused");
    if (t.sizes() != c10::IntArrayRef(header.shape)) fail("tensor shape differs from its header");
    const auto need = torchlens::io::npy_data_bytes(header, t.element_size());
    if (need != static_cast<std::uint64_t>(t.nbytes())) fail("tensor bytes differ from the claim");
    if (header.data_offset + need > size) fail("tensor read past the end of the file");
    if (need != 0 && std::memcmp(t.data_ptr(), data + header.data_offset, need) != 0) {
      fail("tensor bytes differ from the file's");
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
