// Tests of the conditionals pass.
#include <torchlens/passes/detect_conditionals.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::DetectConditionalsPass;

namespace {
ModelGraph prepared(ModelGraph g) {
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)passes::MarkOutputAncestryPass{}.run(g, ctx);
  return g;
}
} // namespace

TEST_CASE(
    "conditionals: `if mean(x - 5) > 3` marks sub and mean, gt is the terminal bool, "
    "x -> sub is the IF edge") {
  ModelGraph g = prepared(conditional_graph()); // x0 sub1 mean2 gt3 relu4 out5
  PassContext ctx;
  auto r = DetectConditionalsPass{}.run(g, ctx);
  CHECK(r.get("terminal bools") == 1);
  CHECK(r.get("branch vertices") == 2);
  CHECK(r.get("if edges") == 1);
  CHECK(g[3].is_terminal_bool);
  // TorchLens marks the bool's non-output-ancestor ancestors; the bool itself
  // is its terminal bool (is_terminal_bool_layer), never in_cond_branch
  const std::vector<bool> branch{false, true, true, false, false, false};
  for (Vertex v = 0; v < 6; ++v) CHECK(g[v].in_cond_branch == branch[v]);
  for (auto e : boost::make_iterator_range(boost::edges(g))) {
    const bool expected = boost::source(e, g) == 0 && boost::target(e, g) == 1;
    CHECK(g[e].is_cond_branch_start == expected);
  }
  CHECK(g[boost::graph_bundle].has_conditional);
}

TEST_CASE("conditionals: a terminal bool read as an `if` branches off an output ancestor") {
  ModelGraph g = prepared(mixed_graph());
  PassContext ctx;
  auto r = DetectConditionalsPass{}.run(g, ctx);
  CHECK(r.get("terminal bools") == 1);
  CHECK(g[12].is_terminal_bool); // gt
  CHECK(g[11].in_cond_branch);   // sum
  CHECK_FALSE(g[10].in_cond_branch);
  auto [e, found] = boost::edge(10, 11, g);
  REQUIRE(found);
  CHECK(g[e].is_cond_branch_start);
}

TEST_CASE("conditionals: a bool computed straight from an output ancestor is a conditional") {
  // `if bool(mask.any()): ...` with mask used later: the condition is one op,
  // so no vertex is in the branch, but the IF edge mask -> any exists and the
  // model has a conditional (TorchLens 1.0 defines has_conditional_branching by
  // in_cond_branch and misses it; docs/capture.md)
  GraphBuilder b;
  auto x = b.input();
  auto mask = b.op("gt", {x}, {.dtype = "bool", .scalar_args = {{"other", "0"}}});
  auto any = b.op("any", {mask}, {.shape = {}, .dtype = "bool", .read = ScalarUse::condition});
  b.returns(b.op("mul", {x, mask}));
  ModelGraph g = prepared(b.build());
  PassContext ctx;
  auto r = DetectConditionalsPass{}.run(g, ctx);
  CHECK(r.get("terminal bools") == 1);
  CHECK(r.get("branch vertices") == 0);
  CHECK(r.get("if edges") == 1);
  CHECK(g[any].is_terminal_bool);
  for (auto v : boost::make_iterator_range(boost::vertices(g))) CHECK_FALSE(g[v].in_cond_branch);
  auto [e, found] = boost::edge(mask, any, g);
  REQUIRE(found);
  CHECK(g[e].is_cond_branch_start);
  CHECK(g[boost::graph_bundle].has_conditional);
}

TEST_CASE("conditionals: only a bool deciding an `if` starts a branch") {
  // the same graph, with the bool read as a number, by a while loop, by an
  // assert, or never read: a terminal bool, but no conditional
  for (ScalarUse use : {ScalarUse::value, ScalarUse::loop, ScalarUse::assertion, ScalarUse::none}) {
    CAPTURE(static_cast<int>(use));
    ModelGraph g = conditional_graph();
    g[3].scalar_use = use;
    g = prepared(std::move(g));
    PassContext ctx;
    auto r = DetectConditionalsPass{}.run(g, ctx);
    CHECK(r.get("terminal bools") == 1);
    CHECK(r.get("if edges") == 0);
    CHECK_FALSE(g[1].in_cond_branch);
    CHECK_FALSE(g[boost::graph_bundle].has_conditional);
  }
}

TEST_CASE("conditionals: no terminal bool, no conditional") {
  ModelGraph g = prepared(chain_graph());
  PassContext ctx;
  CHECK(DetectConditionalsPass{}.run(g, ctx).get("if edges") == 0);
  CHECK_FALSE(g[boost::graph_bundle].has_conditional);
}

TEST_CASE("conditionals obey the pass laws") {
  check_pass_laws_on_samples<DetectConditionalsPass>();
}
