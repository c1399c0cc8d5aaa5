#pragma once
/// \file
/// The graph as Graphviz DOT, in TorchLens's visual code (behaviour report §5):
/// header, node labels and colours, module clusters, collapsed modules, `IF`
/// and argument edge labels, rolled views with `In`/`Out` pass labels.
/// Torch-free.
///
/// Two steps, both public: build_dot_graph() turns a ModelGraph into a DotGraph
/// (one vertex per drawn node, attributes resolved, module clusters as a tree),
/// and write_dot() prints it with Boost.Graph's write_graphviz machinery: the
/// DotVertexWriter / DotEdgeWriter / DotGraphWriter functors. write_graphviz
/// knows no clusters, so a drawing with clusters is printed by the same writers
/// inside nested `subgraph cluster_*` blocks; a drawing without clusters goes
/// through boost::write_graphviz itself. Output is deterministic (creation
/// order).
///
/// Compiled in src/io/dot/: layout.cpp (which nodes and clusters are drawn),
/// style.cpp (the visual code, as write_graphviz property writers) and
/// write.cpp (printing); see docs/render.md.

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/io/dot_options.hpp>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/graphviz.hpp> // the writers below are for boost::write_graphviz

#include <ostream>
#include <string>
#include <vector>

namespace torchlens::io {

/// A drawn node.
struct DotNode {
  std::string name; ///< DOT id (label with `:` → `pass`; `module.ADDR[:PASS]`
                    ///< if collapsed)
  DotAttributes attributes;
  int cluster = -1;       ///< innermost enclosing cluster, -1 for none
  bool is_module = false; ///< a collapsed module (box3d)
};

/// A drawn edge.
struct DotEdge {
  DotAttributes attributes;
  int cluster = -1; ///< lowest cluster holding both ends, -1 for the top level
};

/// A module cluster (`subgraph cluster_*`).
struct DotCluster {
  std::string name;   ///< `cluster_ADDR_passN` (unrolled) or `cluster_ADDR` (rolled)
  ModuleFrame module; ///< pass 0 when rolled
  int parent = -1;    ///< enclosing cluster, -1 for the top level
  int depth = 1;      ///< 1 for top-level modules
  DotAttributes attributes;
};

/// Drawing-level data.
struct DotGraphInfo {
  DotAttributes attributes;         ///< `graph [...]` of the whole drawing
  std::vector<DotCluster> clusters; ///< parents before children
  std::string sink;                 ///< node forced to `rank=sink` (last output), or ""
};

/// The drawing: what write_dot prints. Vertices in drawing order.
using DotGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, DotNode,
                                       DotEdge, DotGraphInfo>;

/// write_graphviz vertex writer: a node's `[attributes]`.
struct DotVertexWriter {
  const DotGraph* g;
  template <class V>
  void operator()(std::ostream& os, const V& v) const {
    os << (*g)[v].attributes;
  }
};

/// write_graphviz edge writer: an edge's `[attributes]`.
struct DotEdgeWriter {
  const DotGraph* g;
  template <class E>
  void operator()(std::ostream& os, const E& e) const {
    os << (*g)[e].attributes;
  }
};

/// write_graphviz graph writer: `graph [...]` and the sink rank.
struct DotGraphWriter {
  const DotGraph* g;
  void operator()(std::ostream& os) const;
};

/// Builds the drawing of a graph (run the default pass pipeline on it first:
/// labels, ancestry, conditionals and layers come from the passes). Throws
/// std::invalid_argument when options.nesting_depth() < 1.
DotGraph build_dot_graph(const ModelGraph& g, const DotOptions& options = {});

/// Prints a drawing: through boost::write_graphviz when it has no clusters,
/// else with the same writers inside nested `subgraph cluster_*` blocks.
void write_dot(std::ostream& os, const DotGraph& dg);

/// Writes the DOT drawing of a graph.
void write_dot(std::ostream& os, const ModelGraph& g, const DotOptions& options = {});

/// The DOT drawing of a graph as a string.
std::string to_dot(const ModelGraph& g, const DotOptions& options = {});

} // namespace torchlens::io
