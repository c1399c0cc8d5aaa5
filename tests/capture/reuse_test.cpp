// Post-processing reused (LogOptions::reuse_postprocess): a capture whose raw
// graph equals the last two captures' of the same model takes the pipeline's
// labelled graph instead of running it. Each reused log must be the log the
// pipeline gives (compared field by field with one logged with reuse off), with
// its own measurements; a graph that differs anywhere, or other options, must
// run the pipeline.

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"
#include "support/toy_models.hpp"

namespace tl = torchlens;

namespace {

/// Every vertex, edge and the graph bundle equal, the op times aside.
void require_same_graph(const tl::ModelGraph& a, const tl::ModelGraph& b) {
  REQUIRE(boost::num_vertices(a) == boost::num_vertices(b));
  REQUIRE(boost::num_edges(a) == boost::num_edges(b));
  for (tl::Vertex v = 0; v < boost::num_vertices(a); ++v) {
    tl::OpNode x = a[v], y = b[v];
    CAPTURE(x.label());
    CHECK(x.label() == y.label());
    x.time_us = y.time_us = 0;
    CHECK(x == y);
  }
  auto e = boost::edges(b).first;
  for (auto d : boost::make_iterator_range(boost::edges(a))) {
    CHECK(boost::source(d, a) == boost::source(*e, b));
    CHECK(boost::target(d, a) == boost::target(*e, b));
    CHECK(a[d] == b[*e]);
    ++e;
  }
  tl::GraphInfo i = a[boost::graph_bundle], j = b[boost::graph_bundle];
  i.forward_time_ms = j.forward_time_ms = 0;
  i.logging_time_ms = j.logging_time_ms = 0;
  CHECK(i == j);
}

/// How many vertices have layer type `type`.
std::size_t count_type(const tl::ModelLog& log, std::string_view type) {
  std::size_t k = 0;
  for (tl::Vertex v = 0; v < log.size(); ++v) k += log.graph()[v].layer_type == type;
  return k;
}

tl::LogOptions metadata(bool reuse) {
  return tl::LogOptions().seed(3).save(tl::SaveSpec::none()).reuse_postprocess(reuse);
}

/// Makes this thread's kept graph another model's (an earlier test may have
/// left one equal to the graph a test starts from).
void forget_kept_graph() {
  toy::ConditionalBool other;
  (void)tl::log_forward_pass(other, torch::ones({2, 3}), metadata(true));
}

} // namespace

TEST_CASE("a capture repeated a third time reuses the labelled graph, which is the pipeline's") {
  torch::NoGradGuard no_grad;
  toy::LinearLoop model;
  const auto x = toy::input_for<toy::LinearLoopImpl>();
  forget_kept_graph();
  const std::size_t before = tl::postprocess_reuses();
  // the first capture notes the graph, the second keeps it, later ones reuse it
  auto first = tl::log_forward_pass(model, x, metadata(true));
  auto second = tl::log_forward_pass(model, x, metadata(true));
  CHECK(tl::postprocess_reuses() == before);
  auto third = tl::log_forward_pass(model, x, metadata(true));
  auto fourth = tl::log_forward_pass(model, x, metadata(true));
  CHECK(tl::postprocess_reuses() == before + 2);
  const auto plain = tl::log_forward_pass(model, x, metadata(false));
  CHECK(tl::postprocess_reuses() == before + 2);
  require_same_graph(third.graph(), plain.graph());
  require_same_graph(fourth.graph(), plain.graph());
  // the kept graph is the second capture's; each reused log has its own op times
  bool own_times = false;
  for (tl::Vertex v = 0; v < third.size(); ++v) {
    own_times = own_times || third.graph()[v].time_us != second.graph()[v].time_us;
  }
  CHECK(own_times);
  // TorchLens's labels, from the reused graph: one Linear (`t`, `addmm`), five passes
  CHECK(fourth.size() == 13);
  CHECK(fourth["addmm_1_3:5"]->num_passes == 5);
  CHECK(fourth["fc:5"].label() == "addmm_1_3:5");

  SUBCASE("a reused graph carries this capture's saved flags and activations") {
    auto saved = tl::log_forward_pass(model, x, tl::LogOptions().seed(3).save(tl::SaveSpec::all()));
    CHECK(tl::postprocess_reuses() == before + 3);
    const auto saved_plain = tl::log_forward_pass(
        model, x, tl::LogOptions().seed(3).save(tl::SaveSpec::all()).reuse_postprocess(false));
    require_same_graph(saved.graph(), saved_plain.graph());
    CHECK(saved["addmm_1_3:5"]->has_saved_activation);
    CHECK(torch::allclose(saved["addmm_1_3:5"].activation(), model->forward(x)));
  }
}

TEST_CASE("a graph that differs from the kept one runs the pipeline") {
  torch::NoGradGuard no_grad;
  SUBCASE("another input shape") {
    toy::LinearLoop model;
    const auto x = toy::input_for<toy::LinearLoopImpl>();
    for (int i = 0; i < 3; ++i) (void)tl::log_forward_pass(model, x, metadata(true));
    const std::size_t before = tl::postprocess_reuses();
    const auto wide = torch::randn({5, 4});
    const auto log = tl::log_forward_pass(model, wide, metadata(true));
    CHECK(tl::postprocess_reuses() == before);
    require_same_graph(log.graph(), tl::log_forward_pass(model, wide, metadata(false)).graph());
    CHECK(log["output_1"]->shape == std::vector<std::int64_t>{5, 4});
  }
  SUBCASE("another dtype: the same ops and shapes, so the same fingerprint") {
    toy::SimpleLoopNoParam model;
    const auto x = toy::input_for<toy::SimpleLoopNoParamImpl>();
    for (int i = 0; i < 3; ++i) (void)tl::log_forward_pass(model, x, metadata(true));
    const std::size_t before = tl::postprocess_reuses();
    const auto log = tl::log_forward_pass(model, x.to(torch::kDouble), metadata(true));
    CHECK(tl::postprocess_reuses() == before);
    CHECK(log["sin_1_1:1"]->dtype == "float64");
    require_same_graph(log.graph(),
                       tl::log_forward_pass(model, x.to(torch::kDouble), metadata(false)).graph());
  }
  SUBCASE("a data-dependent branch taking the other way") {
    toy::ConditionalBranching model;
    const auto up = torch::ones({2, 3});
    for (int i = 0; i < 3; ++i) (void)tl::log_forward_pass(model, up, metadata(true));
    const std::size_t before = tl::postprocess_reuses();
    const auto log = tl::log_forward_pass(model, -up, metadata(true));
    CHECK(tl::postprocess_reuses() == before);
    CHECK(count_type(log, "tanh") == 1);
    CHECK(count_type(log, "relu") == 0);
    require_same_graph(log.graph(), tl::log_forward_pass(model, -up, metadata(false)).graph());
  }
  SUBCASE("other loop options") {
    toy::LinearLoop model;
    const auto x = toy::input_for<toy::LinearLoopImpl>();
    for (int i = 0; i < 3; ++i) (void)tl::log_forward_pass(model, x, metadata(true));
    const std::size_t before = tl::postprocess_reuses();
    const auto log = tl::log_forward_pass(model, x, metadata(true).detect_loops(false));
    CHECK(tl::postprocess_reuses() == before);
    require_same_graph(log.graph(),
                       tl::log_forward_pass(model, x, metadata(false).detect_loops(false)).graph());
  }
}

TEST_CASE("a TorchScript model's repeated capture reuses the labelled graph") {
  torch::NoGradGuard no_grad;
  auto model = toy::ts::linear_loop();
  model.eval();
  const std::vector<c10::IValue> in{toy::ts::input()};
  for (int i = 0; i < 2; ++i) (void)tl::log_forward_pass(model, in, metadata(true));
  const std::size_t before = tl::postprocess_reuses();
  const auto log = tl::log_forward_pass(model, in, metadata(true));
  CHECK(tl::postprocess_reuses() == before + 1);
  require_same_graph(log.graph(), tl::log_forward_pass(model, in, metadata(false)).graph());
  CHECK(log.info().max_recurrent_loops > 1);
}
