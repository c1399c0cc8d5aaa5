#pragma once
/// \file
/// The three engines that run an intervention spec (docs/interventions.md).

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/intervene/interventions.hpp>

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <utility>

namespace torchlens {

/// Replay: recomputes the downstream cone of the changed sites from `reference`
/// (captured with `LogOptions().keep_replay(true)` and every activation saved),
/// without running model code. Random ops run with the generator state they
/// originally ran with; in-place ops run on clones, so `reference` is never
/// changed; the result is a fork sharing every unchanged activation.
/// Throws ReplayDivergence at the first vertex whose value was read into a host
/// scalar (`item`, `bool(t)`) or whose shape changed, since the model's control
/// flow could differ from there on: rerun instead.
ModelLog replay(const ModelLog& reference, const Interventions& spec);

struct RerunOptions {
  /// Throw GraphChanged when the rerun's graph differs from the reference's
  /// (otherwise the difference is reported in InterventionRun::note).
  TORCH_ARG(bool, strict) = false;
};

enum class Engine {
  replay,   ///< from the log only
  rerun,    ///< the model again, with the spec live
  automatic ///< replay; rerun when replay diverges
};

/// What an engine produced, and which engine it was.
struct InterventionRun {
  ModelLog log;
  Engine engine = Engine::replay;
  /// Why auto mode reran (the divergence), or how a rerun's graph differs from
  /// the reference; empty when nothing was noteworthy.
  std::string note;
};

namespace detail {
/// The reference's options with the spec (resolved on the reference) live and
/// the reference's seed: what a rerun captures with.
LogOptions rerun_options(const ModelLog& reference, const Interventions& spec);
/// "" when `log` ran the reference's graph (op by op), else the first difference.
std::string graph_difference(const ModelLog& reference, const ModelLog& log);
} // namespace detail

/// Rerun: the model runs again (same seed as the reference) with the spec
/// applied live and everything the reference saved saved again.
template <class Model, class Input>
InterventionRun rerun(Model& model, Input input, const ModelLog& reference,
                      const Interventions& spec, const RerunOptions& options = {}) {
  InterventionRun run{
      log_forward_pass(model, std::move(input), detail::rerun_options(reference, spec)),
      Engine::rerun, ""};
  run.note = detail::graph_difference(reference, run.log);
  if (options.strict() && !run.note.empty()) {
    throw GraphChanged(TORCHLENS_HERE, run.note);
  }
  return run;
}

/// Runs `spec` with the chosen engine.
template <class Model, class Input>
InterventionRun intervene(Engine engine, Model& model, Input input, const ModelLog& reference,
                          const Interventions& spec) {
  if (engine == Engine::rerun) return rerun(model, std::move(input), reference, spec);
  try {
    return InterventionRun{replay(reference, spec), Engine::replay, ""};
  } catch (const ReplayDivergence& e) {
    if (engine == Engine::replay) throw;
    InterventionRun run = rerun(model, std::move(input), reference, spec);
    run.note = "replay diverged (" + e.message() + "); reran the model" +
               (run.note.empty() ? std::string() : "; " + run.note);
    return run;
  }
}

/// How run_with_interventions runs a spec (docs/interventions.md, "Lean live").
enum class LiveMode {
  /// lean when the spec allows it (lean_unavailable(spec) is ""), else full
  automatic,
  /// inside the capture that builds the graph (metadata only, nothing saved)
  full,
  /// only the spec's sites are found, by operator occurrence; no graph is
  /// built. Throws when the spec needs the full engine.
  lean
};

/// "" when run_with_interventions can run `spec` the lean way (every site an
/// op, an input or an edge of the reference the spec was resolved on; no
/// action reads another site of the same run), else why only the full engine
/// can.
std::string lean_unavailable(const Interventions& spec);

namespace detail {
/// How many lean runs this process made (tests: the lean mode really ran).
std::int64_t lean_runs();
c10::IValue run_intervened(const ModelDescription& model,
                           const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                           const ForwardFn& forward, const Interventions& spec, LiveMode mode);
c10::IValue run_intervened(torch::jit::Module& model, const std::vector<c10::IValue>& inputs,
                           const Interventions& spec, LiveMode mode);
} // namespace detail

/// Live, without a log: runs the model with the spec applied and returns what
/// forward returned. Label sites need a spec resolved on a reference log. With
/// such a spec the lean mode finds only the sites and builds no graph; specs
/// with live selectors (`func`, `where`) or actions reading other sites
/// (`take_from`, `add_delta_from`) run inside the full capture (metadata
/// only, nothing saved). Both give the same result, bit for bit.
inline c10::IValue run_with_interventions(torch::jit::Module& model,
                                          const std::vector<c10::IValue>& inputs,
                                          const Interventions& spec,
                                          LiveMode mode = LiveMode::automatic) {
  return detail::run_intervened(model, inputs, spec, mode);
}

template <class Model, class Input>
c10::IValue run_with_interventions(Model& model, Input input, const Interventions& spec,
                                   LiveMode mode = LiveMode::automatic) {
  torch::nn::Module& root = detail::module_of(model);
  const auto args = detail::as_args(std::move(input));
  const detail::KeptDescription described(root);
  return detail::run_intervened(described.get(), detail::input_tensors(args),
                                detail::forward_fn(model, root, args), spec, mode);
}

} // namespace torchlens
