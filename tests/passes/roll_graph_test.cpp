// Tests of the rolled view (torchlens/graph/rolled.hpp) and its cached analysis
// (passes::RolledGraphAnalysis).
#include <torchlens/graph/rolled.hpp>
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>

#include "support/doctest.hpp"

#include <map>
#include <string>

using namespace torchlens;
using namespace torchlens::testing;
using namespace torchlens::passes;

TEST_CASE("roll_graph on Fig. 4A: one node per layer, In/Out pass labels") {
  ModelGraph g = fig4a_graph();
  PassContext ctx;
  run_default_pipeline(g, ctx);
  const RolledGraph& r = ctx.get<RolledGraphAnalysis>(g);
  REQUIRE(boost::num_vertices(r) == 6);
  CHECK(r[1].label == "cos_1_1");
  CHECK(r[1].num_passes == 2);
  CHECK(r[1].passes == std::vector<Vertex>{1, 5});
  std::map<std::string, std::pair<std::string, std::string>> edges; // "a->b" -> (In, Out)
  for (auto e : boost::make_iterator_range(boost::edges(r))) {
    edges[r[boost::source(e, r)].label + "->" + r[boost::target(e, r)].label] = {in_label(r, e),
                                                                                 out_label(r, e)};
  }
  CHECK(edges.size() == 6);
  CHECK(edges.at("input_1->cos_1_1") == std::pair<std::string, std::string>{"In 1", ""});
  CHECK(edges.at("sin_1_4->cos_1_1") == std::pair<std::string, std::string>{"In 2", ""});
  CHECK(edges.at("cos_1_1->linear_1_2") == std::pair<std::string, std::string>{"", ""});
  CHECK(edges.at("add_1_3->sin_1_4") == std::pair<std::string, std::string>{"", "Out 1"});
  CHECK(edges.at("add_1_3->output_1") == std::pair<std::string, std::string>{"", "Out 2"});
  // cached until a pass invalidates the topology
  CHECK(&ctx.get<RolledGraphAnalysis>(g) == &r);
}

TEST_CASE("roll_graph: a layer feeding its own next pass gets a self-loop") {
  ModelGraph g = linear_loop_graph(4);
  run_default_pipeline(g);
  RolledGraph r = roll_graph(g);
  REQUIRE(boost::num_vertices(r) == 3);
  auto [e, found] = boost::edge(1, 1, r);
  REQUIRE(found);
  CHECK(r[e].parent_passes == std::vector<int>{1, 2, 3});
  CHECK(r[e].child_passes == std::vector<int>{2, 3, 4});
  CHECK(in_label(r, e) == "In 2-4");
  CHECK(out_label(r, e) == "Out 1-3");
  CHECK(format_passes({1, 2, 3, 5, 7, 8}) == "1-3,5,7-8");
}
