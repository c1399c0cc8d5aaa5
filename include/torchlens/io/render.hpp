#pragma once
/// \file
/// Rendering the drawing of a log to SVG, PNG or PDF through Graphviz's
/// libraries (libgvc/cgraph, no `dot` process). Built when the `graphviz`
/// Meson feature finds libgvc; otherwise every render call throws c10::Error
/// while DOT writing (torchlens/io/dot.hpp) keeps working. Only the drawing's
/// options are needed here (torchlens/io/dot_options.hpp); include dot.hpp for
/// to_dot() and the DotGraph.

#include <torchlens/config.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/io/dot_options.hpp>

#include <cstddef>
#include <string>

namespace torchlens {
class ModelLog;
} // namespace torchlens

namespace torchlens::io {

/// Options of render(): where, which format, which layout engine, what drawing.
/// `RenderOptions().path("net.svg").dot(DotOptions().nesting_depth(2))`.
struct RenderOptions {
  /// Output file. Its extension (`.svg`, `.png`, `.pdf`) gives the format
  /// unless format() is set.
  TORCHLENS_ARG(std::string, path);
  /// Any Graphviz output format (`svg`, `png`, `pdf`, `dot`, ...); "" = from path().
  TORCHLENS_ARG(std::string, format);
  /// Graphviz layout engine (`dot`, `sfdp`, ...); "" = auto: `dot` up to
  /// kDotNodeLimit drawn nodes, `sfdp` beyond (see docs/render.md).
  TORCHLENS_ARG(std::string, engine);
  /// The drawing: rolled/unrolled, nesting depth, direction, buffers, callbacks.
  TORCHLENS_ARG(DotOptions, dot);
};

/// Drawn-node count above which the auto engine switches from `dot` to `sfdp`.
inline constexpr std::size_t kDotNodeLimit = 6000;

/// True when torchlens was built with Graphviz (libgvc).
bool render_available() noexcept;

/// The engine the auto choice picks for a drawing of `drawn_nodes` nodes.
std::string auto_engine(std::size_t drawn_nodes);

/// Renders a log's graph to options.path(); throws c10::Error on failure or
/// when Graphviz is not available.
void render(const ModelLog& log, const RenderOptions& options);

/// Renders a graph (run the default pass pipeline on it first).
void render(const ModelGraph& graph, const RenderOptions& options);

/// Lays out DOT text and writes it to options.path() (options.dot() unused).
void render_dot(const std::string& dot, const RenderOptions& options);

/// Lays out DOT text and returns the rendered bytes (`svg` text, `png` bytes, ...).
std::string render_dot_to_string(const std::string& dot, const std::string& format,
                                 const std::string& engine = "dot");

} // namespace torchlens::io
