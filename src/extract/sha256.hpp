#pragma once
// Private to src/extract: SHA-256 (FIPS 180-4) of strings and files, for the
// plan's model and options hashes (compared with Python's hashlib in the tests).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace torchlens::extract::detail_io {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  /// Lower-case hex digest; the object is spent afterwards.
  std::string hex();

 private:
  void block(const unsigned char* p);
  std::array<std::uint32_t, 8> h_;
  std::array<unsigned char, 64> buf_{};
  std::size_t used_ = 0;
  std::uint64_t bytes_ = 0;
};

std::string sha256_hex(std::string_view s);
/// Of a file's bytes, read in 1 MiB blocks; throws ExtractError when unreadable.
std::string sha256_file(const std::string& path);

} // namespace torchlens::extract::detail_io
