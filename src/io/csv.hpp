#pragma once
// Private to src/: CSV output shared by the result tables (patching, attribution).

#include <string>

namespace torchlens::io {

/// A text field of a CSV row (RFC 4180): in double quotes, every quote doubled,
/// so that commas, quotes and line breaks in a site or label stay in their field.
inline std::string csv_text(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

} // namespace torchlens::io
