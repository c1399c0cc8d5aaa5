// Tests of the add-output-nodes pass.
#include <torchlens/passes/add_output_nodes.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::AddOutputNodesPass;

TEST_CASE("add-output-nodes appends one output vertex per returned tensor") {
  ModelGraph g = chain_graph();
  PassContext ctx;
  auto r = AddOutputNodesPass{}.run(g, ctx);
  CHECK(r.get("outputs added") == 1);
  REQUIRE(boost::num_vertices(g) == 4);
  const OpNode& out = g[3];
  CHECK(out.kind == NodeKind::output);
  CHECK(out.layer_type == "output");
  CHECK(out.io_address == "output.0");
  CHECK(out.id == 3);
  CHECK(out.shape == std::vector<std::int64_t>{1, 4});
  CHECK(g[boost::graph_bundle].next_id == 4);
  CHECK(g[2].feeds_output);
  CHECK_FALSE(g[1].feeds_output);
  REQUIRE(boost::in_degree(3, g) == 1);
  CHECK(boost::source(*boost::in_edges(3, g).first, g) == 2);
}

TEST_CASE(
    "add-output-nodes: same tensor twice gives two outputs, duplicate addresses are dropped") {
  GraphBuilder b;
  auto x = b.input();
  auto r = b.op("relu", {x});
  b.returns(r).returns(r);
  ModelGraph g = b.build();
  g[boost::graph_bundle].returned.push_back({1, "output.0"}); // duplicate address
  PassContext ctx;
  CHECK(AddOutputNodesPass{}.run(g, ctx).get("outputs added") == 2);
  CHECK(boost::num_vertices(g) == 4);
  CHECK(g[2].io_address == "output.0");
  CHECK(g[3].io_address == "output.1");
  CHECK(boost::out_degree(1, g) == 2);
  // running again adds nothing
  CHECK(AddOutputNodesPass{}.run(g, ctx).get("outputs added") == 0);
}

TEST_CASE("add-output-nodes rejects a returned id that is not in the graph") {
  ModelGraph g = chain_graph();
  g[boost::graph_bundle].returned.push_back({42, "output.1"});
  PassContext ctx;
  CHECK_THROWS_AS(AddOutputNodesPass{}.run(g, ctx), std::invalid_argument);
  CHECK_THROWS_AS(AddOutputNodesPass{}.run(g, ctx), UsageError);
}

TEST_CASE("add-output-nodes obeys the pass laws") {
  check_pass_laws_on_samples<AddOutputNodesPass>();
}
