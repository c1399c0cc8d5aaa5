// Run-time behaviour of pipelines: running, printing, editing, records, hooks, analyses.
#include <torchlens/detail/probe.hpp>
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>

#include "support/doctest.hpp"

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <typeindex>
#include <vector>

using namespace torchlens;
using namespace torchlens::passes;
using namespace torchlens::testing;

namespace {
struct CountReluOptions {
  TORCHLENS_OPTIONS((std::string, type, "relu"));
};
/// A user pass: counts relu ops (consumes LayersLabeled to run late).
struct CountReluPass : pass_info<CountReluPass, CountReluOptions> {
  using pass_info::pass_info;
  static constexpr std::string_view name = "count-relu";
  static constexpr std::string_view description = "count relu ops";
  using consumes = facts::list<facts::LayersLabeled>;
  using invalidates = facts::none;
  PassResult run(ModelGraph& g, PassContext&) const {
    PassResult r;
    std::int64_t n = 0;
    for (auto v : boost::make_iterator_range(boost::vertices(g)))
      n += g[v].layer_type == options.type();
    r.add("matches", n);
    return r;
  }
};
} // namespace

namespace {
/// A nested option set (as ValidateOptions inside validate-activations' options).
struct InnerOptions {
  TORCHLENS_OPTIONS((double, atol, 3e-6), (bool, perturb, true));
};
/// Every kind of option print_pipeline prints, declared once.
struct OuterOptions {
  TORCHLENS_OPTIONS((int, depth, 3),
                    // a default with a comma in it
                    (std::vector<int>, sizes, {1, 2}), (std::string, type, "relu"),
                    // value-initialized
                    (std::vector<std::size_t>, keep), (InnerOptions, inner));
};
} // namespace

TEST_CASE("TORCHLENS_OPTIONS declares members, defaults, fluent accessors and visit once") {
  OuterOptions o;
  CHECK(o.depth() == 3);
  CHECK(o.sizes() == std::vector<int>{1, 2});
  CHECK(o.type() == "relu");
  CHECK(o.keep().empty());
  CHECK(o.inner().atol() == 3e-6);
  std::vector<std::string> names;
  o.visit([&](std::string_view name, const auto&) { names.emplace_back(name); });
  CHECK(names == std::vector<std::string>{"depth", "sizes", "type", "keep", "inner"});
  CHECK(torchlens::detail::changed_options_to_string(o).empty());
  o.depth(4).keep({7}).inner(InnerOptions().atol(1e-9).perturb(false));
  CHECK(torchlens::detail::changed_options_to_string(o) ==
        "depth=4,keep=[7],inner={atol=1e-09,perturb=false}");
  o.inner().perturb(true); // only what differs from the nested defaults is printed
  CHECK(torchlens::detail::changed_options_to_string(o) == "depth=4,keep=[7],inner={atol=1e-09}");
  // equality, option by option (nested sets included), without printing
  using torchlens::detail::same_options;
  CHECK(same_options(OuterOptions(), OuterOptions()));
  CHECK_FALSE(same_options(o, OuterOptions()));
  OuterOptions p = o;
  CHECK(same_options(o, p));
  CHECK_FALSE(same_options(o, OuterOptions(p).keep({8})));
  CHECK_FALSE(same_options(o, OuterOptions(p).type("tanh")));
  CHECK_FALSE(same_options(o, OuterOptions(p).inner(InnerOptions(o.inner()).perturb(false))));
}

namespace {
/// A user pass written before pass_info supplied the options: its own Options,
/// options member and constructors hide the base's.
struct LegacyCountPass : pass_info<LegacyCountPass> {
  static constexpr std::string_view name = "legacy-count";
  static constexpr std::string_view description = "count ops of a type";
  using consumes = facts::list<facts::LayersLabeled>;
  struct Options {
    TORCHLENS_ARG(std::string, type) = "relu";

   public:
    template <class V>
    void visit(V&& v) const {
      v("type", type_);
    }
  };
  Options options{};
  LegacyCountPass() = default;
  explicit LegacyCountPass(Options o) : options(std::move(o)) {}
  PassResult run(ModelGraph& g, PassContext&) const {
    PassResult r;
    std::int64_t n = 0;
    for (auto v : boost::make_iterator_range(boost::vertices(g)))
      n += g[v].layer_type == options.type();
    r.add("matches", n);
    return r;
  }
};
static_assert(Pass<LegacyCountPass>);
static_assert(std::is_same_v<decltype(LegacyCountPass{}.options), LegacyCountPass::Options>);
} // namespace

TEST_CASE("pass_info supplies Options, options and both constructors") {
  static_assert(std::is_same_v<CountReluPass::Options, CountReluOptions>);
  static_assert(std::is_same_v<TrimOrphansPass::Options, TrimOrphansOptions>);
  static_assert(std::is_same_v<AddOutputNodesPass::Options, NoOptions>);
  static_assert(!std::is_convertible_v<CountReluOptions, CountReluPass>); // explicit
  CHECK(CountReluPass{}.options.type() == "relu");
  CHECK(CountReluPass(CountReluPass::Options().type("linear")).options.type() == "linear");
  CHECK(pass_to_string(CountReluPass{CountReluOptions().type("conv2d")}) ==
        "count-relu(type=\"conv2d\")");
  CHECK(pass_to_string(AddOutputNodesPass(AddOutputNodesPass::Options())) == "add-output-nodes");
}

TEST_CASE("a pass that declares its own options and constructors still works") {
  auto p = default_pipeline().append(LegacyCountPass{LegacyCountPass::Options().type("linear")});
  CHECK(p.to_string().ends_with(",label-layers,legacy-count(type=\"linear\")"));
  ModelGraph g = linear_loop_graph(3);
  CHECK(p.run(g).back().result.get("matches") == 3);
}

TEST_CASE("the default pipeline prints its order") {
  std::ostringstream os;
  default_pipeline().print_pipeline(os);
  CHECK(os.str() ==
        "add-output-nodes,mark-output-ancestry,trim-orphans,number-buffers,compute-distances,"
        "detect-conditionals,"
        "infer-modules,group-recurrences,label-layers");
  CHECK(DefaultPipeline::size == 9);
  CHECK(checked_pipeline().to_string().ends_with(",label-layers,validate-graph-invariants"));
}

TEST_CASE("insert_after / insert_before / drop build new validated pipelines") {
  auto p = default_pipeline().insert_after<LabelLayersPass>(
      CountReluPass{CountReluPass::Options().type("linear")});
  CHECK(p.to_string() ==
        "add-output-nodes,mark-output-ancestry,trim-orphans,number-buffers,compute-distances,"
        "detect-conditionals,"
        "infer-modules,group-recurrences,label-layers,count-relu(type=\"linear\")");
  auto q = checked_pipeline() | drop<ComputeDistancesPass>() | drop<ValidateGraphInvariantsPass>() |
           insert_before<AddOutputNodesPass>(ValidateGraphInvariantsPass{});
  CHECK(q.to_string() ==
        "validate-graph-invariants,add-output-nodes,mark-output-ancestry,trim-orphans,number-"
        "buffers,detect-conditionals,"
        "infer-modules,group-recurrences,label-layers");
  ModelGraph g = linear_loop_graph(3);
  auto records = p.run(g);
  REQUIRE(records.size() == 10);
  CHECK(records[9].name == "count-relu");
  CHECK(records[9].result.get("matches") == 3);
  CHECK(records[0].vertices_before == 4);
  CHECK(records[0].vertices_after == 5);
  CHECK(records[2].result.get("orphans removed") == 0);
}

TEST_CASE("before/after hooks run around every pass, in order") {
  ModelGraph g = chain_graph();
  PassContext ctx;
  std::vector<std::string> events;
  ctx.instrumentation.add_before(
      [&](const PassEvent& e) { events.push_back("+" + std::string(e.name)); });
  ctx.instrumentation.add_after(
      [&](const PassEvent& e, const PassResult&) { events.push_back("-" + std::string(e.name)); });
  std::ostringstream timing, dumps;
  ctx.instrumentation.add_after(time_passes(timing));
  ctx.instrumentation.add_after(dump_after_each_pass(dumps));
  make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}).run(g, ctx);
  CHECK(events == std::vector<std::string>{"+add-output-nodes", "-add-output-nodes",
                                           "+mark-output-ancestry", "-mark-output-ancestry"});
  CHECK(timing.str().find("add-output-nodes: ") == 0);
  CHECK(timing.str().find("4 vertices, outputs added=1") != std::string::npos);
  CHECK(dumps.str().find("// ---- after mark-output-ancestry ----") != std::string::npos);
  CHECK(ctx.record("add-output-nodes").result.get("outputs added") == 1);
  CHECK_THROWS_AS((void)ctx.record("nope"), std::invalid_argument);
}

TEST_CASE("analyses are cached by type and dropped by invalidated facts") {
  ModelGraph g = mixed_graph();
  PassContext ctx;
  const auto& order = ctx.get<TopologicalOrderAnalysis>(g);
  CHECK(order.index_order_is_topological);
  CHECK(&ctx.get<TopologicalOrderAnalysis>(g) == &order);
  (void)ctx.get<ModuleTreeAnalysis>(g);
  // the order is checked on the cached adjacency arrays: three computations
  CHECK(ctx.analysis_computations() == 3);
  const auto& adj = ctx.get<AdjacencyAnalysis>(g);
  CHECK(ctx.analysis_computations() == 3);
  const auto bn_parents = adj.parents_of(7); // batchnorm reads conv 4 and buffers 5, 6
  CHECK(std::vector<std::uint32_t>(bn_parents.begin(), bn_parents.end()) ==
        std::vector<std::uint32_t>{4, 5, 6});
  CHECK(adj.children_of(4).size() == 1);
  ctx.invalidate<facts::list<facts::ModulesInferred>>(PassResult{});
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK_FALSE(ctx.is_cached<ModuleTreeAnalysis>());
  ctx.invalidate<facts::list<facts::Topology>>(PassResult{});
  CHECK_FALSE(ctx.is_cached<TopologicalOrderAnalysis>());
  // a pipeline with trim-orphans drops the order it used
  make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, TrimOrphansPass{}).run(g, ctx);
  CHECK_FALSE(ctx.is_cached<TopologicalOrderAnalysis>());
}

namespace {
/// A user pass that says nothing about what it invalidates.
struct SilentPass : pass_info<SilentPass> {
  static constexpr std::string_view name = "silent";
  static constexpr std::string_view description = "declares no invalidates";
  PassResult run(ModelGraph&, PassContext&) const { return {}; }
};
/// The same pass, declaring that it preserves every fact.
struct ReadOnlyPass : pass_info<ReadOnlyPass> {
  static constexpr std::string_view name = "read-only";
  static constexpr std::string_view description = "preserves every fact";
  using invalidates = facts::none;
  PassResult run(ModelGraph&, PassContext&) const { return {}; }
};
} // namespace

TEST_CASE("a pass that declares no invalidates drops every topology fact and analysis") {
  static_assert(std::is_same_v<SilentPass::invalidates, facts::list<facts::Topology>>);
  using Silent = decltype(default_pipeline().append(SilentPass{}));
  static_assert(!Silent::provides<facts::LayersLabeled> &&
                !Silent::provides<facts::OrphansTrimmed>);
  static_assert(Silent::provides<facts::OutputNodesAdded>); // not a topology fact
  using ReadOnly = decltype(default_pipeline().append(ReadOnlyPass{}));
  static_assert(ReadOnly::provides<facts::LayersLabeled> &&
                ReadOnly::provides<facts::OrphansTrimmed>);

  ModelGraph g = chain_graph();
  PassContext ctx;
  (void)ctx.get<TopologicalOrderAnalysis>(g);
  (void)ctx.get<ModuleTreeAnalysis>(g);
  make_pipeline(ReadOnlyPass{}).run(g, ctx);
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK(ctx.is_cached<AdjacencyAnalysis>());
  CHECK(ctx.is_cached<ModuleTreeAnalysis>());
  make_pipeline(SilentPass{}).run(g, ctx);
  CHECK_FALSE(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK_FALSE(ctx.is_cached<AdjacencyAnalysis>());
  CHECK_FALSE(ctx.is_cached<ModuleTreeAnalysis>());
}

namespace {
struct MaybeChangesOptions {
  TORCHLENS_OPTIONS((bool, report_changed, false));
};
/// Declares the default invalidation (Topology); reports changed as told.
struct MaybeChangesPass : pass_info<MaybeChangesPass, MaybeChangesOptions> {
  using pass_info::pass_info;
  static constexpr std::string_view name = "maybe-changes";
  static constexpr std::string_view description = "reports changed as told";
  PassResult run(ModelGraph&, PassContext&) const {
    PassResult r;
    r.changed = options.report_changed();
    return r;
  }
};
} // namespace

TEST_CASE("a pass reporting changed == false keeps the analyses it would invalidate") {
  CHECK(PassResult{}.changed); // the default: "may have changed"
  ModelGraph g = chain_graph();
  PassContext ctx;
  (void)ctx.get<TopologicalOrderAnalysis>(g);
  make_pipeline(MaybeChangesPass{}).run(g, ctx);
  CHECK_FALSE(ctx.records.back().result.changed);
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK(ctx.is_cached<AdjacencyAnalysis>());
  make_pipeline(MaybeChangesPass{MaybeChangesOptions().report_changed(true)}).run(g, ctx);
  CHECK_FALSE(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK_FALSE(ctx.is_cached<AdjacencyAnalysis>());
  // the compile-time fold cannot know: the facts are dropped either way
  static_assert(
      !decltype(default_pipeline().append(MaybeChangesPass{}))::provides<facts::DistancesComputed>);
}

namespace {
/// Declares the default invalidation (Topology), changes a flag and keeps the topology.
struct KeepsTopologyPass : pass_info<KeepsTopologyPass> {
  static constexpr std::string_view name = "keeps-topology";
  static constexpr std::string_view description = "changes a flag, keeps the topology";
  PassResult run(ModelGraph& g, PassContext&) const {
    g[0].is_view = !g[0].is_view;
    PassResult r;
    r.keep<facts::Topology>();
    return r;
  }
};
} // namespace

TEST_CASE("a run that keeps a fact it may invalidate keeps the analyses built on it") {
  ModelGraph g = chain_graph();
  PassContext ctx;
  (void)ctx.get<TopologicalOrderAnalysis>(g);
  (void)ctx.get<ModuleTreeAnalysis>(g);
  CHECK(ctx.analysis_computations() == 3);
  make_pipeline(KeepsTopologyPass{}).run(g, ctx);
  const PassResult& kept = ctx.records.back().result;
  CHECK(kept.changed);
  // the set and its members
  CHECK(std::find(kept.kept.begin(), kept.kept.end(), std::type_index(typeid(facts::Topology))) !=
        kept.kept.end());
  CHECK(std::find(kept.kept.begin(), kept.kept.end(),
                  std::type_index(typeid(facts::OrphansTrimmed))) != kept.kept.end());
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
  CHECK(ctx.is_cached<AdjacencyAnalysis>());
  CHECK(ctx.is_cached<ModuleTreeAnalysis>());
  CHECK(ctx.analysis_computations() == 3);

  // trim-orphans removing nothing but marking a dead end keeps the adjacency it read
  GraphBuilder b;
  auto x = b.input();
  auto r = b.op("relu", {x});
  b.op("tanh", {x}); // read by nothing: internally terminated, not an orphan
  b.returns(r);
  ModelGraph t = b.build();
  PassContext tctx;
  make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, TrimOrphansPass{}).run(t, tctx);
  CHECK(tctx.records[2].result.get("orphans removed") == 0);
  CHECK(tctx.records[2].result.get("internally terminated") == 1);
  CHECK(tctx.records[2].result.changed);
  CHECK(tctx.is_cached<AdjacencyAnalysis>());
  CHECK(tctx.is_cached<TopologicalOrderAnalysis>());
  // with an orphan removed, it drops them
  ModelGraph m = mixed_graph();
  PassContext mctx;
  make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, TrimOrphansPass{}).run(m, mctx);
  CHECK(mctx.records[2].result.get("orphans removed") > 0);
  CHECK_FALSE(mctx.is_cached<AdjacencyAnalysis>());
}

TEST_CASE("structural passes that find nothing to do report no change: analyses are reused") {
  auto p = make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, TrimOrphansPass{},
                         NumberBuffersPass{}, ComputeDistancesPass{});
  ModelGraph g = chain_graph(); // no orphan, no buffer
  PassContext ctx;
  p.run(g, ctx);
  CHECK(ctx.records[0].result.changed); // add-output-nodes added the output vertex
  CHECK_FALSE(ctx.records[2].result.changed);
  CHECK_FALSE(ctx.records[3].result.changed);
  // the order and adjacency arrays mark-output-ancestry computed served trim-orphans and
  // compute-distances
  CHECK(ctx.analysis_computations() == 2);
  CHECK(ctx.is_cached<TopologicalOrderAnalysis>());
  // run again: add-output-nodes has nothing to add, so nothing is recomputed
  p.run(g, ctx);
  CHECK_FALSE(ctx.records[5].result.changed);
  CHECK(ctx.analysis_computations() == 2);

  ModelGraph m = mixed_graph(); // orphans and a duplicate buffer read
  PassContext mctx;
  p.run(m, mctx);
  CHECK(mctx.records[2].result.changed);
  CHECK(mctx.records[3].result.changed);
  CHECK(mctx.analysis_computations() ==
        4); // dropped by trim-orphans, computed again for compute-distances
}

TEST_CASE("the topological-order analysis sorts a graph whose vertex order is not topological") {
  ModelGraph g(3);
  boost::add_edge(2, 0, g);
  boost::add_edge(0, 1, g);
  PassContext ctx;
  const auto& r = ctx.get<TopologicalOrderAnalysis>(g);
  CHECK_FALSE(r.index_order_is_topological);
  CHECK(r.order == std::vector<Vertex>{2, 0, 1});
  boost::add_edge(1, 2, g);
  PassContext fresh;
  CHECK_THROWS_AS((void)fresh.get<TopologicalOrderAnalysis>(g), std::logic_error);
}

TEST_CASE("module tree: interning and common prefixes") {
  ModuleTree t;
  int a = t.intern({frame("enc"), frame("enc.l", "Linear", 1)});
  int b = t.intern({frame("enc"), frame("enc.l", "Linear", 2)});
  int c = t.intern({frame("enc")});
  CHECK(t.intern({frame("enc"), frame("enc.l", "Linear", 1)}) == a);
  CHECK(t.common_prefix(a, b) == c);
  CHECK(t.common_prefix(a, ModuleTree::kRoot) == ModuleTree::kRoot);
  CHECK(t.frames(b).back().pass == 2);
  CHECK(t.depth(a) == 2);
  // an interned path gets the same id, and hands out its handle; a prefix gets one made once
  const Interned<ModuleFrame> path{frame("enc"), frame("enc.l", "Linear", 2)};
  CHECK(t.intern(path) == b);
  CHECK(t.interned_frames(b).identity() == path.identity());
  const Interned<ModuleFrame>& prefix = t.interned_frames(c);
  REQUIRE(prefix.size() == 1);
  CHECK(prefix[0].address == "enc");
  CHECK(t.interned_frames(c).identity() == prefix.identity());
  CHECK(t.interned_frames(ModuleTree::kRoot).empty());
  CHECK(t.intern(Interned<ModuleFrame>{}) == ModuleTree::kRoot);
}

TEST_CASE("module tree: thousands of paths keep their ids as the child table grows") {
  // 40 blocks × 3 passes × 25 children: the table of children grows several
  // times; every path must come back to the id it got first, told apart by
  // parent, address and pass (the type is not part of a child's identity)
  ModuleTree t;
  std::map<std::tuple<int, int, int>, int> first; // (block, pass, child) -> id
  for (int round = 0; round < 2; ++round) {
    for (int b = 0; b < 40; ++b) {
      const std::string block = "blocks." + std::to_string(b);
      for (int pass = 1; pass <= 3; ++pass) {
        for (int c = 0; c < 25; ++c) {
          const int id = t.intern(
              {frame(block, "Block", pass), frame(block + ".l" + std::to_string(c), "Linear", 1)});
          const auto [it, added] = first.try_emplace({b, pass, c}, id);
          CHECK(added == (round == 0));
          CHECK(it->second == id);
          CHECK(t.depth(id) == 2);
          CHECK(t.innermost(t.parent(id)).pass == pass);
        }
      }
    }
  }
  CHECK(t.size() == 1 + 40 * 3 + 40 * 3 * 25); // the root, the blocks' passes, their children
  const int a = first.at({7, 2, 3});
  CHECK(t.common_prefix(a, first.at({7, 2, 20})) == t.parent(a));
  CHECK(t.common_prefix(a, first.at({7, 3, 3})) == ModuleTree::kRoot);
  CHECK(t.intern({frame("blocks.7", "Other", 2)}) == t.parent(a));
}

TEST_CASE("linear probing spreads runs of hashes over the table") {
  // Keys from counters (a module's pass number, a parent path's id) come in
  // runs. Two runs whose starts are close would, masked as they are, fill one
  // stretch of slots, and every look-up would walk it: quadratic probing. The
  // probe mixes the hash first, so the walks stay short. Counted, not timed.
  std::vector<char> used(std::size_t{1} << 17, 0);
  std::size_t probes = 0, longest = 0;
  const std::size_t keys_per_run = 20000;
  for (std::size_t k = 0; k < keys_per_run; ++k) {
    for (const std::size_t start : {std::size_t{0x7f3a10000}, std::size_t{0x7f3a10000} + 5000}) {
      std::size_t walk = 0;
      const std::size_t slot =
          torchlens::detail::linear_probe(start + k, used.size(), [&](std::size_t i) {
            ++walk;
            return used[i] == 0;
          });
      used[slot] = 1;
      probes += walk;
      longest = std::max(longest, walk);
    }
  }
  CHECK(probes < 3 * 2 * keys_per_run); // under 3 slots per look-up on average (was 7 500)
  CHECK(longest < 64);
}

TEST_CASE("PassResult statistics") {
  PassResult r;
  r.add("x").add("x", 2).add("y", 5);
  CHECK(r.get("x") == 3);
  CHECK(r.has("y"));
  CHECK_THROWS_AS((void)r.get("z"), std::invalid_argument);
}

TEST_CASE("the torch-free layers raise the torchlens error family, prefixed once") {
  PassResult r;
  CHECK_THROWS_AS((void)r.get("z"), UsageError);
  CHECK_THROWS_WITH((void)r.get("z"), "torchlens: pass reported no statistic named 'z'");
  PassContext ctx;
  CHECK_THROWS_AS((void)ctx.record("nope"), UsageError);
  ModelGraph g(2);
  boost::add_edge(0, 1, g);
  boost::add_edge(1, 0, g);
  try {
    (void)ctx.get<TopologicalOrderAnalysis>(g);
    FAIL("expected an InvariantError");
  } catch (const InvariantError& e) {
    CHECK(std::string(e.what()) == "torchlens: the model graph has a cycle");
    CHECK(e.message() == "the model graph has a cycle");
  }
}
