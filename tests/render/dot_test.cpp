// DOT output (include/torchlens/io/dot.hpp) on hand-built graphs: golden files
// and exact structural checks. Torch-free. Regenerate the goldens with
// TORCHLENS_UPDATE_GOLDEN=1 (then review the diff).
#include <torchlens/io/dot.hpp>
#include <torchlens/passes/all.hpp>

#include "../../src/io/dot/layout.hpp"
#include "../../src/io/dot/style.hpp"

#include <support/graph_builders.hpp>

#include "support/doctest.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace torchlens;
using namespace torchlens::testing;
using torchlens::io::DotAttributes;
using torchlens::io::DotGraph;
using torchlens::io::DotOptions;

namespace {

/// Compares `dot` with golden/NAME.dot (or rewrites it under TORCHLENS_UPDATE_GOLDEN).
void check_golden(const std::string& name, const std::string& dot) {
  const char* dir = std::getenv("TORCHLENS_GOLDEN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "TORCHLENS_GOLDEN_DIR not set (run through meson test)");
  const std::string path = std::string(dir) + "/" + name + ".dot";
  if (const char* up = std::getenv("TORCHLENS_UPDATE_GOLDEN"); up && std::string(up) == "1") {
    std::ofstream(path) << dot;
    return;
  }
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "missing golden file " << path);
  std::stringstream expected;
  expected << in.rdbuf();
  CHECK_MESSAGE(dot == expected.str(), "DOT differs from " << path << ":\n" << dot);
}

ModelGraph labeled(ModelGraph g) {
  run_default_pipeline(g);
  return g;
}

/// Nested modules, an internally generated tensor, a buffer, a non-commutative
/// two-parent op, and an `if` on the result:
///   outer(Level1){ inner(Level2){ fc: linear, tanh }, fc: linear, add(ones), mul(buffer) }
///   div(outer, x), sum, gt (terminal bool, True), relu → output.
ModelGraph nested_graph() {
  GraphBuilder b;
  const ModuleFrame outer = frame("outer", "Level1"), inner = frame("outer.inner", "Level2");
  auto x = b.input({2, 3});
  auto l1 = b.op("linear", {x},
                 {.params = {"outer.inner.fc.weight", "outer.inner.fc.bias"},
                  .modules = {outer, inner, frame("outer.inner.fc", "Linear")},
                  .shape = {2, 3}});
  auto t = b.op("tanh", {l1}, {.modules = {outer, inner}, .shape = {2, 3}});
  auto l2 = b.op("linear", {t},
                 {.params = {"outer.fc.weight", "outer.fc.bias"},
                  .modules = {outer, frame("outer.fc", "Linear")},
                  .shape = {2, 3}});
  auto ones = b.op("ones", {}, {.shape = {2, 3}});
  auto s = b.op("add", {l2, ones}, {.modules = {outer}, .shape = {2, 3}});
  auto buf = b.buffer("outer.scale");
  auto m = b.op("mul", {s, buf}, {.modules = {outer}, .shape = {2, 3}});
  auto d = b.op("div", {m, x}, {.shape = {2, 3}});
  auto sum = b.op("sum", {d}, {.shape = {}});
  auto gt = b.op("gt", {sum}, {.shape = {}, .dtype = "bool", .read = ScalarUse::condition});
  auto r = b.op("relu", {d}, {.shape = {2, 3}});
  b.returns(r);
  ModelGraph g = b.build();
  g[buf].modules = {outer};
  g[gt].scalar_bool_value = true;
  g[boost::graph_bundle].model_name = "Nested";
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    g[v].bytes = 4;
    for (auto d2 : g[v].shape) g[v].bytes *= d2;
  }
  std::vector<ParamRef> params = g[l1].params.vec();
  params[0].shape = {3, 3};
  params[1].shape = {3};
  params[0].numel = 9;
  params[1].numel = 3;
  g[l1].params = params;
  return labeled(std::move(g));
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

std::size_t box3d_nodes(const DotGraph& dg) {
  std::size_t n = 0;
  for (auto v : boost::make_iterator_range(boost::vertices(dg))) n += dg[v].is_module;
  return n;
}

std::string attr(const DotGraph& dg, const std::string& node, const std::string& key) {
  for (auto v : boost::make_iterator_range(boost::vertices(dg))) {
    if (dg[v].name == node) return dg[v].attributes.value(key);
  }
  FAIL("no node " << node);
  return "";
}

} // namespace

TEST_CASE("attributes keep insertion order; HTML labels are written raw, others quoted") {
  DotAttributes a;
  a.set("label", "<<b>x</b>>")
      .set("fillcolor", "#98FB98")
      .set("shape", "oval")
      .set("fillcolor", "white");
  std::ostringstream os;
  os << a;
  CHECK(os.str() == "[label=<<b>x</b>>, fillcolor=white, shape=oval]");
  CHECK(a.erase("shape"));
  CHECK_FALSE(a.erase("shape"));
  CHECK(a.value("fillcolor") == "white");
  CHECK(a.get("missing") == nullptr);
}

TEST_CASE("directions parse and map to rankdir") {
  using io::Direction;
  CHECK(io::parse_direction("BT") == Direction::bottom_up);
  CHECK(io::parse_direction("top-down") == Direction::top_down);
  CHECK(io::parse_direction("lr") == Direction::left_right);
  CHECK_THROWS_AS(io::parse_direction("up"), std::invalid_argument);
  CHECK(io::rankdir(Direction::bottom_up) == "BT");
  CHECK(io::rankdir(Direction::top_down) == "TB");
  CHECK(io::rankdir(Direction::left_right) == "LR");
}

TEST_CASE("chain: golden DOT, written by boost::write_graphviz (no clusters)") {
  ModelGraph g = labeled(chain_graph());
  g[boost::graph_bundle].model_name = "Chain";
  const DotGraph dg = io::build_dot_graph(g);
  CHECK(boost::num_vertices(dg) == 4);
  CHECK(boost::num_edges(dg) == 3);
  CHECK(dg[boost::graph_bundle].clusters.empty());
  // the same writers through write_graphviz directly give the same text
  std::ostringstream direct;
  boost::write_graphviz(direct, dg, io::DotVertexWriter{&dg}, io::DotEdgeWriter{&dg},
                        io::DotGraphWriter{&dg}, boost::get(&io::DotNode::name, dg));
  const std::string dot = io::to_dot(g);
  CHECK(dot == direct.str());
  check_golden("chain", dot);
  // the visual code, exactly
  CHECK(attr(dg, "input_1", "fillcolor") == "#98FB98");
  CHECK(attr(dg, "output_1", "fillcolor") == "#ff9999");
  CHECK(attr(dg, "linear_1_2", "fillcolor") == "#E6E6E6");
  CHECK(attr(dg, "relu_1_1", "fillcolor") == "white");
  CHECK(attr(dg, "linear_1_2", "label") ==
        "<<b>linear_1_2</b><br/>1x4 (16 B)<br/>params: 4x4, 4x4>");
  CHECK(attr(dg, "input_1", "label") == "<<b>input_1</b><br/>1x4 (16 B)<br/>@input.0>");
}

TEST_CASE("gradient edges: child to parent where both have a saved gradient, unrolled only") {
  const ModelGraph g = labeled(chain_graph());
  std::vector<Vertex> all, two;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    all.push_back(v);
    if (g[v].label() == "relu_1_1" || g[v].label() == "linear_1_2") two.push_back(v);
  }
  CHECK(boost::num_edges(io::build_dot_graph(g, io::DotOptions().gradient_layers(all))) == 6);
  CHECK(count(io::to_dot(g, io::DotOptions().gradient_layers(all)), "fontcolor=\"#9197F6\"") == 3);
  const DotGraph dg = io::build_dot_graph(g, io::DotOptions().gradient_layers(two));
  REQUIRE(boost::num_edges(dg) == 4);
  std::vector<std::pair<std::string, std::string>> backward;
  for (auto e : boost::make_iterator_range(boost::edges(dg))) {
    if (dg[e].attributes.value("color") == "#9197F6") {
      backward.emplace_back(dg[boost::source(e, dg)].name, dg[boost::target(e, dg)].name);
    }
  }
  CHECK(backward == std::vector<std::pair<std::string, std::string>>{{"linear_1_2", "relu_1_1"}});
  CHECK(boost::num_edges(
            io::build_dot_graph(g, io::DotOptions().rolled(true).gradient_layers(all))) == 3);
}

TEST_CASE("nested modules: clusters, leaf-module boxes, IF, arg labels, dashed branch") {
  const ModelGraph g = nested_graph();
  const DotGraph dg = io::build_dot_graph(g);
  const auto& clusters = dg[boost::graph_bundle].clusters;
  REQUIRE(clusters.size() == 2);
  CHECK(clusters[0].name == "cluster_outer_pass1");
  CHECK(clusters[0].attributes.value("penwidth") == "5");
  CHECK(clusters[1].name == "cluster_outer.inner_pass1");
  CHECK(clusters[1].parent == 0);
  CHECK(clusters[1].attributes.value("penwidth") == "2");
  CHECK(clusters[1].attributes.value("label") ==
        "<<b>@outer.inner</b><br align=\"left\"/>(Level2)<br align=\"left\"/>>");
  CHECK(box3d_nodes(dg) == 0);
  // buffers hidden by default: 12 vertices minus the buffer
  CHECK(boost::num_vertices(dg) == boost::num_vertices(g) - 1);
  CHECK(attr(dg, "linear_1_1", "shape") == "box"); // leaf-module (outer.inner.fc) output
  CHECK(attr(dg, "linear_1_1", "label") ==
        "<<b>linear_1_1</b><br/>2x3 (24 B)<br/>params: 3x3, x3<br/>@outer.inner.fc>");
  CHECK(attr(dg, "tanh_1_2", "shape") == "oval");
  CHECK(attr(dg, "ones_1_4", "style") == "filled,dashed");
  CHECK(attr(dg, "gt_1_9", "fillcolor") == "#F7D460");
  CHECK(attr(dg, "gt_1_9", "label") == "<<b><u>TRUE:</u></b><br/><br/><b>gt_1_9</b><br/>x1 (4 B)>");
  const std::string dot = io::to_dot(g);
  CHECK(count(dot, "subgraph ") == 2);
  CHECK(count(dot, "<u>IF</u>") == 1);
  CHECK(count(dot, "<b>arg 0</b>") == 1);
  CHECK(count(dot, "<b>arg 1</b>") == 1);
  CHECK(count(dot, "style=dashed") == 1); // ones → add
  check_golden("nested", dot);
  check_golden("nested_buffers_lr",
               io::to_dot(g, DotOptions().show_buffers(true).direction(io::Direction::left_right)));
}

TEST_CASE("nesting depth collapses modules into box3d nodes") {
  const ModelGraph g = nested_graph();
  const DotGraph d1 = io::build_dot_graph(g, DotOptions().nesting_depth(1));
  CHECK(box3d_nodes(d1) == 1);
  CHECK(d1[boost::graph_bundle].clusters.empty());
  // input, outer (box3d), ones, div, sum, gt, relu, output
  CHECK(boost::num_vertices(d1) == 8);
  CHECK(attr(d1, "module.outer:1", "shape") == "box3d");
  CHECK(attr(d1, "module.outer:1", "label") ==
        "<<b>@outer</b><br/>Level1<br/>2x3 (24 B)<br/>5 layers total<br/>44 parameters>");
  CHECK(attr(d1, "module.outer:1", "fillcolor") == "#E6E6E6");
  check_golden("nested_depth1", io::to_dot(g, DotOptions().nesting_depth(1)));

  const DotGraph d2 = io::build_dot_graph(g, DotOptions().nesting_depth(2));
  CHECK(box3d_nodes(d2) == 1); // outer.inner; outer.fc is a leaf box
  CHECK(d2[boost::graph_bundle].clusters.size() == 1);
  CHECK(attr(d2, "linear_2_3", "shape") == "box");
  CHECK(attr(d2, "module.outer.inner:1", "label") ==
        "<<b>@outer.inner</b><br/>Level2<br/>2x3 (24 B)<br/>2 layers total<br/>12 parameters>");
  const DotGraph d3 = io::build_dot_graph(g, DotOptions().nesting_depth(3));
  CHECK(box3d_nodes(d3) == 0);
  CHECK(d3[boost::graph_bundle].clusters.size() == 2);
  CHECK_THROWS_AS(io::build_dot_graph(g, DotOptions().nesting_depth(0)), std::invalid_argument);
}

TEST_CASE("Fig. 4A: unrolled has one node per pass, rolled one per layer with In/Out labels") {
  ModelGraph g = labeled(fig4a_graph());
  g[boost::graph_bundle].model_name = "Fig4A";
  const DotGraph un = io::build_dot_graph(g);
  CHECK(boost::num_vertices(un) == 9);
  CHECK(attr(un, "cos_1_1pass2", "label") == "<<b>cos_1_1:2</b><br/>1x4 (16 B)>");
  const DotGraph ro = io::build_dot_graph(g, DotOptions().rolled(true));
  CHECK(boost::num_vertices(ro) == 6);
  CHECK(boost::num_edges(ro) == 6);
  CHECK(attr(ro, "cos_1_1", "label") == "<<b>cos_1_1 (x2)</b><br/>1x4 (16 B)>");
  const std::string dot = io::to_dot(g, DotOptions().rolled(true));
  CHECK(count(dot, "headlabel=\"In 1\"") == 1);
  CHECK(count(dot, "headlabel=\"In 2\"") == 1);
  CHECK(count(dot, "taillabel=\"Out 1\"") == 1);
  CHECK(count(dot, "taillabel=\"Out 2\"") == 1);
  check_golden("fig4a_unrolled", io::to_dot(g));
  check_golden("fig4a_rolled", dot);
}

TEST_CASE("a loop rolls into a self-loop") {
  ModelGraph g = labeled(linear_loop_graph(3));
  const DotGraph ro = io::build_dot_graph(g, DotOptions().rolled(true));
  CHECK(boost::num_vertices(ro) == 3); // input, linear (x3), output
  CHECK(attr(ro, "linear_1_1", "label") ==
        "<<b>linear_1_1 (x3)</b><br/>1x4 (16 B)<br/>params: 4x4, 4x4>");
  bool self_loop = false;
  for (auto e : boost::make_iterator_range(boost::edges(ro))) {
    if (boost::source(e, ro) == boost::target(e, ro)) {
      self_loop = true;
      CHECK(ro[e].attributes.value("headlabel") == "In 2-3");
      CHECK(ro[e].attributes.value("taillabel") == "Out 1-2");
    }
  }
  CHECK(self_loop);
  CHECK(boost::num_vertices(io::build_dot_graph(g)) == 5);
}

TEST_CASE("attribute callbacks run last, for nodes, edges and modules") {
  const ModelGraph g = nested_graph();
  std::vector<std::string> seen_modules;
  const auto opts = DotOptions()
                        .node_attributes([](const io::DotNodeInfo& n, DotAttributes& a) {
                          if (n.op && n.op->layer_type == "relu") a.set("fillcolor", "red");
                        })
                        .edge_attributes([](const io::DotEdgeInfo& e, DotAttributes& a) {
                          if (e.head_op && e.head_op->layer_type == "div") a.set("color", "blue");
                        })
                        .module_attributes([&](const ModuleFrame& f, DotAttributes& a) {
                          seen_modules.push_back(f.address);
                          a.set("bgcolor", "lightyellow");
                        });
  const DotGraph dg = io::build_dot_graph(g, opts);
  CHECK(attr(dg, "relu_1_10", "fillcolor") == "red");
  std::size_t blue = 0;
  for (auto e : boost::make_iterator_range(boost::edges(dg)))
    blue += dg[e].attributes.value("color") == "blue";
  CHECK(blue == 2);
  CHECK(seen_modules == std::vector<std::string>{"outer", "outer.inner"});
  CHECK(dg[boost::graph_bundle].clusters[0].attributes.value("bgcolor") == "lightyellow");
}

TEST_CASE("the style functors are write_graphviz property writers over the layout") {
  // without clusters, boost::write_graphviz of the layout with the style as its
  // property writers prints what write_dot prints
  ModelGraph chain = labeled(chain_graph());
  ModelGraph fig4a = labeled(fig4a_graph());
  const ModelGraph nested = nested_graph();
  const std::vector<std::pair<const ModelGraph*, DotOptions>> cases = {
      {&chain, DotOptions()},
      {&fig4a, DotOptions()},
      {&fig4a, DotOptions().rolled(true).direction(io::Direction::top_down)},
      {&nested, DotOptions().nesting_depth(1).show_buffers(true)}};
  for (const auto& [g, options] : cases) {
    const io::detail::Layout layout = io::detail::make_layout(*g, options);
    REQUIRE(layout.clusters.empty());
    std::ostringstream os;
    boost::write_graphviz(os, layout.graph, io::detail::NodeStyle{g, &layout, &options},
                          io::detail::EdgeStyle{g, &layout, &options},
                          io::detail::GraphStyle{g, &layout, &options},
                          boost::get(&io::detail::LayoutNode::name, layout.graph));
    CHECK(os.str() == io::to_dot(*g, options));
  }
}

TEST_CASE("output is deterministic") {
  const ModelGraph g = nested_graph();
  CHECK(io::to_dot(g) == io::to_dot(g));
  CHECK(io::to_dot(g, DotOptions().rolled(true)) ==
        io::to_dot(nested_graph(), DotOptions().rolled(true)));
}
