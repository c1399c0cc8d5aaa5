// Printing a drawing as DOT: boost::write_graphviz with the DotGraph's writers
// when there are no clusters, else the same writers inside nested
// `subgraph cluster_*` blocks. Torch-free.
#include "write.hpp"

#include <torchlens/io/dot.hpp>

#include <boost/graph/graphviz.hpp>

#include <cstddef>
#include <sstream>
#include <vector>

namespace torchlens::io {

namespace detail {

void write_graph_properties(std::ostream& os, const DotAttributes& attributes,
                            const std::string& sink) {
  if (!attributes.empty()) os << "graph " << attributes << ";\n";
  if (!sink.empty()) os << "{\nrank=sink;\n" << boost::escape_dot_string(sink) << ";\n}\n";
}

} // namespace detail

void DotGraphWriter::operator()(std::ostream& os) const {
  const DotGraphInfo& info = (*g)[boost::graph_bundle];
  detail::write_graph_properties(os, info.attributes, info.sink);
}

void write_dot(std::ostream& os, const DotGraph& dg) {
  const DotVertexWriter vw{&dg};
  const DotEdgeWriter ew{&dg};
  const DotGraphWriter gw{&dg};
  const DotGraphInfo& info = dg[boost::graph_bundle];
  if (info.clusters.empty()) {
    boost::write_graphviz(os, dg, vw, ew, gw, boost::get(&DotNode::name, dg));
    return;
  }
  using Node = DotGraph::vertex_descriptor;
  const std::size_t nc = info.clusters.size();
  // contents per cluster; index nc is the top level
  std::vector<std::vector<Node>> nodes(nc + 1);
  std::vector<std::vector<DotGraph::edge_descriptor>> edges(nc + 1);
  std::vector<std::vector<std::size_t>> children(nc + 1);
  auto slot = [&](int c) { return c < 0 ? nc : static_cast<std::size_t>(c); };
  for (auto v : boost::make_iterator_range(boost::vertices(dg)))
    nodes[slot(dg[v].cluster)].push_back(v);
  for (auto e : boost::make_iterator_range(boost::edges(dg)))
    edges[slot(dg[e].cluster)].push_back(e);
  for (std::size_t c = 0; c < nc; ++c) children[slot(info.clusters[c].parent)].push_back(c);

  auto write_contents = [&](auto&& self, std::size_t s, const std::string& indent) -> void {
    for (Node v : nodes[s]) {
      os << indent << boost::escape_dot_string(dg[v].name);
      vw(os, v);
      os << ";\n";
    }
    for (std::size_t c : children[s]) {
      const DotCluster& cl = info.clusters[c];
      os << indent << "subgraph " << boost::escape_dot_string(cl.name) << " {\n";
      if (!cl.attributes.empty()) os << indent << "  graph " << cl.attributes << ";\n";
      self(self, c, indent + "  ");
      os << indent << "}\n";
    }
    for (auto e : edges[s]) {
      os << indent << boost::escape_dot_string(dg[boost::source(e, dg)].name) << "->"
         << boost::escape_dot_string(dg[boost::target(e, dg)].name) << " ";
      ew(os, e);
      os << ";\n";
    }
  };
  os << "digraph G {\n";
  gw(os);
  write_contents(write_contents, nc, "");
  os << "}\n";
}

void write_dot(std::ostream& os, const ModelGraph& g, const DotOptions& options) {
  write_dot(os, build_dot_graph(g, options));
}

std::string to_dot(const ModelGraph& g, const DotOptions& options) {
  std::ostringstream os;
  write_dot(os, g, options);
  return os.str();
}

} // namespace torchlens::io
