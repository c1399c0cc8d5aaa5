// log_forward_pass's driver: describes the model, runs the capture (once, or
// twice when a key list selects the layers to save), applies the default pass
// pipeline and builds the log.

#include "libtorch_compat.hpp"
#include "recorder.hpp"

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/passes/all.hpp>

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <chrono>
#include <optional>
#include <random>
#include <sstream>

namespace torchlens {
namespace detail {

std::unique_ptr<Recorder> capture_once(
    const ModelDescription& model, const std::vector<std::pair<std::string, at::Tensor>>& inputs,
    const ForwardFn& forward, const LogOptions& options, SavePolicy policy, std::uint64_t seed,
    bool finish) {
  auto rec = std::make_unique<Recorder>(model, options, std::move(policy));
  for (const auto& [address, t] : inputs) {
    rec->add_input(address, t);
  }
  torch::manual_seed(seed);
  // The profiling executor would rewrite TorchScript graphs between runs;
  // capture sees the plain graph, every run alike.
  std::optional<compat::PlainExecutorGuard> plain_jit;
  if (model.script != nullptr) {
    plain_jit.emplace(false);
  }
  const auto t0 = std::chrono::steady_clock::now();
  c10::IValue out = rec->run(forward);
  const auto t1 = std::chrono::steady_clock::now();
  rec->set_returned(out);
  if (finish) {
    rec->finish(std::chrono::duration<double, std::milli>(t1 - t0).count());
    rec->graph[boost::graph_bundle].random_seed = seed;
  }
  return rec;
}

StateSnapshot::StateSnapshot(const ModelDescription& model,
                             const std::vector<std::pair<std::string, at::Tensor>>& inputs) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.params) saved_.emplace_back(p.tensor, p.tensor.clone());
  for (const auto& b : model.buffers) saved_.emplace_back(b.tensor, b.tensor.clone());
  for (const auto& in : inputs) saved_.emplace_back(in.second, in.second.clone());
}

void StateSnapshot::restore() {
  at::NoGradGuard no_grad;
  for (auto& [live, copy] : saved_) live.copy_(copy);
}

ModelLog run_logged(const ModelDescription& model,
                    const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                    const ForwardFn& forward, const LogOptions& options) {
  const std::uint64_t seed = options.seed() ? *options.seed() : std::random_device{}();
  const auto t0 = std::chrono::steady_clock::now();
  // a two-pass save must not let the first pass change what the second sees
  std::optional<StateSnapshot> state;
  if (options.save().kind() == SaveSpec::Kind::keys) state.emplace(model, inputs);
  SavePolicy first_policy;
  if (options.save().kind() == SaveSpec::Kind::all) {
    first_policy.mode = SavePolicy::Mode::all;
  } else {
    first_policy.mode = SavePolicy::Mode::none;
  }
  auto rec = capture_once(model, inputs, forward, options, first_policy, seed, /*finish=*/true);
  ModelGraph graph = std::move(rec->graph);
  std::vector<at::Tensor> activations = std::move(rec->activations);
  std::shared_ptr<const ReplayRecords> replay;
  if (options.keep_replay()) {
    replay = std::make_shared<const ReplayRecords>(ReplayRecords{std::move(rec->records)});
  }
  rec.reset();
  if (options.postprocess()) {
    run_default_pipeline(graph);
  }
  auto& info = graph[boost::graph_bundle];
  const double post_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() -
      info.forward_time_ms;
  info.logging_time_ms += std::max(0.0, post_ms);
  ModelLog log(std::move(graph), std::move(activations), options);
  log.set_replay(std::move(replay));

  if (options.save().kind() == SaveSpec::Kind::keys) {
    // Resolve the keys on the labelled graph, then capture again saving exactly
    // those tensors (TorchLens's two-pass strategy, without copying the rest).
    SavePolicy policy;
    policy.mode = SavePolicy::Mode::ids;
    const ModelGraph& g = log.graph();
    std::vector<std::pair<std::size_t, std::size_t>> outputs; // (output id, producer id)
    for (const auto& key : options.save().keys()) {
      for (Vertex v : log.select(key)) {
        if (g[v].kind == NodeKind::output) {
          for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
            policy.ids.insert(g[boost::source(e, g)].id);
            outputs.emplace_back(g[v].id, g[boost::source(e, g)].id);
          }
        } else {
          policy.ids.insert(g[v].id);
        }
      }
    }
    state->restore();
    auto second = capture_once(model, inputs, forward, options, policy, seed, /*finish=*/false);
    ModelGraph raw = std::move(second->graph);
    std::vector<at::Tensor> acts = std::move(second->activations);
    // Ids are creation order, stable across captures of the same graph; check it
    // is the same graph (ids trimmed as orphans in the first are simply unused).
    for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
      const auto& n = g[v];
      if (n.kind == NodeKind::output) continue;
      TORCH_CHECK(n.id < boost::num_vertices(raw) && raw[n.id].op_name == n.op_name &&
                      raw[n.id].shape == n.shape,
                  "torchlens: the computational graph changed between the metadata pass and ",
                  "the saving pass (data-dependent branch, or randomness the seed does not fix): ",
                  "first difference at ", n.label, " (", n.op_name, ")");
    }
    acts.resize(std::max(acts.size(), g[boost::graph_bundle].next_id));
    for (const auto& [out, producer] : outputs) acts[out] = acts[producer]; // shared, no copy
    log.set_activations(std::move(acts));
  }
  return log;
}

} // namespace detail
} // namespace torchlens
