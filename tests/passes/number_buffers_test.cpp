// Tests of the number-buffers pass.
#include <torchlens/passes/number_buffers.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::NumberBuffersPass;

TEST_CASE("number-buffers merges a duplicate buffer read") {
  ModelGraph g = mixed_graph(); // buffers at 5 and 6, read by bn at 7
  PassContext ctx;
  auto r = NumberBuffersPass{}.run(g, ctx);
  CHECK(r.get("buffers merged") == 1);
  CHECK(r.get("buffer addresses") == 1);
  REQUIRE(boost::num_vertices(g) == 13);
  CHECK(g[5].kind == NodeKind::buffer);
  CHECK(g[5].buffer_pass == 1);
  CHECK(g[6].layer_type == "batchnorm");
  CHECK(boost::in_degree(6, g) == 3);
  CHECK(boost::out_degree(5, g) == 2); // both argument slots now read vertex 5
  std::vector<int> positions;
  for (auto e : boost::make_iterator_range(boost::out_edges(5, g)))
    positions.push_back(g[e].arg_pos);
  CHECK(positions == std::vector<int>{1, 2});
}

TEST_CASE("number-buffers numbers passes per address; a written buffer is a new pass") {
  GraphBuilder b;
  auto x = b.input();
  auto m = b.buffer("bn.running_mean");
  auto v1 = b.buffer("bn.running_var");
  auto bn = b.op("batchnorm", {x, m, v1});
  auto upd = b.op("add", {m, bn});
  auto m2 = b.buffer("bn.running_mean", {upd});
  auto m2dup = b.buffer("bn.running_mean", {upd});
  auto out = b.op("mul", {bn, m2, m2dup});
  b.returns(out);
  ModelGraph g = b.build();
  PassContext ctx;
  auto r = NumberBuffersPass{}.run(g, ctx);
  CHECK(r.get("buffers merged") == 1);
  CHECK(r.get("buffer addresses") == 2);
  CHECK(g[m].buffer_pass == 1);
  CHECK(g[v1].buffer_pass == 1);
  CHECK(g[m2].buffer_pass == 2);
  CHECK(boost::num_vertices(g) == 7);
}

TEST_CASE("number-buffers obeys the pass laws") {
  check_pass_laws_on_samples<NumberBuffersPass>();
}
