// log_forward_pass's driver: one capture session (session.hpp) captures once,
// or twice when a key list selects the layers to save; the default pass
// pipeline runs in between and the log is built.

#include "postprocess.hpp"
#include "recorder.hpp"
#include "session.hpp"

#include "../grad/gradient_store.hpp"

#include <torchlens/capture/log_forward_pass.hpp>

#include <chrono>
#include <optional>

namespace torchlens {
namespace detail {

ModelLog run_logged(const ModelDescription& model,
                    const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                    const ForwardFn& forward, const LogOptions& options) {
  check_gradients_possible(options);
  TORCHLENS_CHECK(options.min_param_free_loop_body() >= 1,
                  "LogOptions::min_param_free_loop_body must be at least 1 (1: every "
                  "back-to-back repeat is a loop, as in TorchLens 1.0), not ",
                  options.min_param_free_loop_body());
  const auto t0 = std::chrono::steady_clock::now();
  const CaptureSession session(model, inputs, forward, options, session_seed(options));
  const bool by_keys = options.save().kind() == SaveSpec::Kind::keys;
  // a two-pass save must not let the first pass change what the second sees
  std::optional<StateSnapshot> state;
  if (by_keys) state.emplace(model, inputs);
  SavePolicy first;
  first.mode =
      options.save().kind() == SaveSpec::Kind::all ? SavePolicy::Mode::all : SavePolicy::Mode::none;
  c10::IValue output; // what forward returned (kept with save_gradients)
  auto rec = session.capture(first, /*finish=*/true, &output);
  std::vector<torch::autograd::Edge> grad_edges = std::move(rec->grad_edges);
  const std::size_t raw_count = boost::num_vertices(rec->graph);
  ModelGraph graph = std::move(rec->graph);
  std::vector<at::Tensor> activations = std::move(rec->activations);
  std::shared_ptr<const ReplayRecords> replay;
  if (options.keep_replay()) {
    replay = std::make_shared<const ReplayRecords>(ReplayRecords{std::move(rec->records)});
  }
  rec.reset();
  if (options.postprocess()) {
    postprocess(graph, model.root,
                passes::GroupRecurrencesOptions()
                    .detect_loops(options.detect_loops())
                    .min_param_free_loop_body(options.min_param_free_loop_body()),
                options.reuse_postprocess());
  }
  auto& info = graph[boost::graph_bundle];
  const double post_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() -
      info.forward_time_ms;
  info.logging_time_ms += std::max(0.0, post_ms);
  ModelLog log(std::move(graph), std::move(activations), options);
  log.set_replay(std::move(replay));
  if (by_keys) {
    // Resolve the keys on the labelled graph, then capture again saving exactly
    // those tensors (TorchLens's two-pass strategy, without copying the rest).
    Selection selection = select_ids(log, options.save().keys());
    // a backward needs the whole forward: gradients turn stopping early off
    if (options.stop_early() && options.save_gradients().kind() == SaveSpec::Kind::none) {
      selection.policy.halt_after = last_saved_id(selection);
    }
    state->restore();
    const ModelGraph& g = log.graph();
    log.set_activations(session.capture_selection(selection, signature_of(g, raw_count),
                                                  g[boost::graph_bundle].next_id, &grad_edges,
                                                  &output));
  }
  attach_gradients(log, model, grad_edges, output);
  return log;
}

} // namespace detail

std::size_t postprocess_reuses() {
  return detail::postprocess_reuses_on_this_thread();
}

} // namespace torchlens
