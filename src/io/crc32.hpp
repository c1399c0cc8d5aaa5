#pragma once
// Private to src/io: the CRC-32 of zip archives (PKWARE APPNOTE 4.4.7;
// polynomial 0xEDB88320, reflected), one byte at a time.

#include <array>
#include <cstdint>
#include <string_view>

namespace torchlens::io::detail {

inline std::uint32_t crc32(std::string_view data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1U) ? 0xEDB88320U ^ (c >> 1U) : c >> 1U;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFU;
  for (unsigned char b : data) c = table[(c ^ b) & 0xFFU] ^ (c >> 8U);
  return c ^ 0xFFFFFFFFU;
}

} // namespace torchlens::io::detail
