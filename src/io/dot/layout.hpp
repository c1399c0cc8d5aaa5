#pragma once
// The layout of a drawing (private to src/io/dot): which vertices or layers
// become drawn nodes, which of them collapse into a module box, which module
// clusters they nest in, and which drawn edges join them. Nothing about how
// they look (style.hpp) or how DOT spells them (write.cpp). Torch-free.

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/io/dot_options.hpp>

#include <boost/graph/adjacency_list.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace torchlens::io::detail {

/// One thing that may be drawn: an op pass (unrolled) or a layer (rolled).
struct Item {
  std::vector<Vertex> members;     ///< unrolled vertices, pass order
  std::string name;                ///< DOT id
  std::string title;               ///< `conv2d_1_1:2` / `linear_1_2 (x3)`
  std::vector<ModuleFrame> frames; ///< containment without the root, outer → inner
                                   ///< (pass 0 when rolled)
  int num_passes = 1;
};

/// A drawn node: one item, or a collapsed module pass standing for several.
struct LayoutNode {
  std::string name; ///< DOT id
  int cluster = -1; ///< innermost enclosing cluster, -1 for none
  /// The item drawn (op, input, output, buffer); nullopt for a collapsed module.
  std::optional<std::size_t> item;
  /// The collapsed module (pass 0 when rolled); nullopt for an item.
  std::optional<ModuleFrame> module;
  std::vector<std::size_t> collapsed; ///< collapsed module: the items inside, in order
  Vertex output = 0;                  ///< collapsed module: the vertex whose value leaves it
  bool leaf_box = false;              ///< an item drawn as the box of its leaf module
  bool from_input = false;            ///< some member descends from an input
  std::size_t call_parents = 0;       ///< most visible parents of one call (rolled: one pass)
};

/// A drawn edge: every graph edge between two drawn nodes, merged.
struct LayoutEdge {
  std::vector<Edge> edges;         ///< the graph edges it stands for
  std::string in_label, out_label; ///< rolled: `In 1`, `Out 2-3`
  int cluster = -1;                ///< lowest cluster holding both ends, -1 for the top level
};

/// A module cluster.
struct LayoutCluster {
  std::string name;        ///< `cluster_ADDR_passN` (unrolled) or `cluster_ADDR` (rolled)
  ModuleFrame module;      ///< pass 0 when rolled
  int parent = -1;         ///< enclosing cluster, -1 for the top level
  int depth = 1;           ///< 1 for top-level modules
  bool from_input = false; ///< holds a node that descends from an input
};

/// Drawn nodes and edges; vertices in drawing order.
using LayoutGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, LayoutNode, LayoutEdge>;

/// The shape of a drawing, all the style needs besides the graph; build_dot_graph()
/// copies its nodes, edges (in creation order) and clusters into the DotGraph.
struct Layout {
  LayoutGraph graph;
  std::vector<LayoutGraph::edge_descriptor> edge_order; ///< edges in creation order
  std::vector<Item> items;
  std::vector<LayoutCluster> clusters; ///< parents before children
  int max_cluster_depth = 0;           ///< depth of the deepest cluster, 0 for none
  std::string sink;                    ///< node forced to `rank=sink` (last output), or ""
  /// Passes per module address: the frames' highest pass or GraphInfo::modules'.
  std::unordered_map<std::string, int> module_passes;
  /// Class name per module address (first frame naming it).
  std::unordered_map<std::string, std::string> module_type;
};

/// Lays out a labeled graph; throws std::invalid_argument when
/// options.nesting_depth() < 1.
Layout make_layout(const ModelGraph& g, const DotOptions& options);

} // namespace torchlens::io::detail
