#pragma once
// TorchLens's visual code (private to src/io/dot): colours, shapes, labels,
// `IF` and argument edge labels, dashed lines for what no input reaches,
// cluster pens, the header. Written as Boost.Graph property writers over a
// Layout: each functor resolves the attributes of one element (attributes(),
// the user's callback from DotOptions applied last) and, as write_graphviz
// expects of a property writer, prints them as `[k=v, ...]`. Torch-free.

#include "layout.hpp"

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/io/dot_options.hpp>

#include <cstddef>
#include <ostream>

namespace torchlens::io::detail {

/// Nodes: op passes or layers (label, fill, shape, outline), collapsed modules (box3d).
struct NodeStyle {
  const ModelGraph* g;
  const Layout* layout;
  const DotOptions* options;
  DotAttributes attributes(LayoutGraph::vertex_descriptor v) const;
  void operator()(std::ostream& os, LayoutGraph::vertex_descriptor v) const { os << attributes(v); }
};

/// Edges: `IF`, argument positions, `In`/`Out` pass labels, solid or dashed.
struct EdgeStyle {
  const ModelGraph* g;
  const Layout* layout;
  const DotOptions* options;
  DotAttributes attributes(LayoutGraph::edge_descriptor e) const;
  void operator()(std::ostream& os, LayoutGraph::edge_descriptor e) const { os << attributes(e); }
};

/// Module clusters (by index into Layout::clusters): title, type, pen width, style.
struct ClusterStyle {
  const Layout* layout;
  const DotOptions* options;
  DotAttributes attributes(std::size_t cluster) const;
};

/// The drawing: the header (model, totals), direction, ordering; as a
/// write_graphviz graph property writer also the sink rank.
struct GraphStyle {
  const ModelGraph* g;
  const Layout* layout;
  const DotOptions* options;
  DotAttributes attributes() const;
  void operator()(std::ostream& os) const;
};

} // namespace torchlens::io::detail
