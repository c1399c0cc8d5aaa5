// Tests of the group-recurrences pass: the paper's rules 1-3 and Fig. 4.
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace torchlens;
using namespace torchlens::testing;
using passes::GroupRecurrencesPass;

namespace {
/// Runs the default pipeline and returns the labels in vertex order.
std::vector<std::string> labels_of(ModelGraph g) {
  run_default_pipeline(g);
  std::vector<std::string> out;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) out.push_back(g[v].label);
  return out;
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
  CHECK(g[2].equivalence_type == "linear_params_fc.bias_fc.weight");
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
    CHECK(g[v].label == "linear_1_1:" + std::to_string(v));
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
  CHECK(g[m1].equivalence_type == "mul_other=2;_(1,4)_out0_mod");
  CHECK(g[m3].equivalence_type == "mul_other=3;_(1,4)_out0_modblk");
  CHECK(g[m1].num_passes == 1);
  CHECK(g[m2].num_passes == 1);
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
