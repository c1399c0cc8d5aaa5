// Tests of the infer-modules pass.
#include <torchlens/passes/add_output_nodes.hpp>
#include <torchlens/passes/infer_modules.hpp>
#include <torchlens/passes/mark_output_ancestry.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::InferModulesPass;

namespace {
std::string path(const OpNode& n) {
  std::string s;
  for (const auto& f : n.modules) s += f.address + ":" + std::to_string(f.pass) + "/";
  return s;
}
} // namespace

TEST_CASE("infer-modules: internally generated and unobserved ops in a block") {
  ModelGraph g = mixed_graph();
  PassContext ctx;
  auto r = InferModulesPass{}.run(g, ctx);
  CHECK(path(g[3]) == "block:1/"); // ones: its descendant add -> relu in block:1
  CHECK(path(g[8]) == "block:1/"); // add: bn in block/block.bn, relu in block
  // sum: after conv in block:2 with nothing observed after it: one-sided
  // evidence places it beside block, not inside (it may be the caller's op)
  CHECK(path(g[11]) == "");
  CHECK(path(g[12]) == ""); // item: through sum
  CHECK(path(g[1]) == "");  // rand -> mul: nothing observed around
  CHECK(g[3].module_inferred);
  CHECK_FALSE(g[4].module_inferred);
  CHECK(r.get("ops inferred") == 6);
}

TEST_CASE("infer-modules: the common prefix needs equal passes") {
  GraphBuilder b;
  auto x = b.input();
  auto a = b.op("relu", {x}, {.modules = {frame("enc"), frame("enc.l", "Linear", 1)}});
  auto u = b.op("mul", {a}, {.observed = false});
  auto c = b.op("relu", {u}, {.modules = {frame("enc"), frame("enc.l", "Linear", 2)}});
  b.returns(c);
  ModelGraph g = b.build();
  PassContext ctx;
  (void)InferModulesPass{}.run(g, ctx);
  CHECK(path(g[u]) == "enc:1/");
}

TEST_CASE("infer-modules: an op seen on one side only sits beside that module, not in it") {
  GraphBuilder b;
  auto x = b.input();
  auto pre = b.op("mul", {x}, {.observed = false});
  auto fc = b.op("addmm", {pre}, {.modules = {frame("enc"), frame("enc.fc", "Linear", 1)}});
  auto post = b.op("relu", {fc}, {.observed = false});
  b.returns(post);
  ModelGraph g = b.build();
  for (auto v : boost::make_iterator_range(boost::vertices(g))) g[v].has_input_ancestor = true;
  PassContext ctx;
  (void)InferModulesPass{}.run(g, ctx);
  CHECK(path(g[pre]) == "enc:1/");  // before enc.fc: inside enc, not inside enc.fc
  CHECK(path(g[post]) == "enc:1/"); // after enc.fc: likewise
}

TEST_CASE("infer-modules: nothing observed puts every op at the root") {
  GraphBuilder b;
  auto x = b.input();
  auto a = b.op("relu", {x}, {.modules = {frame("guess")}, .observed = false});
  auto c = b.op("sin", {a}, {.observed = false});
  b.returns(c);
  ModelGraph g = b.build();
  PassContext ctx;
  auto r = InferModulesPass{}.run(g, ctx);
  CHECK(g[a].modules.empty());
  CHECK(g[c].modules.empty());
  CHECK(r.get("ops changed") == 1);
}

TEST_CASE("infer-modules drops the module-tree analysis it used") {
  ModelGraph g = mixed_graph();
  PassContext ctx;
  auto p = make_pipeline(passes::AddOutputNodesPass{}, passes::MarkOutputAncestryPass{},
                         InferModulesPass{});
  p.run(g, ctx);
  CHECK_FALSE(ctx.is_cached<ModuleTreeAnalysis>());
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
}

TEST_CASE("infer-modules obeys the pass laws") {
  check_pass_laws_on_samples<InferModulesPass>();
}
