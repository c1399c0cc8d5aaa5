#pragma once
/// \file
/// The log as JSON: model totals and one object per layer pass.

#include <torchlens/log/model_log.hpp>

#include <iosfwd>
#include <string>
#include <string_view>

namespace torchlens::io {

/// `"text"` with JSON escapes.
std::string json_string(std::string_view s);
/// Writes the log's metadata (no activations) as one JSON document.
void write_json(std::ostream& os, const ModelLog& log);

} // namespace torchlens::io
