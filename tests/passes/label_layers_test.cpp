// Tests of the label-layers pass.
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>
#include <support/pass_laws.hpp>

#include "support/doctest.hpp"

using namespace torchlens;
using namespace torchlens::testing;
using passes::LabelLayersPass;

TEST_CASE("label-layers: long, short and no-pass forms") {
  ModelGraph g = fig4a_graph();
  run_default_pipeline(g);
  const OpNode& l2 = g[6];
  CHECK(l2.label() == "linear_1_2:2");
  CHECK(l2.label_short() == "linear_1:2");
  CHECK(l2.label_no_pass() == "linear_1_2");
  CHECK(l2.label_short_no_pass() == "linear_1");
  CHECK(l2.type_num == 1);
  CHECK(l2.total_num == 2);
  CHECK(g[4].label_short() == "sin_1");
  CHECK(g[0].total_num == 0);
  CHECK(g[8].label() == "output_1");
  CHECK(g[8].total_num == 5); // outputs consume a total number after every op
  CHECK_FALSE(g[boost::graph_bundle].is_branching);
}

TEST_CASE("label-layers: inputs, buffers, outputs and branching") {
  GraphBuilder b;
  auto x = b.input();
  auto y = b.input();
  auto m = b.buffer("bn.running_mean");
  auto a = b.op("add", {x, y});
  auto c = b.op("conv2d", {a}, {.params = {"c1.weight"}});
  auto d = b.op("conv2d", {a}, {.params = {"c2.weight"}});
  auto s = b.op("sub", {c, m});
  b.returns(s).returns(d);
  ModelGraph g = b.build();
  run_default_pipeline(g);
  CHECK(g[x].label() == "input_1");
  CHECK(g[y].label() == "input_2");
  CHECK(g[m].label() == "buffer_1");
  CHECK(g[a].label() == "add_1_1");
  CHECK(g[c].label() == "conv2d_1_2");
  CHECK(g[d].label() == "conv2d_2_3");
  CHECK(g[s].label() == "sub_1_4");
  CHECK(g[7].label() == "output_1");
  CHECK(g[8].label() == "output_2");
  CHECK(g[8].total_num == 6);
  CHECK(g[boost::graph_bundle].is_branching); // add feeds two convs
  // the derived labels: an op drops its total number, sources and outputs have none
  CHECK(g[d].label_short() == "conv2d_2");
  CHECK(g[d].label_no_pass() == "conv2d_2_3");
  CHECK(g[d].label_short_no_pass() == "conv2d_2");
  for (Vertex v : {x, m, Vertex{7}}) {
    CHECK(g[v].label_short() == g[v].label());
    CHECK(g[v].label_no_pass() == g[v].label());
    CHECK(g[v].label_short_no_pass() == g[v].label());
  }
}

TEST_CASE("label-layers: derived labels of multi-pass layers and of an unlabelled node") {
  ModelGraph g = fig4a_graph();
  run_default_pipeline(g);
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    if (n.num_passes < 2) continue;
    const std::string pass = ":" + std::to_string(n.pass_num);
    CHECK(n.label() == std::string(n.label_no_pass()) + pass);
    CHECK(n.label_short() == std::string(n.label_short_no_pass()) + pass);
    CHECK(n.label_short_no_pass() == n.layer_type.str() + "_" + std::to_string(n.type_num));
  }
  const OpNode fresh; // before label-layers: every label empty
  CHECK(fresh.label_short().empty());
  CHECK(fresh.label_no_pass().empty());
  CHECK(fresh.label_short_no_pass().empty());
}

TEST_CASE("label-layers obeys the pass laws") {
  check_pass_laws_on_samples<LabelLayersPass>();
}
