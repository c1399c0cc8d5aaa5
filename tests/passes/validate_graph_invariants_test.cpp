// Tests of the validate pass and check_graph_invariants.
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::ValidateGraphInvariantsPass;

TEST_CASE("validate accepts every sample graph before and after the default pipeline") {
  for (const auto& make : sample_graphs()) {
    ModelGraph g = make();
    CHECK(passes::check_graph_invariants(g).empty());
    run_default_pipeline(g);
    CHECK(passes::check_graph_invariants(g).empty());
  }
}

TEST_CASE("validate reports an edge against vertex order") {
  ModelGraph g = chain_graph();
  boost::add_edge(2, 1, TensorEdge{}, g);
  auto problems = passes::check_graph_invariants(g);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] ==
        "vertex 2 (id 2, linear): edge to an earlier vertex (order not topological)");
  PassContext ctx;
  CHECK_THROWS_AS(ValidateGraphInvariantsPass{}.run(g, ctx), std::logic_error);
  CHECK_THROWS_AS(ValidateGraphInvariantsPass{}.run(g, ctx), InvariantError);
}

TEST_CASE("validate reports duplicate labels, bad ids and bad outputs") {
  ModelGraph g = chain_graph();
  run_default_pipeline(g);
  // the fields the label is written from (OpNode::label)
  g[2].layer_type = g[1].layer_type;
  g[2].type_num = g[1].type_num;
  g[2].total_num = g[1].total_num;
  g[3].id = 1;
  boost::add_edge(1, 3, TensorEdge{}, g);
  auto problems = passes::check_graph_invariants(g);
  CHECK(problems == std::vector<std::string>{
                        "vertex 3 (id 1, output_1): id not above the previous vertex's id",
                        "vertex 3 (id 1, output_1): output must have one parent and no children",
                        "vertex 2 (id 2, relu_1_1): duplicate label relu_1_1"});
}

namespace {
struct BreakIds : pass_info<BreakIds> {
  static constexpr std::string_view name = "break-ids";
  static constexpr std::string_view description = "test pass: duplicates an id";
  using invalidates = facts::none; // changes an id, no vertex or edge
  PassResult run(ModelGraph& g, PassContext&) const {
    g[1].id = 0;
    return {};
  }
};
} // namespace

TEST_CASE("validate as an after-each-pass hook names the pass that broke the graph") {
  ModelGraph g = chain_graph();
  PassContext ctx;
  ctx.instrumentation.add_after(passes::verify_after_each_pass());
  auto p = passes::default_pipeline().insert_after<passes::TrimOrphansPass>(BreakIds{});
  try {
    p.run(g, ctx);
    FAIL("expected a logic_error");
  } catch (const std::logic_error& e) {
    CHECK(std::string(e.what()).rfind("torchlens: invariant broken after pass 'break-ids': ", 0) ==
          0);
    // the wrapped InvariantError's message goes in without a second prefix
    CHECK(std::string(e.what()).find("'break-ids': graph invariants broken (") !=
          std::string::npos);
    CHECK(dynamic_cast<const InvariantError*>(&e) != nullptr);
  }
}

TEST_CASE("validate obeys the pass laws") {
  check_pass_laws_on_samples<ValidateGraphInvariantsPass>();
}
