#pragma once
// Private to src/: every LibTorch API torchlens relies on that is internal, not
// a public contract, or could differ between LibTorch versions — in this one
// file. Checked against Debian's LibTorch 1.13.1; the notes say what the 2.x
// headers have (docs/capture.md, "LibTorch versions: one file"). To port torchlens
// to another LibTorch, this file is the place to change.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <c10/core/Allocator.h>
#include <c10/core/DispatchKey.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/edge.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/version.h>

#include <cctype>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace torchlens::detail::compat {

/// The mode dispatch key capture's boxed fallback is registered on. A testing
/// key, but the only mode key C++ can register a fallback on in 1.13 (Python,
/// PythonTLSSnapshot and Tracer are taken); present in 2.x's key list too. The
/// registration (TORCH_LIBRARY_IMPL) needs the same name as a token: see
/// TORCHLENS_CAPTURE_KEY_TOKEN.
inline constexpr c10::DispatchKey kCaptureKey = c10::DispatchKey::TESTING_ONLY_GenericMode;
#define TORCHLENS_CAPTURE_KEY_TOKEN TESTING_ONLY_GenericMode

/// The thread-local debug-info slot that marks a capture's state for the tasks
/// LibTorch runs on other threads for it (at::launch, TorchScript fork copy
/// ThreadLocalState, debug info included). 1.13 and 2.x both have TEST_INFO_2.
inline constexpr c10::DebugInfoKind kMarkerKind = c10::DebugInfoKind::TEST_INFO_2;

/// Keeps TorchScript's graph executor from optimising (inlining calls,
/// specialising) while capture runs: capture sees the plain graph and one
/// interpreter frame per call. `torch::jit::GraphOptimizerEnabledGuard` in 1.13
/// and 2.x (TorchScript is deprecated in 2.x, still present).
using PlainExecutorGuard = torch::jit::GraphOptimizerEnabledGuard;

/// Registers thread-local callbacks for TorchScript interpreter frames only
/// (scope TORCHSCRIPT_FUNCTION), with the frame's arguments. `at::RecordFunction`
/// callbacks: 1.13 and 2.x alike (start returns an ObserverContext; the
/// arguments, fn.inputs(), are valid in the start callback).
inline at::CallbackHandle add_frame_callbacks(at::RecordFunctionCallback::StartCallback start,
                                              at::RecordFunctionCallback::EndCallback end) {
  return at::addThreadLocalCallback(at::RecordFunctionCallback(start, end)
                                        .needsInputs(true)
                                        .scopes({at::RecordScope::TORCHSCRIPT_FUNCTION}));
}
inline void remove_frame_callbacks(at::CallbackHandle h) {
  at::removeCallback(h);
}

/// The interpreter's call stack: one entry per frame (plus inlined calls),
/// innermost first, each with the source range of the node it is running.
inline std::vector<torch::jit::StackEntry> interpreter_callstack() {
  return torch::jit::currentCallstack();
}

/// The first word of the source statement or expression a TorchScript node
/// was compiled from (`if`, `assert`, `while`), or "" when the graph keeps no
/// source. A module loaded from a file runs the code it was saved as (where
/// `a and b` is printed as an `if`); its debug info maps each node back to the
/// original source (`findSourceRangeThatGenerated`), and without that map the
/// printed code (`code/...`) says nothing. `Node::sourceRange()`,
/// `SourceRange::source()`, `start()`/`end()`, `findSourceRangeThatGenerated()`,
/// `Source::filename()` and `text_str().at(i)`: 1.13 and 2.x.
inline std::string source_keyword(const torch::jit::Node* n) {
  torch::jit::SourceRange range = n->sourceRange();
  if (auto original = range.findSourceRangeThatGenerated()) {
    range = *original;
  } else if (range.source()) {
    const auto& file = range.source()->filename();
    if (file && file->rfind("code/", 0) == 0) return {};
  }
  const auto& source = range.source();
  if (!source) return {};
  const auto& text = source->text_str();
  std::string word;
  for (std::size_t i = range.start(); i < range.end() && i < text.size(); ++i) {
    const char c = text.at(i);
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') break;
    word += c;
  }
  return word;
}

// ---- C++-frontend modules (capture/describe.cpp) --------------------------------

/// A C++ module's own registered parameters, in registration order, read in
/// place: `named_parameters(false)` copies them into a new OrderedDict (each key
/// and a hash index), ~30 % of describing a small TransformerEncoder.
/// `Module::parameters_` is protected (for ParameterDict and ParameterList) in
/// 1.13 and 2.x; a pointer to it is formed through a derived class, as the
/// language allows. Entries may hold undefined tensors (named_parameters skips
/// them). A template so that this header needs no <torch/nn/module.h>.
template <typename Module>
const auto& own_parameters(const Module& m) {
  struct Access : Module {
    static auto member() { return &Access::parameters_; }
  };
  return m.*(Access::member());
}

// ---- generators (capture records their states, replays restore them) ----------

/// The default generator of the current CUDA device, when this LibTorch has
/// CUDA and sees a device (a random op on a CUDA tensor draws from it), else
/// none. `at::Context::defaultGenerator(Device)` in 1.13 and 2.x; a device
/// without an index is the current one. Whether CUDA is there is asked once.
inline std::optional<at::Generator> cuda_generator() {
  static const bool has_cuda = at::hasCUDA();
  if (!has_cuda) return std::nullopt;
  return at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CUDA));
}

/// `at::manual_seed(seed)`, cheaper when the seed repeats (a model logged again
/// and again with one seed, validation's three runs). Seeding the CPU generator
/// initialises a Mersenne Twister (624 words, ~0.8 us here); this keeps the last
/// engine a thread seeded and copies it in, with the cached normal samples
/// cleared, which is what `CPUGeneratorImpl::set_current_seed` leaves (1.13:
/// both samples reset, `engine_ = mt19937(seed)`). Only where CPU is the one
/// backend 1.13's `manual_seed` seeds (no CUDA); 2.x also seeds MPS, XPU and
/// private backends, so there it is `at::manual_seed` as it is.
inline void manual_seed(std::uint64_t seed) {
#if TORCH_VERSION_MAJOR < 2
  static const bool cpu_only = !at::hasCUDA();
  if (cpu_only) {
    thread_local std::optional<at::mt19937> seeded; // at::mt19937(seed), the last seed
    if (!seeded || seeded->seed() != seed) seeded.emplace(seed);
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
    cpu->set_engine(*seeded);
    cpu->set_next_float_normal_sample(c10::nullopt);
    cpu->set_next_double_normal_sample(c10::nullopt);
    return;
  }
#endif
  at::manual_seed(seed);
}

/// A copy of an explicit generator with its current state, under the
/// generator's lock (as LibTorch reads states): 1.13 and 2.x. A CPU generator
/// is copied through its state, not `Generator::clone`: 1.13's
/// `GeneratorImpl::clone` reclaims the copy without setting its weak count, so
/// the copy is never freed (LeakSanitizer).
inline at::Generator copy_generator(at::Generator gen) { // a handle: copies share the state
  std::lock_guard<std::mutex> lock(gen.mutex());
  if (gen.device().is_cpu()) {
    at::Generator copy = at::detail::createCPUGenerator();
    copy.set_state(gen.get_state());
    return copy;
  }
  return gen.clone();
}

// ---- autocast (capture records it, replays restore it) -----------------------

/// The thread's autocast state. 1.13 (up to 2.3): `is_cpu_enabled`,
/// `get_autocast_cpu_dtype`, `is_enabled` / `get_autocast_gpu_dtype` for CUDA;
/// 2.4 replaced them with `is_autocast_enabled(DeviceType)` and
/// `get_autocast_dtype(DeviceType)` (the old ones deprecated).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
template <class State>
State autocast_state() {
  State s;
  s.cpu = at::autocast::is_autocast_enabled(at::kCPU);
  s.cuda = at::autocast::is_autocast_enabled(at::kCUDA);
  s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  return s;
}
template <class State>
void set_autocast_state(const State& s) {
  at::autocast::set_autocast_enabled(at::kCPU, s.cpu);
  at::autocast::set_autocast_enabled(at::kCUDA, s.cuda);
  at::autocast::set_autocast_dtype(at::kCPU, s.cpu_dtype);
  at::autocast::set_autocast_dtype(at::kCUDA, s.cuda_dtype);
}
#else
template <class State>
State autocast_state() {
  State s;
  s.cpu = at::autocast::is_cpu_enabled();
  s.cuda = at::autocast::is_enabled();
  s.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
  s.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
  return s;
}
template <class State>
void set_autocast_state(const State& s) {
  at::autocast::set_cpu_enabled(s.cpu);
  at::autocast::set_enabled(s.cuda);
  at::autocast::set_autocast_cpu_dtype(s.cpu_dtype);
  at::autocast::set_autocast_gpu_dtype(s.cuda_dtype);
}
#endif

/// Runs a scope under a recorded autocast state, then puts the thread's back
/// and drops the casts autocast cached meanwhile (as leaving `torch.autocast` does).
template <class State>
class AutocastGuard {
 public:
  explicit AutocastGuard(const State& s) : saved_(autocast_state<State>()) {
    set_autocast_state(s);
  }
  ~AutocastGuard() {
    set_autocast_state(saved_);
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  State saved_;
};

// ---- gradients (src/grad) ----------------------------------------------------

/// Where the gradient of tensor `t` (this version of it) arrives in the autograd
/// graph: its grad_fn and output number, or for a leaf that requires grad its
/// gradient accumulator (input 0); an empty edge when `t` is not in the graph.
/// `torch::autograd::impl::gradient_edge` in 1.13 and 2.x. Each in-place
/// version of a tensor has its own grad_fn, so the edge taken when a version is
/// made is that version's.
inline torch::autograd::Edge gradient_edge(const at::Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  return torch::autograd::impl::gradient_edge(t);
}

/// A leaf's gradient accumulator (created if needed), or null when it does not
/// require grad. 1.13 and 2.x: `torch::autograd::impl::grad_accumulator`.
inline std::shared_ptr<torch::autograd::Node> grad_accumulator(const at::Tensor& t) {
  if (!t.defined() || !t.requires_grad() || !t.is_leaf()) return nullptr;
  return torch::autograd::impl::grad_accumulator(t);
}

/// Hooks on an autograd node: `pre` sees the gradients arriving at the node's
/// outputs (its inputs in the backward, summed over the consumers) before it
/// runs, `post` runs after it. 1.13: `Node::add_pre_hook(unique_ptr<FunctionPreHook>)`
/// and `add_post_hook`, called by the engine for every node it executes,
/// gradient accumulators included; a node `torch::autograd::grad` only captures
/// at (the tensors asked for) does not run. 2.x keeps both (tensor hooks moved
/// to separate lists).
inline void add_node_hooks(torch::autograd::Node& node,
                           std::unique_ptr<torch::autograd::FunctionPreHook> pre,
                           std::unique_ptr<torch::autograd::FunctionPostHook> post) {
  node.add_pre_hook(std::move(pre));
  if (post) node.add_post_hook(std::move(post));
}

// ---- memory (capture/memory_pool.cpp) ------------------------------------------

/// A `c10::Allocator` whose subclasses implement `allocate_block`. 1.13 (up to
/// 2.2): `DataPtr allocate(size_t) const` is the one pure virtual. 2.3 made
/// `allocate` non-const and added the pure virtual `copy_data` (the default
/// memcpy is `default_copy_data`).
class AllocatorBase : public c10::Allocator {
 public:
  virtual c10::DataPtr allocate_block(std::size_t n) = 0;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  c10::DataPtr allocate(std::size_t n) override {
    return allocate_block(n);
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#else
  c10::DataPtr allocate(std::size_t n) const override {
    return const_cast<AllocatorBase*>(this)->allocate_block(n);
  }
#endif
};

} // namespace torchlens::detail::compat
