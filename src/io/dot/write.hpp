#pragma once
// Printing helpers shared by the writer and the style (private to src/io/dot).
// Torch-free.

#include <torchlens/io/dot_options.hpp>

#include <ostream>
#include <string>

namespace torchlens::io::detail {

/// The graph-level lines of a drawing: `graph [...];` (when there are
/// attributes) and the `rank=sink` block of `sink` (when not "").
void write_graph_properties(std::ostream& os, const DotAttributes& attributes,
                            const std::string& sink);

} // namespace torchlens::io::detail
