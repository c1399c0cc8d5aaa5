// Tests of the group-recurrences pass: the paper's rules 1-3 and Fig. 4.
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>
#include <support/random_loop_graphs.hpp>

#include "support/doctest.hpp"
#include "support/huge_pages.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace torchlens;
using namespace torchlens::testing;
using passes::GroupRecurrencesPass;

namespace {
/// Runs the default pipeline and returns the labels in vertex order.
std::vector<std::string> labels_of(ModelGraph g) {
  run_default_pipeline(g);
  std::vector<std::string> out;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) out.push_back(g[v].label());
  return out;
}
/// Appends `runs` passes of a 3-op cell after `cur`: a linear reading
/// cell.weight in module `cell` (call it + 1), a tanh, a mul by 0.5. Returns the
/// last mul.
Vertex add_cell_runs(GraphBuilder& b, Vertex cur, int runs) {
  for (int it = 0; it < runs; ++it) {
    cur = b.op("linear", {cur},
               {.params = {"cell.weight"}, .modules = {frame("cell", "Linear", it + 1)}});
    cur = b.op("tanh", {cur});
    cur = b.op("mul", {cur}, {.scalar_args = {{"other", "0.5"}}});
  }
  return cur;
}
using L = std::vector<std::string>;
} // namespace

TEST_CASE("Fig. 4A: a shared linear applied twice, identical cos before and add after") {
  CHECK(labels_of(fig4a_graph()) == L{"input_1", "cos_1_1:1", "linear_1_2:1", "add_1_3:1",
                                      "sin_1_4", "cos_1_1:2", "linear_1_2:2", "add_1_3:2",
                                      "output_1"});
  ModelGraph g = fig4a_graph();
  run_default_pipeline(g);
  CHECK(g[boost::graph_bundle].is_recurrent);
  CHECK(g[boost::graph_bundle].max_recurrent_loops == 2);
  CHECK(g[2].layer == g[6].layer);
  CHECK(g[2].equivalence_type == "linear[fc.bias,fc.weight]@");
}

TEST_CASE("Fig. 4B: xyzxyzxyz groups into three passes") {
  CHECK(labels_of(pattern_graph("xyzxyzxyz")) == L{"input_1", "x_1_1:1", "y_1_2:1", "z_1_3:1",
                                                   "x_1_1:2", "y_1_2:2", "z_1_3:2", "x_1_1:3",
                                                   "y_1_2:3", "z_1_3:3", "output_1"});
}

TEST_CASE("Fig. 4B: xyzaxyzbxyz does not group (the repeats are not adjacent)") {
  CHECK(labels_of(pattern_graph("xyzaxyzbxyz")) == L{"input_1", "x_1_1", "y_1_2", "z_1_3", "a_1_4",
                                                     "x_2_5", "y_2_6", "z_2_7", "b_1_8", "x_3_9",
                                                     "y_3_10", "z_3_11", "output_1"});
}

TEST_CASE("Fig. 4B: cos-relu-mul twice in a row groups, the repeat after tan does not") {
  CHECK(labels_of(pattern_graph("crmcrmtcrm")) == L{"input_1", "c_1_1:1", "r_1_2:1", "m_1_3:1",
                                                    "c_1_1:2", "r_1_2:2", "m_1_3:2", "t_1_4",
                                                    "c_2_5", "r_2_6", "m_2_7", "output_1"});
}

TEST_CASE("one Linear applied 5 times in a loop is one layer with 5 passes") {
  ModelGraph g = linear_loop_graph(5);
  run_default_pipeline(g);
  for (Vertex v = 1; v <= 5; ++v) {
    CHECK(g[v].label() == "linear_1_1:" + std::to_string(v));
    CHECK(g[v].num_passes == 5);
    CHECK(g[v].pass_num == static_cast<int>(v));
  }
  CHECK(g[boost::graph_bundle].max_recurrent_loops == 5);
}

TEST_CASE("rule 2: identical ops after each pass of a shared layer join it even when apart") {
  // linear(W) -> relu, then tanh, then linear(W) -> relu: the relus are passes of one layer
  GraphBuilder b;
  auto x = b.input();
  auto l1 = b.op("linear", {x}, {.params = {"fc.weight"}});
  auto r1 = b.op("relu", {l1});
  auto t = b.op("tanh", {r1});
  auto l2 = b.op("linear", {t}, {.params = {"fc.weight"}});
  auto r2 = b.op("relu", {l2});
  b.returns(r2);
  CHECK(labels_of(b.build()) == L{"input_1", "linear_1_1:1", "relu_1_2:1", "tanh_1_3",
                                  "linear_1_1:2", "relu_1_2:2", "output_1"});
}

TEST_CASE("equivalence types separate ops by scalar args, parent shapes and module") {
  GraphBuilder b;
  auto x = b.input();
  auto m1 = b.op("mul", {x}, {.scalar_args = {{"other", "2"}}});
  auto m2 = b.op("mul", {m1}, {.scalar_args = {{"other", "3"}}});
  auto m3 = b.op("mul", {m2}, {.modules = {frame("blk")}, .scalar_args = {{"other", "3"}}});
  b.returns(m3);
  ModelGraph g = b.build();
  PassContext ctx;
  (void)GroupRecurrencesPass{}.run(g, ctx);
  CHECK(g[m1].equivalence_type == "mul(other=2;(1,4))@");
  CHECK(g[m3].equivalence_type == "mul(other=3;(1,4))@blk");
  CHECK(g[m1].num_passes == 1);
  CHECK(g[m2].num_passes == 1);
}

TEST_CASE("parallel branches are not a loop: relu(x*2) + relu(x*3)") {
  GraphBuilder b;
  auto x = b.input();
  auto m2 = b.op("mul", {x}, {.scalar_args = {{"other", "2"}}});
  auto m3 = b.op("mul", {x}, {.scalar_args = {{"other", "3"}}});
  auto r2 = b.op("relu", {m2});
  auto r3 = b.op("relu", {m3});
  b.returns(b.op("add", {r2, r3}));
  ModelGraph g = b.build();
  CHECK(labels_of(g) ==
        L{"input_1", "mul_1_1", "mul_2_2", "relu_1_3", "relu_2_4", "add_1_5", "output_1"});
  run_default_pipeline(g);
  CHECK_FALSE(g[boost::graph_bundle].is_recurrent);
}

TEST_CASE("a helper called twice outside a loop is two layers") {
  // sin, mul | cos, add, exp | sin, mul: the repeats are not back to back
  CHECK(labels_of(pattern_graph("smcaesm")) ==
        L{"input_1", "s_1_1", "m_1_2", "c_1_3", "a_1_4", "e_1_5", "s_2_6", "m_2_7", "output_1"});
}

TEST_CASE("two ops of one type at two places of a loop body are two layers") {
  // (sin, mul, sin, add) x 3: sin_1 and sin_2 with 3 passes each, not one sin of 6
  CHECK(labels_of(pattern_graph("smsasmsasmsa")) ==
        L{"input_1", "s_1_1:1", "m_1_2:1", "s_2_3:1", "a_1_4:1", "s_1_1:2", "m_1_2:2", "s_2_3:2",
          "a_1_4:2", "s_1_1:3", "m_1_2:3", "s_2_3:3", "a_1_4:3", "output_1"});
}

TEST_CASE("two separate loops, and the same op after the second, stay apart") {
  CHECK(labels_of(pattern_graph("smsmsmecsmsms")) ==
        L{"input_1", "s_1_1:1", "m_1_2:1", "s_1_1:2", "m_1_2:2", "s_1_1:3", "m_1_2:3", "e_1_3",
          "c_1_4", "s_2_5:1", "m_2_6:1", "s_2_5:2", "m_2_6:2", "s_2_5:3", "output_1"});
}

TEST_CASE("a parameter-free op applied back to back outside any module is a chain, not a loop") {
  // tanh(tanh(tanh(x))): TorchLens (after 1.0) keeps adjacent repeats of a
  // one-op, parameter-free body apart unless the op runs in a module or is a buffer
  CHECK(labels_of(pattern_graph("ttt")) == L{"input_1", "t_1_1", "t_2_2", "t_3_3", "output_1"});
  ModelGraph g = pattern_graph("tttt");
  run_default_pipeline(g);
  CHECK_FALSE(g[boost::graph_bundle].is_recurrent);
  // (two repeats of a one-op body never group, guard or not: refinement splits
  // them, the first having no parent in the group and the second no child)
  CHECK(labels_of(pattern_graph("tt")) == L{"input_1", "t_1_1", "t_2_2", "output_1"});
  ModelGraph tt = pattern_graph("tt");
  PassContext ctx;
  (void)GroupRecurrencesPass{GroupRecurrencesPass::Options().min_param_free_loop_body(1)}.run(tt,
                                                                                              ctx);
  CHECK(tt[1].num_passes == 1);
  // a body of two ops still repeats
  CHECK(labels_of(pattern_graph("tsts")) ==
        L{"input_1", "t_1_1:1", "s_1_2:1", "t_1_1:2", "s_1_2:2", "output_1"});
}

TEST_CASE("one single-op module called four times in a row is one layer with four passes") {
  // for _ in range(4): x = self.relu(x) (TorchLens's ReusedReluLoop): the module anchors it
  GraphBuilder b;
  Vertex cur = b.input();
  for (int i = 1; i <= 4; ++i) cur = b.op("relu", {cur}, {.modules = {frame("relu", "ReLU", i)}});
  b.returns(cur);
  CHECK(labels_of(b.build()) ==
        L{"input_1", "relu_1_1:1", "relu_1_1:2", "relu_1_1:3", "relu_1_1:4", "output_1"});
}

TEST_CASE(
    "a one-op body whose every pass is returned is a loop: each repeat is the op and its "
    "output") {
  // for _ in range(3): x = tanh(x); outs.append(x). Expected: TorchLens's own grouping code.
  GraphBuilder b;
  Vertex cur = b.input();
  for (int i = 0; i < 3; ++i) {
    cur = b.op("tanh", {cur});
    b.returns(cur);
  }
  ModelGraph g = b.build();
  run_default_pipeline(g);
  for (Vertex v = 1; v <= 3; ++v) {
    CHECK(g[v].layer == g[1].layer);
    CHECK(g[v].pass_num == static_cast<int>(v));
    CHECK(g[v + 3].kind == NodeKind::output);
    CHECK(g[v + 3].layer == g[4].layer);
    CHECK(g[v + 3].pass_num == static_cast<int>(v));
  }
  CHECK(g[1].num_passes == 3);
  CHECK(g[4].num_passes == 3);
}

TEST_CASE(
    "min_param_free_loop_body sets the smallest parameter-free loop body; 1 is TorchLens "
    "1.0's rule") {
  const auto with = [](int body) {
    return GroupRecurrencesPass{GroupRecurrencesPass::Options().min_param_free_loop_body(body)};
  };
  PassContext ctx;
  ModelGraph ttt = pattern_graph("ttt");
  CHECK(with(1).run(ttt, ctx).get("recurrent layers") == 1);
  CHECK(ttt[1].num_passes == 3);
  CHECK(pass_to_string(with(1)) == "group-recurrences(min_param_free_loop_body=1)");
  // a body of 2 is not enough for 3, a body of 3 is
  ModelGraph tsts = pattern_graph("tstst");
  CHECK(with(3).run(tsts, ctx).get("recurrent layers") == 0);
  ModelGraph tsu = pattern_graph("tsutsu");
  CHECK(with(3).run(tsu, ctx).get("recurrent layers") == 3);
  ModelGraph g = pattern_graph("tt");
  CHECK_THROWS_WITH_AS(with(0).run(g, ctx),
                       doctest::Contains("min_param_free_loop_body must be at least 1"),
                       UsageError);
}

namespace {
/// An `identity` vertex as capture makes it (a module returning its argument).
Vertex identity(GraphBuilder& b, Vertex arg, std::vector<ModuleFrame> modules) {
  return b.op("identity", {arg}, {.modules = std::move(modules)});
}
ModelGraph with_identities(ModelGraph g) {
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].layer_type == "identity") g[v].op_name = "torchlens::identity";
  }
  return g;
}
} // namespace

TEST_CASE("a parameter-free module returning its input twice in a block is not a loop") {
  // Swin's block in eval: x + sd(attn(norm1(x))), then + sd(mlp(norm2(x))),
  // one StochasticDepth module `sd` called twice. TorchLens 1.0 logs its
  // identity as a dead end and finds no loop; read through, identity + add
  // would repeat and the block would be a two-pass loop
  GraphBuilder b;
  const auto blk = frame("block", "SwinBlock");
  auto x = b.input();
  auto n1 = b.op("layernorm", {x}, {.params = {"block.norm1.weight"}, .modules = {blk}});
  auto a = b.op("linear", {n1}, {.params = {"block.attn.weight"}, .modules = {blk}});
  auto s1 = b.op("add", {x, identity(b, a, {blk, frame("block.sd", "StochasticDepth", 1)})},
                 {.modules = {blk}});
  auto n2 = b.op("layernorm", {s1}, {.params = {"block.norm2.weight"}, .modules = {blk}});
  auto m = b.op("linear", {n2}, {.params = {"block.mlp.weight"}, .modules = {blk}});
  b.returns(b.op("add", {s1, identity(b, m, {blk, frame("block.sd", "StochasticDepth", 2)})},
                 {.modules = {blk}}));
  ModelGraph g = with_identities(b.build());
  CHECK(labels_of(g) == L{"input_1", "layernorm_1_1", "linear_1_2", "identity_1_3", "add_1_4",
                          "layernorm_2_5", "linear_2_6", "identity_2_7", "add_2_8", "output_1"});
  run_default_pipeline(g);
  CHECK_FALSE(g[boost::graph_bundle].is_recurrent);
}

TEST_CASE("an identity module in a loop body is a layer with a pass per iteration") {
  // for _ in range(3): x = relu(skip(fc(x))): fc, skip's identity and relu
  // are three layers of three passes (the identity read through, as TorchLens
  // reads it: a dead end beside fc's output)
  GraphBuilder b;
  Vertex cur = b.input();
  for (int i = 1; i <= 3; ++i) {
    auto l =
        b.op("linear", {cur}, {.params = {"fc.weight"}, .modules = {frame("fc", "Linear", i)}});
    cur = b.op("relu", {identity(b, l, {frame("skip", "Identity", i)})});
  }
  b.returns(cur);
  CHECK(labels_of(with_identities(b.build())) == L{"input_1", "linear_1_1:1", "identity_1_2:1",
                                                   "relu_1_3:1", "linear_1_1:2", "identity_1_2:2",
                                                   "relu_1_3:2", "linear_1_1:3", "identity_1_2:3",
                                                   "relu_1_3:3", "output_1"});
}

TEST_CASE("the outputs of one call of a multi-output op are layers, not passes") {
  // one LSTM call: three outputs reading the same parameters; two zeros feed it
  GraphBuilder b;
  auto x = b.input({5, 3, 5});
  auto h0 = b.op("zeros", {}, {.shape = {1, 3, 10}});
  auto c0 = b.op("zeros", {}, {.shape = {1, 3, 10}});
  std::vector<Vertex> outs;
  for (int i = 0; i < 3; ++i) {
    outs.push_back(b.op("lstm", {x, h0, c0}, {.params = {"lstm.weight_ih_l0"}, .output_index = i}));
  }
  ModelGraph g = b.graph();
  for (Vertex v : outs) g[v].num_outputs = 3;
  g[boost::graph_bundle].returned.push_back({g[outs[1]].id, "output.0"});
  CHECK(labels_of(g) ==
        L{"input_1", "zeros_1_1", "zeros_2_2", "lstm_1_3", "lstm_2_4", "lstm_3_5", "output_1"});
}

TEST_CASE("the same weights applied in two modules are one layer (rule 1 across modules)") {
  // `b.weight = a.weight; b.bias = a.bias`, then b(relu(a(x))): TorchLens 1.0
  // gives linear_1_1:1 (a:1) and linear_1_1:2 (b:1). Its expansions start from
  // the ops with the same function and parameters, whatever their modules.
  GraphBuilder b;
  auto x = b.input();
  auto l1 = b.op("linear", {x}, {.params = {"a.weight", "a.bias"}, .modules = {frame("a")}});
  auto r = b.op("relu", {l1});
  auto l2 = b.op("linear", {r}, {.params = {"a.weight", "a.bias"}, .modules = {frame("b")}});
  b.returns(l2);
  ModelGraph g = b.build();
  CHECK(labels_of(g) == L{"input_1", "linear_1_1:1", "relu_1_2", "linear_1_1:2", "output_1"});
  run_default_pipeline(g);
  CHECK(g[boost::graph_bundle].is_recurrent);
  // sharing the weight but not the bias: two layers
  GraphBuilder c;
  auto y = c.input();
  auto k1 = c.op("linear", {y}, {.params = {"a.weight", "a.bias"}, .modules = {frame("a")}});
  auto k2 = c.op("linear", {c.op("relu", {k1})},
                 {.params = {"a.weight", "b.bias"}, .modules = {frame("b")}});
  c.returns(k2);
  CHECK(labels_of(c.build()) == L{"input_1", "linear_1_1", "relu_1_2", "linear_2_3", "output_1"});
}

TEST_CASE("an input fed to each iteration of a loop is one input layer with a pass per iteration") {
  // TorchLens's LoopingFromInputs: acc = sin(log(acc + x_i)) for three inputs of one shape
  GraphBuilder b;
  std::vector<Vertex> xs{b.input(), b.input(), b.input()};
  Vertex acc = b.op("zeros", {});
  for (Vertex x : xs) acc = b.op("sin", {b.op("log", {b.op("add", {acc, x})})});
  b.returns(acc);
  CHECK(labels_of(b.build()) == L{"input_1:1", "input_1:2", "input_1:3", "zeros_1_1", "add_1_2:1",
                                  "log_1_3:1", "sin_1_4:1", "add_1_2:2", "log_1_3:2", "sin_1_4:2",
                                  "add_1_2:3", "log_1_3:3", "sin_1_4:3", "output_1"});
}

TEST_CASE("detect_loops=false keeps only same-parameter grouping") {
  auto off = GroupRecurrencesPass{GroupRecurrencesPass::Options().detect_loops(false)};
  ModelGraph g = pattern_graph("xyzxyz");
  PassContext ctx;
  auto r = off.run(g, ctx);
  CHECK(r.get("recurrent layers") == 0);
  ModelGraph loop = linear_loop_graph(3);
  CHECK(off.run(loop, ctx).get("recurrent layers") == 1);
  CHECK(pass_to_string(off) == "group-recurrences(detect_loops=false)");
}

TEST_CASE("group-recurrences obeys the pass laws") {
  check_pass_laws_on_samples<GroupRecurrencesPass>();
}

TEST_CASE("a thread's reused workspace leaves no trace: results do not depend on earlier graphs") {
  // the graphs to compare, each logged on a fresh thread (a fresh workspace)
  const std::vector<ModelGraph> graphs{
      fig4a_graph(), pattern_graph("xyzxyzxyz"), pattern_graph("xyzaxyzbxyz"), linear_loop_graph(5),
      mixed_graph(), pattern_graph("cab")};
  std::vector<L> fresh;
  for (const auto& g : graphs) {
    L got;
    std::thread([&] { got = labels_of(g); }).join();
    fresh.push_back(got);
  }
  // the same graphs on one thread, in two orders, after a graph with many classes
  std::thread([&] {
    (void)labels_of(pattern_graph("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"));
    for (std::size_t i = 0; i < graphs.size(); ++i) CHECK(labels_of(graphs[i]) == fresh[i]);
    for (std::size_t i = graphs.size(); i-- > 0;) CHECK(labels_of(graphs[i]) == fresh[i]);
  }).join();
  CHECK(fresh[1] == L{"input_1", "x_1_1:1", "y_1_2:1", "z_1_3:1", "x_1_1:2", "y_1_2:2", "z_1_3:2",
                      "x_1_1:3", "y_1_2:3", "z_1_3:3", "output_1"});
}

TEST_CASE("a loop after more distinct ops than the class-key cache holds groups as alone") {
  // 3 000 convolutions with their own weights (each its own class key: the cache of keys
  // is emptied on the way) before a 3-op cell run 4 times: the cell's ops are still 3
  // layers of 4 passes, and the convolutions layers of one pass each
  GraphBuilder b;
  Vertex cur = b.input();
  for (int i = 0; i < 3000; ++i) {
    std::string m = "c"; // (not `"c" + std::to_string(i)`: GCC 12 warns falsely, -Wrestrict)
    m += std::to_string(i);
    cur = b.op("conv2d", {cur}, {.params = {m + ".weight"}, .modules = {frame(m, "Conv2d")}});
  }
  b.returns(add_cell_runs(b, cur, 4));
  ModelGraph g = b.build();
  run_default_pipeline(g);
  const auto n = boost::num_vertices(g);
  for (Vertex v = 1; v <= 3000; ++v) {
    CHECK(g[v].num_passes == 1);
    CHECK(g[v].type_num == static_cast<int>(v));
  }
  const char* types[] = {"linear", "tanh", "mul"};
  for (Vertex v = 3001; v + 1 < n; ++v) {
    const std::size_t step = v - 3001;
    CHECK(g[v].layer_type == types[step % 3]);
    CHECK(g[v].num_passes == 4);
    CHECK(g[v].pass_num == static_cast<int>(step / 3 + 1));
    CHECK(g[v].label() == std::string(types[step % 3]) + "_1_" + std::to_string(3001 + step % 3) +
                              ":" + std::to_string(step / 3 + 1));
  }
  CHECK(g[boost::graph_bundle].max_recurrent_loops == 4);
}

namespace {
/// 100 convolutions with weights of their own (enough for group-recurrences to
/// count every parameter's reads and give such ops new classes without looking
/// their texts up), then a shared linear `cell` applied twice, followed by op a
/// the first time and op b the second: the layers of a and b.
std::pair<std::size_t, std::size_t> layers_after_own_params(const std::string& type_a,
                                                            const OpSpec& a,
                                                            const std::string& type_b,
                                                            const OpSpec& b) {
  GraphBuilder gb;
  Vertex cur = gb.input();
  for (int i = 0; i < 100; ++i) {
    std::string m = "c";
    m += std::to_string(i);
    cur = gb.op("conv2d", {cur}, {.params = {m + ".weight"}, .modules = {frame(m, "Conv2d")}});
  }
  OpSpec cell{.params = {"cell.weight"}, .modules = {frame("cell", "Linear")}};
  const Vertex va = gb.op(type_a, {gb.op("linear", {cur}, cell)}, a);
  cell.modules = {frame("cell", "Linear", 2)};
  const Vertex vb = gb.op(type_b, {gb.op("linear", {va}, cell)}, b);
  gb.returns(vb);
  ModelGraph g = gb.build();
  run_default_pipeline(g);
  for (Vertex v = 1; v <= 100; ++v) CHECK(g[v].num_passes == 1);
  CHECK(g[101].num_passes == 2); // the cell
  CHECK(g[101].layer == g[103].layer);
  return {g[va].layer, g[vb].layer};
}
} // namespace

TEST_CASE("ops reading weights of their own: one text is still one class") {
  // An op whose parameters no other op reads has a text no other op has, so
  // the pass numbers its class without looking the text up; unless separators
  // inside addresses or layer types let two parameter sets write one text.
  // TorchLens compares the texts: a and b are one class, matched when the
  // expansion from the cell's two passes reaches them, one layer of two passes.
  SUBCASE("an address holding a comma: `linear[p,q]@` twice") {
    OpSpec a{.params = {"p,q"}}, b{.params = {"q", "p"}};
    const auto [la, lb] = layers_after_own_params("linear", a, "linear", b);
    CHECK(la == lb);
  }
  SUBCASE("a layer type holding a bracket: `lin[w1]@x[y]@z` twice") {
    OpSpec a{.params = {"w1"}, .modules = {frame("x[y]@z", "M")}};
    OpSpec b{.params = {"y"}, .modules = {frame("z", "M")}};
    const auto [la, lb] = layers_after_own_params("lin", a, "lin[w1]@x", b);
    CHECK(la == lb);
  }
  SUBCASE("plain addresses: two texts, two layers") {
    OpSpec a{.params = {"p"}}, b{.params = {"q"}};
    const auto [la, lb] = layers_after_own_params("linear", a, "linear", b);
    CHECK(la != lb);
  }
}

TEST_CASE("the pass's index queue takes indices smallest first, pushes below the cursor included") {
  passes::detail::IndexQueue q;
  q.reset(10000);
  std::size_t v = 0;
  CHECK_FALSE(q.pop(v));
  for (std::size_t i : {9000, 70, 4097, 70, 64, 63}) q.push(i);
  std::vector<std::size_t> got;
  while (q.pop(v)) {
    got.push_back(v);
    if (v == 4097) { // the cursor has passed the first summary word: push below it
      q.push(5);
      q.push(9999);
    }
  }
  CHECK(got == std::vector<std::size_t>{63, 64, 70, 4097, 5, 9000, 9999});
}

TEST_CASE("the pass's text ids number texts in the order first seen and keep them over clear()") {
  passes::detail::TextIds ids;
  CHECK(ids.id("relu(2)@") == std::pair<std::size_t, bool>{0, true});
  CHECK(ids.id("linear[fc.weight]@fc") == std::pair<std::size_t, bool>{1, true});
  CHECK(ids.id(std::string("relu(2)") + "@") == std::pair<std::size_t, bool>{0, false});
  CHECK(ids.size() == 2);
  ids.clear();
  CHECK(ids.size() == 0);
  CHECK(ids.id("linear[fc.weight]@fc") == std::pair<std::size_t, bool>{0, true});
  CHECK(ids.id("relu(2)@") == std::pair<std::size_t, bool>{1, true});
}

TEST_CASE(
    "the passes' scratch arena: aligned, apart, in blocks of whole huge pages, freed together") {
  using passes::detail::ScratchArena;
  constexpr std::size_t huge = torchlens::detail::kHugePageBytes;
  ScratchArena arena(3 * huge - 5); // rounded up: a block of three huge pages at least
  CHECK(arena.blocks() <= 1);       // (one the thread kept, if large enough)
  std::vector<std::pair<char*, std::size_t>> got;
  for (std::size_t i = 0; i < 40; ++i) {
    const std::size_t bytes = 1 + i * 977, align = std::size_t{1} << (i % 7);
    auto* p = static_cast<char*>(arena.allocate(bytes, align));
    CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0);
    std::memset(p, static_cast<int>(i), bytes); // ASan: inside a mapping
    got.emplace_back(p, bytes);
  }
  CHECK(arena.blocks() == 1);
  CHECK(arena.reserved() >= 3 * huge);
  CHECK(arena.reserved() % huge == 0);
  bool apart = true, kept = true;
  for (std::size_t i = 0; i < got.size(); ++i) {
    for (std::size_t j = i + 1; j < got.size(); ++j) {
      apart = apart && (got[i].first + got[i].second <= got[j].first ||
                        got[j].first + got[j].second <= got[i].first);
    }
    kept = kept && got[i].first[got[i].second - 1] == static_cast<char>(i);
  }
  CHECK(apart);
  CHECK(kept);
  // the kernel backs the block with huge pages where it can: it is aligned to
  // 2 MiB and advised (Linux)
  const int eligible = torchlens::test::huge_page_eligible(got[0].first);
  if (torchlens::detail::takes_huge_pages(huge) && eligible >= 0) CHECK(eligible == 1);
  // a request past the block's end takes a new block, large enough however large
  const std::size_t first_block = arena.reserved();
  auto* big = static_cast<char*>(arena.allocate(first_block + huge, 64));
  std::memset(big, 1, first_block + huge);
  CHECK(arena.blocks() == 2);
  CHECK(arena.reserved() >= 2 * first_block + huge);
  CHECK(arena.reserved() % huge == 0);
}

TEST_CASE("a thread keeps its last arena's largest block for its next arena") {
  using passes::detail::ScratchArena;
  constexpr std::size_t huge = torchlens::detail::kHugePageBytes;
  char* first = nullptr;
  {
    ScratchArena a(40 * huge); // larger than any block the thread may have kept
    CHECK(a.blocks() == 0);
    first = static_cast<char*>(a.allocate(100, 64));
    std::memset(first, 1, 100);
    (void)a.allocate(3 * 40 * huge, 64); // a second, larger block: the one kept
    CHECK(a.blocks() == 2);
  }
  std::size_t kept = 0;
  {
    ScratchArena b(8 * huge); // smaller: takes the kept block, nothing mapped anew
    CHECK(b.blocks() == 1);
    kept = b.reserved();
    CHECK(kept > 3 * 40 * huge);
    auto* p = static_cast<char*>(b.allocate(kept / 2, 64));
    std::memset(p, 2, kept / 2); // its pages, given back lazily, are writable as ever
  }
  {
    ScratchArena c(kept + huge); // larger than the kept block: a block of its own
    CHECK(c.blocks() == 0);
    (void)c.allocate(1, 1);
    CHECK(c.reserved() == kept + huge);
  }
  ScratchArena d(kept); // the larger of the two is kept
  CHECK(d.reserved() == kept + huge);
}

TEST_CASE("a workspace's vectors take the arena of the scope they were made in, and keep it") {
  using passes::detail::ScratchArena;
  using passes::detail::ScratchScope;
  using passes::detail::ScratchVector;
  ScratchArena arena(0), other(0);
  ScratchVector<std::uint32_t> heap(5, 7u);
  CHECK(heap.get_allocator().arena == nullptr);
  {
    const ScratchScope scope(&arena);
    ScratchVector<std::uint32_t> a(1000, 3u);
    CHECK(a.get_allocator().arena == &arena);
    CHECK(arena.blocks() == 1);
    {
      const ScratchScope inner(&other);
      ScratchVector<char> b(10, 'x');
      CHECK(b.get_allocator().arena == &other);
    }
    ScratchVector<std::uint32_t> c; // the outer scope's again
    CHECK(c.get_allocator().arena == &arena);
    // moves and swaps carry the storage's allocator with it; a copy keeps the source's
    c = std::move(heap);
    CHECK(c.get_allocator().arena == nullptr);
    CHECK(c == ScratchVector<std::uint32_t>(5, 7u));
    c.swap(a);
    CHECK(c.get_allocator().arena == &arena);
    CHECK(a.get_allocator().arena == nullptr);
    CHECK(c.size() == 1000);
    const ScratchVector<std::uint32_t> d = c;
    CHECK(d.get_allocator().arena == &arena);
    CHECK(d[999] == 3u);
    a.assign(20000, 9u); // grows on the heap, where its storage came from
    CHECK(a.get_allocator().arena == nullptr);
  }
  ScratchVector<std::uint32_t> after(3, 1u);
  CHECK(after.get_allocator().arena == nullptr);
}

TEST_CASE(
    "a graph past the thread's reused workspace (its tables on a scratch arena) groups by the "
    "rules") {
  // 1 500 runs of a 3-op cell: 4 502 vertices, more than the workspace a thread
  // keeps (State::kReusedUpTo), so the pass takes a workspace on a scratch
  // arena. Rule 1: every linear reads cell.weight; rule 2: the tanh and mul
  // after each pass join their own layers. Expected: 3 layers of 1 500 passes,
  // named after the first pass's raw labels.
  GraphBuilder b;
  constexpr int kRuns = 1500;
  b.returns(add_cell_runs(b, b.input(), kRuns));
  ModelGraph g = b.build();
  ModelGraph again = g;
  const auto n = boost::num_vertices(g); // the input and the ops
  REQUIRE(n > 4096);
  run_default_pipeline(g);
  const char* types[] = {"linear", "tanh", "mul"};
  bool as_rules = true;
  for (Vertex v = 1; v < n; ++v) {
    const std::size_t step = v - 1;
    const std::string want = std::string(types[step % 3]) + "_1_" + std::to_string(1 + step % 3) +
                             ":" + std::to_string(step / 3 + 1);
    if (as_rules && g[v].label() != want) MESSAGE(v << ": " << g[v].label() << ", not " << want);
    as_rules =
        as_rules && g[v].label() == want && g[v].num_passes == kRuns && g[v].layer == step % 3 + 1;
  }
  CHECK(as_rules);
  REQUIRE(boost::num_vertices(g) == n + 1);
  CHECK(g[Vertex{n}].label() == "output_1");
  CHECK(g[boost::graph_bundle].max_recurrent_loops == kRuns);
  // and again on the same thread, whose arena the first run freed
  run_default_pipeline(again);
  bool same = boost::num_vertices(again) == n + 1;
  for (Vertex v = 0; same && v <= n; ++v) same = again[v].label() == g[v].label();
  CHECK(same);
}

TEST_CASE("iso-groups are sorted by raw-label rank: a radix sort past 512 members") {
  // advance() sorts each new iso-group's (vertex, subgraph) pairs by the
  // vertices' raw-label ranks (distinct within a layer type), and the lock step
  // its vertex lists (a seed's members, an iso-group, a component) by the same
  // ranks, read from a table by vertex: by comparison below 512 items, by
  // 11-bit radix passes from 512 on (one pass for ranks below 2 048, two below
  // 2^22, three above). Checked against std::sort on shuffled distinct ranks of
  // every size around those bounds, and on sorted input (left as it is).
  using Pair = std::pair<std::uint32_t, std::uint32_t>;
  std::mt19937 rng(14);
  std::vector<Pair> buffer;
  std::vector<std::uint32_t> counts, vertex_buffer;
  const auto by_key = [](const Pair& p) { return p.first; };
  for (const std::size_t size : {0, 1, 2, 300, 511, 512, 513, 1000, 2047, 2048, 3000, 70000}) {
    for (const std::uint32_t spread : {1u, 3u, 1500u, 60000u}) { // keys below 2^32
      CAPTURE(size);
      CAPTURE(spread);
      std::vector<Pair> items(size);
      for (std::size_t i = 0; i < size; ++i) {
        items[i] = {static_cast<std::uint32_t>(i) * spread + spread / 2,
                    static_cast<std::uint32_t>(i)}; // distinct keys, one per payload
      }
      const std::vector<Pair> sorted = items;
      std::shuffle(items.begin(), items.end(), rng);
      std::vector<Pair> expected = items;
      std::sort(expected.begin(), expected.end());
      REQUIRE(expected == sorted);
      passes::detail::sort_by_distinct_key(items, by_key, buffer, counts);
      CHECK(items == expected);
      passes::detail::sort_by_distinct_key(items, by_key, buffer, counts); // already sorted
      CHECK(items == expected);
      // the same order for the vertices alone, their ranks in a table
      std::vector<std::uint32_t> rank(size), vertices(size), expected_vertices(size);
      for (std::size_t i = 0; i < size; ++i) {
        vertices[i] = items[i].second; // a vertex's rank: its pair's key
        rank[items[i].second] = items[i].first;
      }
      std::shuffle(vertices.begin(), vertices.end(), rng);
      for (std::size_t i = 0; i < size; ++i) expected_vertices[i] = expected[i].second;
      passes::detail::sort_by_distinct_key(
          vertices, [&](std::uint32_t v) { return rank[v]; }, vertex_buffer, counts);
      CHECK(vertices == expected_vertices);
    }
  }
}

TEST_CASE("a class key's hash, summed as its words are written, is the words' WordHash") {
  // write_class_key hashes its words as it writes them, and the key table is
  // looked up with that hash (SequenceIds::id(items, key), whose contract is
  // key == Hash{}(items): a look-up by the items alone must find the same id).
  // Every kind of key: sources, a buffer, ops with and without parameters, with
  // one parent, none, parents of one shape and of two (sorted by argument
  // position), in modules.
  GraphBuilder b;
  const Vertex x = b.input({2, 3});
  const Vertex y = b.input({3, 3});
  const Vertex buf = b.buffer("bn.running_mean");
  const Vertex lin = b.op(
      "linear", {x}, {.params = {"fc.weight", "fc.bias"}, .modules = {frame("fc", "Linear", 1)}});
  const Vertex z = b.op("zeros", {}, {.observed = false});
  const Vertex same = b.op("add", {lin, lin}, {.scalar_args = {{"alpha", "1"}}});
  const Vertex mixed =
      b.op("matmul", {same, y, buf}, {.modules = {frame("a", "A", 1), frame("a.b", "B", 2)}});
  b.returns(mixed).returns(z);
  ModelGraph g = b.build();
  PassContext ctx;
  passes::AddOutputNodesPass{}.run(g, ctx);
  const auto& adj = ctx.get<AdjacencyAnalysis>(g);
  std::vector<std::uint64_t> words;
  std::vector<std::tuple<int, int, Vertex>> parents;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    CAPTURE(v);
    std::uint64_t hash = 0;
    const auto key = GroupRecurrencesPass::write_class_key(g, v, words, parents, adj, hash);
    CHECK(key.size() >= 3);
    CHECK(hash == passes::detail::WordHash{}(key));
  }
  CHECK(boost::num_vertices(g) == 9); // the seven above and two outputs
}

TEST_CASE("ties are broken by raw labels compared as text (`cat_10_…` before `cat_2_…`)") {
  // A chain of 27 cats in three modules, fed from earlier values: which members
  // pair up depends on the order TorchLens sorts raw labels in, a string order in
  // which type numbers 10..27 fall between 1 and 2. Ranking by number instead
  // gives other layers (cat_3_5 with 6 passes, cat_7_9 with 4, ...). The expected
  // labels are what TorchLens's own grouping code (`loop_grouping_adapter.py`)
  // gives for this graph.
  GraphBuilder b;
  std::vector<Vertex> v;
  v.push_back(b.input({2, 3}));
  v.push_back(b.op("mul", {v[0]}, {.observed = false, .shape = {2, 3}}));
  v.push_back(b.op("relu", {v[1]}, {.observed = false, .shape = {2, 3}}));
  // each cat's two parents; the modules cycle m0, m1, m2
  const std::vector<std::pair<int, int>> cats{
      {1, 2},   {0, 3},   {2, 4},  {5, 5},  {0, 6},   {1, 7},  {5, 8},   {0, 9},   {1, 10},
      {2, 11},  {5, 12},  {0, 13}, {2, 14}, {2, 15},  {0, 16}, {10, 17}, {2, 18},  {14, 19},
      {14, 20}, {14, 21}, {1, 22}, {5, 23}, {23, 24}, {2, 25}, {14, 26}, {26, 27}, {5, 28}};
  for (std::size_t i = 0; i < cats.size(); ++i) {
    const auto [a, c] = cats[i];
    v.push_back(b.op("cat", {v[static_cast<std::size_t>(a)], v[static_cast<std::size_t>(c)]},
                     {.modules = {{"m" + std::to_string(i % 3), "Module", 1}}, .shape = {2, 4}}));
  }
  b.returns(v.back()).returns(v.back());
  CHECK(labels_of(b.build()) ==
        L{"input_1",   "mul_1_1",    "relu_1_2",    "cat_1_3",   "cat_2_4",    "cat_3_5:1",
          "cat_4_6:1", "cat_5_7:1",  "cat_3_5:2",   "cat_4_6:2", "cat_5_7:2",  "cat_6_8",
          "cat_7_9",   "cat_8_10:1", "cat_3_5:3",   "cat_9_11",  "cat_10_12",  "cat_11_13",
          "cat_12_14", "cat_5_7:3",  "cat_13_15:1", "cat_4_6:3", "cat_8_10:2", "cat_3_5:4",
          "cat_4_6:4", "cat_8_10:3", "cat_3_5:5",   "cat_4_6:5", "cat_8_10:4", "cat_13_15:2",
          "output_1",  "output_2"});
}

TEST_CASE(
    "a loop body that reads a value from before the loop is one layer per op, as in "
    "TorchLens") {
  // s1 = sigmoid(x1) in m; mul(s1, x0); c = cat(x1, x1);
  // three times: s = sigmoid(c) in m; mul(s, s1); c = cat(c, c).
  // TorchLens names a layer by the smallest raw label among its passes (compared as
  // text); a pass left out of a later, larger grouping keeps that name, and so stays
  // with the new layer when the name is the same. Here the three muls are one
  // layer (this pass, when it named layers by their first vertex, split them 1 + 2).
  // Expected: what TorchLens's own grouping code gives.
  GraphBuilder b;
  const OpSpec in_m{.modules = {{"m", "Module", 1}}, .shape = {2, 4}};
  const OpSpec wide{.observed = false, .shape = {2, 4}};
  const OpSpec narrow{.observed = false, .shape = {2, 3}};
  Vertex x0 = b.input({2, 3}), x1 = b.input({2, 3});
  Vertex s1 = b.op("sigmoid", {x1}, in_m);
  b.op("mul", {s1, x0}, wide);
  Vertex c = b.op("cat", {x1, x1}, narrow);
  for (int i = 0; i < 3; ++i) {
    Vertex s = b.op("sigmoid", {c}, in_m);
    b.op("mul", {s, s1}, wide);
    c = b.op("cat", {c, c}, narrow);
  }
  b.returns(c);
  CHECK(labels_of(b.build()) == L{"input_1", "input_2", "sigmoid_1_1", "mul_1_2", "cat_1_3:1",
                                  "sigmoid_2_4:1", "mul_2_5:1", "cat_1_3:2", "sigmoid_2_4:2",
                                  "mul_2_5:2", "cat_1_3:3", "sigmoid_2_4:3", "mul_2_5:3",
                                  "cat_1_3:4", "output_1"});
}

TEST_CASE(
    "38 outputs returned from a loop are ordered as TorchLens's labels are "
    "(`output_10_raw` before `output_1_raw`)") {
  // Random loop graph 20040 (tests/support/random_loop_graphs.hpp, up to 200
  // iterations, 379 vertices) returns a value from many iterations. Outputs carry no
  // creation number, so their labels end right after the type number, and TorchLens
  // compares `output_10_raw` with `output_1_raw` at '0' against '_'. Expected: each
  // output's (pass, passes) as TorchLens's own grouping code gives them (this pass, when
  // it compared the bare numbers, gave the first output's layer 9 passes, not 10).
  ModelGraph g = random_loop_graph(20040, 200);
  run_default_pipeline(g);
  std::vector<std::pair<int, int>> got;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == NodeKind::output) got.emplace_back(g[v].pass_num, g[v].num_passes);
  }
  const std::vector<std::pair<int, int>> torchlens{
      {1, 10},  {1, 14},  {2, 10},  {1, 11},  {3, 10},  {2, 11}, {3, 11},  {4, 11},
      {4, 10},  {2, 14},  {5, 11},  {3, 14},  {5, 10},  {4, 14}, {6, 11},  {1, 1},
      {5, 14},  {6, 14},  {6, 10},  {7, 14},  {7, 10},  {8, 14}, {8, 10},  {7, 11},
      {1, 1},   {8, 11},  {9, 14},  {9, 11},  {10, 14}, {9, 10}, {10, 11}, {11, 14},
      {10, 10}, {12, 14}, {13, 14}, {14, 14}, {11, 11}, {1, 1}};
  CHECK(got == torchlens);
}
