// The shared graph queries (include/torchlens/graph/query.hpp) on hand-built
// graphs. Torch-free.
#include <torchlens/graph/query.hpp>
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;

TEST_CASE("graph_totals: output nodes not counted, a shared parameter counted once") {
  ModelGraph g = fig4a_graph(); // fc.weight and fc.bias read by both linears
  run_default_pipeline(g);
  const GraphTotals t = graph_totals(g);
  CHECK(t.num_tensors == 8); // 9 vertices minus the output node
  CHECK(t.tensor_bytes == 8 * 16);
  CHECK(t.num_param_tensors == 2);
  CHECK(t.num_params == 32);
  CHECK(t.param_bytes == 128);
  CHECK(graph_totals(ModelGraph()).num_tensors == 0);
}

TEST_CASE("module_pass_key and module_pass_counts") {
  CHECK(module_pass_key(frame("features.3", "Conv2d", 1)) == "features.3:1");
  GraphBuilder b;
  auto x = b.input();
  auto a = b.op("relu", {x}, {.modules = {frame("block", "Block", 1)}});
  auto c =
      b.op("relu", {a}, {.modules = {frame("block", "Block", 2), frame("block.fc", "Linear")}});
  b.returns(c);
  const ModelGraph g = b.build();
  const auto passes = module_pass_counts(g);
  CHECK(passes.size() == 2);
  CHECK(passes.at("block") == 2);
  CHECK(passes.at("block.fc") == 1);
}

TEST_CASE("leaves_module_pass: a consumer outside the pass, or returned from forward") {
  const ModuleFrame outer = frame("outer", "Outer"), inner = frame("outer.inner", "Inner");
  GraphBuilder b;
  auto x = b.input();
  auto a = b.op("relu", {x}, {.modules = {outer, inner}});
  auto c = b.op("tanh", {a}, {.modules = {outer}});
  auto d = b.op("sin", {c});
  b.returns(d);
  ModelGraph g = b.build();
  run_default_pipeline(g); // adds the output node: d feeds it
  CHECK(leaves_module_pass(g, a, inner));
  CHECK_FALSE(leaves_module_pass(g, a, outer));
  CHECK(leaves_module_pass(g, c, outer));
  CHECK(leaves_module_pass(g, d, outer)); // returned: leaves every pass
  CHECK(g[d].feeds_output);
}
