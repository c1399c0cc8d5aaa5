// Tests of the distances pass.
#include <torchlens/passes/compute_distances.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::ComputeDistancesPass;

TEST_CASE("distances on a chain") {
  ModelGraph g = chain_graph();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  auto r = ComputeDistancesPass{}.run(g, ctx);
  for (Vertex v = 0; v < 4; ++v) {
    CAPTURE(v);
    CHECK(g[v].min_distance_from_input == static_cast<int>(v));
    CHECK(g[v].max_distance_from_input == static_cast<int>(v));
    CHECK(g[v].min_distance_from_output == 3 - static_cast<int>(v));
    CHECK(g[v].max_distance_from_output == 3 - static_cast<int>(v));
  }
  CHECK(r.get("max distance from input") == 3);
}

TEST_CASE("distances: shortest and longest differ on a skip connection") {
  GraphBuilder b;
  auto x = b.input();
  auto a = b.op("relu", {x});
  auto c = b.op("conv2d", {a}, {.params = {"conv.weight"}});
  auto d = b.op("add", {c, x});
  b.returns(d);
  auto noise = b.op("rand", {}, {.observed = false}); // reaches nothing
  (void)noise;
  ModelGraph g = b.build();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)ComputeDistancesPass{}.run(g, ctx);
  CHECK(g[d].min_distance_from_input == 1);
  CHECK(g[d].max_distance_from_input == 3);
  CHECK(g[x].min_distance_from_output == 2);
  CHECK(g[x].max_distance_from_output == 4);
  CHECK(g[noise].min_distance_from_input == -1);
  CHECK(g[noise].max_distance_from_output == -1);
}

TEST_CASE("distances obey the pass laws") {
  check_pass_laws_on_samples<ComputeDistancesPass>();
}
