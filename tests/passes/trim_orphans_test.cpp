// Tests of the trim-orphans pass.
#include <torchlens/passes/trim_orphans.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::TrimOrphansPass;

namespace {
ModelGraph marked_mixed() {
  ModelGraph g = mixed_graph();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)passes::MarkOutputAncestryPass{}.run(g, ctx);
  return g;
}
std::vector<std::size_t> ids(const ModelGraph& g) {
  std::vector<std::size_t> out;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) out.push_back(g[v].id);
  return out;
}
} // namespace

TEST_CASE("trim-orphans drops rand and its child, keeps ones and the dead-end gt") {
  ModelGraph g = marked_mixed();
  REQUIRE(boost::num_vertices(g) == 16);
  PassContext ctx;
  auto r = TrimOrphansPass{}.run(g, ctx);
  CHECK(r.get("orphans removed") == 2);
  CHECK(r.get("internally terminated") == 1);
  CHECK(ids(g) == std::vector<std::size_t>{0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  CHECK(boost::num_edges(g) == 13);
  CHECK(g[10].layer_type == "gt");
  CHECK(g[10].is_internally_terminated);
  CHECK_FALSE(g[11].is_internally_terminated);
  CHECK(g[boost::graph_bundle].next_id == 16);
}

TEST_CASE("trim-orphans keeps listed ids and their ancestors") {
  ModelGraph g = marked_mixed();
  PassContext ctx;
  auto r = TrimOrphansPass{TrimOrphansPass::Options().keep({2})}.run(g, ctx);
  CHECK(r.get("orphans removed") == 0);
  CHECK(boost::num_vertices(g) == 16);
  CHECK(pass_to_string(TrimOrphansPass{TrimOrphansPass::Options().keep({2, 7})}) ==
        "trim-orphans(keep=[2,7])");
}

TEST_CASE("trim-orphans keeps what is connected to an input, in either direction") {
  GraphBuilder b;
  auto x = b.input();
  auto noise = b.op("rand", {}, {.observed = false});
  auto mixed = b.op("add", {x, noise});
  b.op("sum", {mixed}, {.shape = {}}); // dead end from the input
  b.returns(x);
  ModelGraph g = b.build();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)passes::MarkOutputAncestryPass{}.run(g, ctx);
  CHECK(TrimOrphansPass{}.run(g, ctx).get("orphans removed") == 0);
  CHECK(boost::num_vertices(g) == 5);
}

TEST_CASE("trim-orphans keeps an internally generated chain that merges into a dead end") {
  // UberModel1 of TorchLens: w2 = (w - 3 + 4) * 5 + zeros(5, 5) is never used,
  // but w feeds the output: the dead-end chain stays (internally terminated)
  GraphBuilder b;
  auto x = b.input();
  auto w = b.op("rand", {}, {.observed = false});
  auto w2 = b.op("sub", {w});
  auto z = b.op("zeros", {}, {.observed = false});
  b.op("add", {w2, z});
  auto u = b.op("add", {x, w});
  auto lonely = b.op("ones", {}, {.observed = false});
  b.op("mul", {lonely}); // connected to nothing: an orphan
  b.returns(u);
  ModelGraph g = b.build();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)passes::MarkOutputAncestryPass{}.run(g, ctx);
  auto r = TrimOrphansPass{}.run(g, ctx);
  CHECK(r.get("orphans removed") == 2);
  CHECK(r.get("internally terminated") == 1);
  CHECK(ids(g) == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 8});
  CHECK(g[4].is_internally_terminated);
}

TEST_CASE("trim-orphans obeys the pass laws") {
  check_pass_laws_on_samples<TrimOrphansPass>();
}
