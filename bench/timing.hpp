#pragma once
// Timing helpers shared by the benchmarks: wall time of one call, and medians.

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace torchlens::bench {

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

} // namespace torchlens::bench
