#pragma once
// Timing helpers shared by the benchmarks: wall time of one call, and medians.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace torchlens::bench {

/// Keeps the memory glibc frees in the process (its mmap threshold at the
/// maximum, its heap never trimmed), for this process only. A capture allocates
/// from torchlens's pool, which keeps its blocks; a plain forward allocates from
/// glibc, which, depending on what ran before (its mmap threshold rises only
/// after large frees), can hand every large block back to the kernel and fault
/// it in afresh on the next run. Without this the baseline of a model measured
/// after a small one paid those faults (the demo model: 10.6 ms plain against
/// 5.9 ms measured after resnet18, a ratio of 0.6x). Returns false where glibc
/// refused or is not the allocator.
inline bool keep_freed_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  return false;
#endif
}

/// Wall-clock milliseconds of one call of `f`.
inline double time_ms(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Median of `v` (upper median for even sizes).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// A model argument of the benches: `NAME` (input 1x3x224x224) or `NAME:2x10x32`,
/// either with `+grad` to run in grad mode (no-grad otherwise).
struct ModelSpec {
  std::string name;
  std::string dims;
  std::vector<std::int64_t> shape;
  bool grad = false;
};

inline ModelSpec model_spec(std::string arg) {
  ModelSpec m;
  if (arg.size() > 5 && arg.compare(arg.size() - 5, 5, "+grad") == 0) {
    m.grad = true;
    arg.resize(arg.size() - 5);
  }
  const auto colon = arg.find(':');
  m.name = arg.substr(0, colon);
  m.dims = colon == std::string::npos ? "1x3x224x224" : arg.substr(colon + 1);
  for (std::size_t pos = 0; pos <= m.dims.size();) {
    const auto x = std::min(m.dims.find('x', pos), m.dims.size());
    m.shape.push_back(std::stoll(m.dims.substr(pos, x - pos)));
    pos = x + 1;
  }
  return m;
}

} // namespace torchlens::bench
