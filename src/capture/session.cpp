// The capture session (session.hpp): one place that captures, resolves keys to
// ids, compares captures and restores model state, for log, extract and
// validation.

#include "session.hpp"

#include "libtorch_compat.hpp"
#include "memory_pool.hpp"
#include "tensor_bytes.hpp"

#include <torchlens/detail/text.hpp>

#include <boost/range/iterator_range.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <random>
#include <sstream>

#include <pthread.h>

namespace torchlens::detail {

namespace {

/// The profiling executor would rewrite TorchScript graphs between runs (from
/// the second run on, a differentiable graph detaches its inputs first); every
/// run of a session sees the plain graph: of a TorchScript model, and of the
/// TorchScript submodules (opaque modules) of an eager Python one.
std::optional<compat::PlainExecutorGuard> plain_executor(const ModelDescription& model) {
  std::optional<compat::PlainExecutorGuard> guard;
  if (model.script != nullptr ||
      std::any_of(model.modules.begin(), model.modules.end(),
                  [](const ModelDescription::NamedModule& m) { return m.opaque; })) {
    guard.emplace(false);
  }
  return guard;
}

} // namespace

// ---- StateSnapshot ----------------------------------------------------------

StateSnapshot::StateSnapshot(const ModelDescription& model,
                             const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                             std::function<void()> also)
    : also_(std::move(also)) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.params) add(p.tensor, false);
  for (const auto& b : model.buffers) add(b.tensor, true);
  for (const auto& in : inputs) add(in.second, false);
}

void StateSnapshot::add(const at::Tensor& t, bool always) {
  if (t.defined()) saved_.push_back({t, t.detach(), t.clone(), t._version(), always});
}

namespace {
/// `a` and `b` are the same elements of the same storage (a sparse tensor has
/// none: its data cannot be swapped through `.data`).
bool same_data(const at::Tensor& a, const at::Tensor& b) {
  if (!a.has_storage() || !b.has_storage()) return true;
  return a.is_alias_of(b) && a.sizes() == b.sizes() && a.strides() == b.strides() &&
         a.storage_offset() == b.storage_offset();
}
} // namespace

void StateSnapshot::restore() {
  {
    at::NoGradGuard no_grad;
    for (auto& e : saved_) {
      // `p.data = ...` (a momentum encoder's update) gave the tensor new data
      if (!same_data(e.live, e.data)) e.live.set_data(e.data);
      // Writes through `p.data` bump a version counter of their own, so an
      // unchanged version proves nothing: compare the bytes (a memcmp, stopping
      // at the first difference; at::equal off the CPU), cheaper than copying back.
      const bool unchanged =
          !e.always && e.live._version() == e.version &&
          (bitwise_equal(e.live, e.copy) ||
           (!e.live.device().is_cpu() && e.live.layout() == at::kStrided && e.live.equal(e.copy)));
      if (unchanged) continue;
      e.live.copy_(e.copy);
      e.version = e.live._version();
    }
  }
  if (also_) also_();
}

// ---- keys and signatures ----------------------------------------------------

Selection select_ids(const ModelLog& log, const std::vector<std::string>& keys) {
  Selection s;
  s.policy.mode = SavePolicy::Mode::ids;
  const ModelGraph& g = log.graph();
  for (const auto& key : keys) {
    for (Vertex v : log.select(key)) {
      if (g[v].kind != NodeKind::output) {
        s.policy.ids.insert(g[v].id);
        continue;
      }
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        const std::size_t producer = g[boost::source(e, g)].id;
        s.policy.ids.insert(producer);
        s.aliases.emplace_back(g[v].id, producer);
      }
    }
  }
  return s;
}

std::size_t last_saved_id(const Selection& selection) {
  std::size_t last = 0;
  for (std::size_t id : selection.policy.ids) last = std::max(last, id);
  return selection.policy.ids.empty() ? SIZE_MAX : last;
}

GraphSignature signature_of(const ModelGraph& labelled, std::size_t raw_count) {
  GraphSignature sig;
  sig.raw_count = raw_count;
  for (Vertex v : boost::make_iterator_range(boost::vertices(labelled))) {
    const OpNode& n = labelled[v];
    if (n.kind == NodeKind::output) continue; // added by a pass: no raw counterpart
    sig.ops.push_back({n.id, n.op_name, n.label(), n.shape});
  }
  std::sort(sig.ops.begin(), sig.ops.end(),
            [](const GraphSignature::Op& a, const GraphSignature::Op& b) { return a.id < b.id; });
  return sig;
}

std::string first_difference(const GraphSignature& reference, const ModelGraph& raw,
                             std::size_t halted_after) {
  const std::size_t have = boost::num_vertices(raw);
  const std::string why = "; a data-dependent branch, or randomness the seed does not fix?)";
  for (const auto& op : reference.ops) {
    if (op.id > halted_after) break; // sorted by id: the capture stopped before the rest
    if (op.id >= have) {
      return "the computational graph changed: first difference at " + op.label + " (" +
             op.op_name + "), which this capture never ran (" + std::to_string(have) +
             " ops instead of " + std::to_string(reference.raw_count) + why;
    }
    const OpNode& n = raw[op.id];
    if (n.op_name != op.op_name || n.shape != op.shape) {
      return "the computational graph changed: first difference at " + op.label + " (" +
             op.op_name + " " + shape_as_list(op.shape) + " in the first capture, " + n.op_name +
             " " + shape_as_list(n.shape) + " in this one" + why;
    }
  }
  if (halted_after == SIZE_MAX && have != reference.raw_count) {
    return "the computational graph changed: this capture ran " + std::to_string(have) +
           " ops instead of " + std::to_string(reference.raw_count) + "; first extra op " +
           raw[std::min(have, reference.raw_count)].op_name + why;
  }
  return {};
}

// ---- CaptureSession ---------------------------------------------------------

namespace {

/// A fresh seed for a capture without LogOptions::seed. std::random_device
/// costs ~20 µs a call (system calls), as much as a small model's forward, so a
/// per-thread engine seeded from it once draws the seeds; a forked child
/// seeds its engines anew (it would otherwise draw what its parent draws).
std::uint64_t fresh_seed() {
  static std::atomic<std::uint64_t> forks{0};
  static const bool registered = [] {
    return pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1); }) == 0;
  }();
  (void)registered;
  thread_local std::uint64_t seeded_at = UINT64_MAX;
  thread_local std::mt19937_64 engine;
  const std::uint64_t now = forks.load();
  if (seeded_at != now) {
    std::random_device device;
    std::seed_seq seq{device(), device(), device(), device()};
    engine.seed(seq);
    seeded_at = now;
  }
  return engine() >> 32; // the range std::random_device gave (32 bits)
}

} // namespace

std::uint64_t session_seed(const LogOptions& options) {
  return options.seed() ? *options.seed() : fresh_seed();
}

CaptureSession::CaptureSession(const ModelDescription& model,
                               std::vector<std::pair<std::string, at::Tensor>> inputs,
                               ForwardFn forward, LogOptions options, std::uint64_t seed)
    : model_(model),
      inputs_(std::move(inputs)),
      forward_(std::move(forward)),
      options_(std::move(options)),
      seed_(seed) {}

std::unique_ptr<Recorder> CaptureSession::capture(SavePolicy policy, bool finish,
                                                  c10::IValue* output) const {
  // the forward's tensors from the capture pool: saved ones, temporaries, the
  // protective copies finish() makes
  const CaptureMemoryScope memory(options_.reuse_memory());
  // the next capture of this model finds what this one interns (interned.hpp)
  const RetainNewEntries retain;
  auto rec = std::make_unique<Recorder>(model_, options_, std::move(policy));
  for (const auto& [address, t] : inputs_) rec->add_input(address, t);
  compat::manual_seed(seed_);
  const auto plain = plain_executor(model_);
  const auto t0 = std::chrono::steady_clock::now();
  c10::IValue out;
  try {
    out = rec->run(forward_);
  } catch (...) {
    // a halt comes back however the interpreter wrapped it: the recorder knows
    if (!rec->halted()) throw;
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (!rec->halted()) rec->set_returned(out);
  if (output != nullptr) *output = std::move(out);
  if (finish) {
    rec->finish(std::chrono::duration<double, std::milli>(t1 - t0).count());
    rec->graph[boost::graph_bundle].random_seed = seed_;
  }
  return rec;
}

std::vector<at::Tensor> CaptureSession::run_plain() const {
  std::vector<at::Tensor> truth;
  compat::manual_seed(seed_);
  const auto plain = plain_executor(model_);
  flatten_outputs(forward_(nullptr), truth);
  for (auto& t : truth) t = t.detach().clone();
  return truth;
}

std::vector<at::Tensor> CaptureSession::capture_selection(
    const Selection& selection, const GraphSignature& reference, std::size_t next_id,
    std::vector<torch::autograd::Edge>* grad_edges, c10::IValue* output) const {
  auto rec = capture(selection.policy, /*finish=*/false, output);
  const std::string difference = first_difference(
      reference, rec->graph, rec->halted() ? selection.policy.halt_after : SIZE_MAX);
  if (!difference.empty()) throw GraphChanged(TORCHLENS_HERE, difference);
  std::vector<at::Tensor> by_id = std::move(rec->activations);
  by_id.resize(std::max(by_id.size(), next_id));
  for (const auto& [alias, producer] : selection.aliases) by_id[alias] = by_id[producer];
  if (grad_edges != nullptr) *grad_edges = std::move(rec->grad_edges);
  return by_id;
}

} // namespace torchlens::detail
