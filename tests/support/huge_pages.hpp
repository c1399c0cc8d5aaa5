#pragma once
// Whether the kernel backs a block with transparent huge pages, as
// /proc/self/smaps reports it: for the tests of the blocks advised to take them
// (the graph's arrays, the passes' scratch arena).
#include <torchlens/graph/array_allocator.hpp>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace torchlens::test {

/// Whether the kernel will back the page holding `p` with huge pages
/// (/proc/self/smaps's THPeligible for its mapping): 1 or 0, or -1 where it
/// cannot tell (no smaps, no such field, transparent huge pages off, or pages
/// other than 4 KiB, whose huge pages are not 2 MiB).
inline int huge_page_eligible(const void* p) {
#if defined(__linux__)
  if (::sysconf(_SC_PAGESIZE) != 4096) return -1;
#endif
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(mode, modes) || modes.find("[never]") != std::string::npos) return -1;
  std::ifstream in("/proc/self/smaps");
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
    } else if (inside && line.starts_with("THPeligible:")) {
      return line.find('1') != std::string::npos ? 1 : 0;
    }
  }
  return -1;
}

/// The first whole 4 KiB page of a block: where its advised range begins.
inline const void* first_page(const void* p) {
  return reinterpret_cast<const void*>((reinterpret_cast<std::uintptr_t>(p) + 4095) &
                                       ~std::uintptr_t{4095});
}

/// Whether the whole pages of a block hold a 2 MiB-aligned stretch: the kernel
/// calls a mapping eligible only then (an array of 2-4 MiB may not).
inline bool holds_huge_page(const void* p, std::size_t bytes) {
  const auto lo = reinterpret_cast<std::uintptr_t>(first_page(p));
  const auto hi = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~std::uintptr_t{4095};
  const auto huge = std::uintptr_t{torchlens::detail::kHugePageBytes};
  return ((lo + huge - 1) & ~(huge - 1)) + huge <= hi;
}

} // namespace torchlens::test
