// Tests of the mark-output-ancestry pass.
#include <torchlens/passes/mark_output_ancestry.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::MarkOutputAncestryPass;

TEST_CASE("mark-output-ancestry on the conditional graph") {
  ModelGraph g = conditional_graph(); // x0 sub1 mean2 gt3 relu4
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx); // out5
  auto r = MarkOutputAncestryPass{}.run(g, ctx);
  const std::vector<bool> out_anc{true, false, false, false, true, true};
  for (Vertex v = 0; v < 6; ++v) {
    CAPTURE(v);
    CHECK(g[v].is_output_ancestor == out_anc[v]);
    CHECK(g[v].has_input_ancestor);
  }
  CHECK(r.get("output ancestors") == 3);
  CHECK(r.get("input descendants") == 6);
}

TEST_CASE("mark-output-ancestry: internally generated tensors have no input ancestor") {
  ModelGraph g = mixed_graph();
  PassContext ctx;
  (void)passes::AddOutputNodesPass{}.run(g, ctx);
  (void)MarkOutputAncestryPass{}.run(g, ctx);
  CHECK_FALSE(g[1].has_input_ancestor); // rand
  CHECK_FALSE(g[1].is_output_ancestor);
  CHECK_FALSE(g[3].has_input_ancestor); // ones
  CHECK(g[3].is_output_ancestor);
  CHECK(g[12].has_input_ancestor); // item
  CHECK_FALSE(g[12].is_output_ancestor);
}

TEST_CASE("mark-output-ancestry obeys the pass laws") {
  check_pass_laws_on_samples<MarkOutputAncestryPass>();
}
