// The replay engine (engines.hpp): recompute the downstream cone of the
// changed sites from a log's records, without running model code; and the
// live engine without a log (run_with_interventions).

#include "../capture/libtorch_compat.hpp"
#include "../capture/reexecute.hpp"
#include "../capture/script_model.hpp"
#include "../capture/session.hpp"
#include "compiled.hpp"
#include "lean.hpp"

#include <torchlens/intervene/engines.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/TensorOperators.h>

#include <ATen/Functions.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/utils.h>

#include <boost/range/iterator_range.hpp>

#include <optional>
#include <unordered_map>

namespace torchlens {

namespace {

bool same_values(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (a.is_same(b) || at::equal(a, b)) return true;
  // NaN against NaN is no change
  if (!a.is_floating_point()) return false;
  return (a.eq(b) | (at::isnan(a) & at::isnan(b))).all().item<bool>();
}

std::string shape_text(c10::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

} // namespace

ModelLog replay(const ModelLog& reference, const Interventions& spec) {
  TORCHLENS_CHECK(reference.replay() != nullptr,
                  "replay needs a reference log captured with LogOptions().keep_replay(true) "
                  "(and every activation saved)");
  const Interventions resolved = spec.resolved() ? spec : spec.resolve(reference);
  const detail::CompiledSpec compiled(resolved);
  const ModelGraph& g = reference.graph();
  const auto& records = reference.replay()->by_id;
  const std::size_t n = boost::num_vertices(g);

  at::NoGradGuard no_grad;
  const detail::GeneratorStateGuard generator;
  std::vector<at::Tensor> changed(n); // by vertex: the new value, where it changed
  std::vector<char> dirty(n, 0);
  std::vector<std::vector<std::string>> applied(n);
  std::unordered_map<std::size_t, Vertex> vertex_of_id;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) vertex_of_id[g[v].id] = v;

  const auto value = [&](Vertex v) -> const at::Tensor& {
    if (dirty[v]) return changed[v];
    const at::Tensor& saved = reference.activation(v);
    TORCHLENS_CHECK(saved.defined(), "replay reads ", g[v].label(),
                    ", whose activation the reference did not save: log it with every "
                    "activation saved (LogOptions().save(SaveSpec::all()))");
    return saved;
  };
  const detail::ValueOf value_of = [&](std::size_t id) -> at::Tensor {
    auto it = vertex_of_id.find(id);
    TORCHLENS_CHECK(it != vertex_of_id.end(), "an intervention reads op ", id,
                    ", which the reference log does not have");
    return value(it->second);
  };
  const auto diverged = [&](Vertex v, const std::string& why) {
    throw ReplayDivergence(TORCHLENS_HERE,
                           "replay stopped at " + g[v].label() + " (" + g[v].op_name + "): " + why +
                               "; the model's control flow may differ from here on, so only a "
                               "rerun is right (Engine::rerun or Engine::automatic)",
                           g[v].label());
  };

  // multi-output ops run once for all their outputs (siblings are consecutive)
  std::size_t last_id = SIZE_MAX;
  int last_index = -1;
  std::vector<at::Tensor> cached_outputs;

  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& node = g[v];
    bool recompute = compiled.edge_into(node.id);
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      recompute = recompute || dirty[boost::source(e, g)];
    }
    if (node.kind == NodeKind::output) {
      if (recompute) {
        for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
          changed[v] = value(boost::source(e, g));
        }
        dirty[v] = 1;
      }
      continue;
    }
    if (recompute) {
      TORCHLENS_CHECK(node.id < records.size() && records[node.id].op, "cannot replay ",
                      node.label(), " (", node.op_name, "): the log has no record of its call");
      std::map<std::pair<int, int>, at::Tensor> inputs;
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        const Vertex p = boost::source(e, g);
        at::Tensor in = value(p);
        if (compiled.edge_into(node.id)) {
          in = compiled.apply_edge(EdgeId{g[p].id, node.id, g[e].arg_pos, g[e].list_index},
                                   node.op_name, node.label(), in, value_of, applied[v]);
        }
        inputs[{g[e].arg_pos, g[e].list_index}] = in;
      }
      const bool sibling = last_id != SIZE_MAX && node.id == last_id + 1 &&
                           node.output_index > last_index && node.output_index > 0;
      if (!sibling) cached_outputs = detail::reexecute(records[node.id], inputs);
      last_id = node.id;
      last_index = node.output_index;
      const auto k = static_cast<std::size_t>(node.output_index);
      TORCHLENS_CHECK(k < cached_outputs.size(), "replaying ", node.label(), " returned ",
                      cached_outputs.size(), " outputs; the log has output ", k);
      at::Tensor out = cached_outputs[k];
      if (out.sizes() != c10::IntArrayRef(node.shape.get())) {
        diverged(v, "its shape changed from " + shape_text(node.shape.get()) + " to " +
                        shape_text(out.sizes()) + " (a data-dependent shape)");
      }
      changed[v] = std::move(out);
      dirty[v] = 1;
    }
    // output sites on this vertex, each seeing the previous result
    const at::Tensor& current = dirty[v] ? changed[v] : reference.activation(v);
    OpView view = detail::view_of(reference, v, current);
    const at::Tensor after = compiled.apply_output(view, node.label(), value_of, applied[v]);
    if (!after.is_same(current)) {
      changed[v] = after;
      dirty[v] = 1;
    }
    if (dirty[v] && node.scalar_use != ScalarUse::none &&
        !same_values(changed[v], reference.activation(v))) {
      diverged(v,
               "the model read its value into a host scalar (item, bool(t)), and that value "
               "changed");
    }
  }

  ModelLog out = reference.fork();
  std::vector<at::Tensor> by_id = reference.activations_by_id();
  by_id.resize(std::max(by_id.size(), g[boost::graph_bundle].next_id));
  ModelGraph& og = out.mutable_graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (dirty[v]) by_id[g[v].id] = changed[v];
    og[v].interventions = std::move(applied[v]);
  }
  out.set_activations(std::move(by_id));
  return out;
}

std::string lean_unavailable(const Interventions& spec) {
  return detail::lean_unavailable(spec);
}

namespace detail {

namespace {

/// The lean live engine (lean.hpp): as the full one below, with the inputs'
/// sites applied before the forward, a fresh global seed and TorchScript's
/// plain executor, but only the sites looked for.
c10::IValue run_lean_intervened(const ModelDescription& model,
                                const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                                const ForwardFn& forward, const Interventions& spec) {
  LeanRun run(spec);
  run.set_inputs(inputs);
  torch::manual_seed(session_seed(LogOptions()));
  std::optional<compat::PlainExecutorGuard> plain;
  if (model.script != nullptr) plain.emplace(false);
  c10::IValue output = run_lean(run, [&forward] { return forward(nullptr); });
  run.finish();
  return output;
}

} // namespace

c10::IValue run_intervened(const ModelDescription& model,
                           const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                           const ForwardFn& forward, const Interventions& spec, LiveMode mode) {
  if (mode != LiveMode::full) {
    const std::string why = detail::lean_unavailable(spec);
    if (why.empty()) return run_lean_intervened(model, inputs, forward, spec);
    TORCHLENS_CHECK(mode == LiveMode::automatic, "LiveMode::lean cannot run this spec: ", why);
  }
  LogOptions options;
  options.save(SaveSpec::none()).postprocess(false).intervene(spec);
  const CaptureSession session(model, inputs, forward, options, session_seed(options));
  c10::IValue output;
  session.capture(SavePolicy{SavePolicy::Mode::none, {}}, /*finish=*/false, &output);
  return output;
}

c10::IValue run_intervened(torch::jit::Module& model, const std::vector<c10::IValue>& inputs,
                           const Interventions& spec, LiveMode mode) {
  ScriptLease run(model); // the capture copy, cached per model
  return run_intervened(
      run.description(), jit_input_tensors(inputs),
      [&run, &inputs](Recorder*) { return run.forward(inputs); }, spec, mode);
}

} // namespace detail

} // namespace torchlens
