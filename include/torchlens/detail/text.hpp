#pragma once
/// \file
/// Small text helpers shared by the summary, JSON and DOT views (torch-free).

#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>

namespace torchlens::detail {

/// `48 B`, `2.3 KB`, `1.5 MB` (1024-based, one decimal above bytes).
inline std::string size_text(std::int64_t bytes) {
  static constexpr const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(u == 0 ? 0 : 1) << v << ' ' << units[u];
  return os.str();
}

} // namespace torchlens::detail
