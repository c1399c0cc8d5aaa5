#pragma once
/// \file
/// Small text helpers shared by the summary, JSON and DOT views (torch-free).

#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

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

/// A shape in messages, the summary and index files: `[1, 3, 224, 224]`, `[]`.
inline std::string shape_as_list(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ']';
}

/// A shape as TorchLens draws it: `1x3x224x224`; `x5` for 1-D; `x1` for a scalar.
inline std::string shape_as_dims(const std::vector<std::int64_t>& shape) {
  if (shape.empty()) return "x1";
  if (shape.size() == 1) return "x" + std::to_string(shape[0]);
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += 'x';
    out += std::to_string(shape[i]);
  }
  return out;
}

} // namespace torchlens::detail
