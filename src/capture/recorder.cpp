// The capture engine: a boxed fallback on a mode dispatch key sees exactly the
// ops the model calls (nested decompositions run with the key excluded), and
// feeds them to the thread's Recorder. Module calls come from TorchScript's
// interpreter (RecordFunction, TORCHSCRIPT_FUNCTION scope), from ModuleScope
// and from driven Sequentials. See docs/capture.md.

#include "recorder.hpp"

#include "../intervene/compiled.hpp"
#include "../intervene/lean.hpp"
#include "../io/dtypes.hpp"
#include "live_stack.hpp"
#include "memory_pool.hpp"
#include "reexecute.hpp"
#include "tensor_bytes.hpp"

#include "libtorch_compat.hpp"
#include "torchscript_index.hpp"

#include <torchlens/capture/module_scope.hpp>
#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/clone.h>
#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/library.h>
#include <torch/nn/module.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>

namespace torchlens::detail {

namespace {

using compat::kCaptureKey;
using compat::kMarkerKind;
thread_local Recorder* tls_recorder = nullptr;

/// Travels with LibTorch's thread-local state into tasks other threads run for
/// this thread (at::launch, TorchScript fork): ops there are not this capture's
/// to log in order, and run() reports them.
/// (The lean live engine, src/intervene/lean.hpp, when `lean` is set.)
struct CaptureMarker : c10::DebugInfoBase {
  explicit CaptureMarker(Recorder* r, LeanRun* l = nullptr) : rec(r), lean(l) {}
  Recorder* rec;
  LeanRun* lean;
};
/// The lean live engine's run on this thread (run_lean), instead of a recorder.
thread_local LeanRun* tls_lean = nullptr;

void capture_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_recursion(kCaptureKey);
  Recorder* rec = tls_recorder;
  if (rec == nullptr) {
    if (LeanRun* lean = tls_lean) {
      lean->on_op(op, stack);
      return;
    }
    if (auto* marker = dynamic_cast<CaptureMarker*>(c10::ThreadLocalDebugInfo::get(kMarkerKind))) {
      if (marker->rec != nullptr) {
        marker->rec->note_foreign_op(op);
      } else {
        marker->lean->note_foreign_op(op);
      }
    }
    op.callBoxed(stack);
    return;
  }
  if (rec->paused()) {
    op.callBoxed(stack);
    return;
  }
  rec->record(op, stack);
}

std::unique_ptr<at::ObserverContext> on_script_enter(const at::RecordFunction& fn) {
  if (tls_recorder != nullptr) tls_recorder->script_enter(fn);
  return nullptr;
}

void on_script_exit(const at::RecordFunction& fn, at::ObserverContext*) {
  if (tls_recorder != nullptr) tls_recorder->script_exit(fn);
}

const c10::StorageImpl* storage_of(const at::Tensor& t) {
  if (!t.defined() || !t.unsafeGetTensorImpl()->has_storage()) {
    return nullptr;
  }
  return t.storage().unsafeGetStorageImpl();
}

std::uint32_t version_of(const at::Tensor& t) {
  const auto& vc = t.unsafeGetTensorImpl()->version_counter();
  return vc.enabled() ? vc.current_version() : 0;
}

/// Factories whose values are whatever memory held: something else sets them.
bool is_uninitialized_op(const std::string& name) {
  return name == "aten::empty" || name == "aten::empty_like" || name == "aten::empty_strided" ||
         name == "aten::new_empty" || name == "aten::new_empty_strided";
}

/// A Python number wrapped into a 0-dim tensor (see resolve_arg): a scalar argument.
bool is_wrapped_number(const c10::IValue& a) {
  return a.isTensor() && a.toTensor().defined() &&
         a.toTensor().unsafeGetTensorImpl()->is_wrapped_number();
}

/// c10's own text for an IValue, through one stream per thread, made on first
/// use: constructing a stream (its locale looked up) cost more than the rest of a
/// small model's printing, once per capture.
std::string c10_text(const c10::IValue& a) {
  thread_local std::ostringstream os;
  os.str(std::string());
  os.clear();
  // as a fresh stream formats (c10 restores what it changes; this keeps it so)
  os.flags(std::ios_base::dec | std::ios_base::skipws);
  os.precision(6);
  os.width(0);
  os << a;
  return os.str();
}

/// A non-empty list of ints as c10 prints one: `[1, -2, 3]`.
std::string int_list_text(c10::ArrayRef<c10::IValue> items) {
  std::string out = "[";
  std::array<char, 24> digits{};
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), items[i].toInt());
    out.append(digits.data(), end.ptr);
  }
  out += ']';
  return out;
}

/// A finite double that is not an integer, with 17 significant digits (`%.17g`),
/// as c10 prints one: `0.10000000000000001`, `1.0000000000000001e-05`. (c10
/// writes integers its own ways, which differ between versions: `2.`,
/// `10000000000.`, `1.5e+20`, `0.` for -0.0.)
std::string real_text(double d) {
  std::array<char, 40> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), d,
                                 std::chars_format::general, 17);
  return std::string(digits.data(), end.ptr);
}

/// Whether int_list_text and real_text write what c10 writes, asked once per
/// process of c10's printer on values that tell the formats apart (precision,
/// exponent, sign, subnormals, the widest ints): a LibTorch that prints either
/// kind otherwise keeps c10's printer for that kind.
struct DirectText {
  bool int_lists = false, reals = false;
};
const DirectText& direct_text() {
  static const DirectText checked = [] {
    DirectText d;
    d.int_lists = true;
    for (const std::vector<std::int64_t>& list :
         {std::vector<std::int64_t>{5, 1, 16}, std::vector<std::int64_t>{-3},
          std::vector<std::int64_t>{0, std::numeric_limits<std::int64_t>::min(),
                                    std::numeric_limits<std::int64_t>::max()}}) {
      const c10::IValue v(list);
      d.int_lists = d.int_lists && v.isList() && c10_text(v) == int_list_text(v.toListRef());
    }
    d.reals = true;
    for (const double x :
         {0.1, 1e-05, 2.0 / 3.0, -2.5, 123456.789, 1.0000000000000002, -1.25e-300, 4.9e-324}) {
      d.reals = d.reals && c10_text(c10::IValue(x)) == real_text(x);
    }
    return d;
  }();
  return checked;
}

/// An argument as c10 prints an IValue (`1`, `True`, `None`, `2.`, `0.5`, `[1, 2]`);
/// a wrapped Python number as the Scalar overload's argument would print (`1.`
/// for 1.0, as TorchScript's `x + 1.0`). Ints, bools, None, integral doubles and,
/// where direct_text() found c10 writing them alike, finite non-integral doubles
/// and non-empty int lists are formatted here (c10's stream printing cost ~2.7 k
/// instructions a value: a view's sizes, a norm's eps, a dropout's p); the rest
/// goes through c10's printer.
std::string print_argument(const c10::IValue& a, bool wrapped) {
  if (wrapped) return print_argument(c10::IValue(a.toTensor().item()), false);
  if (a.isNone()) return "None";
  if (a.isBool()) return a.toBool() ? "True" : "False";
  if (a.isInt()) return std::to_string(a.toInt());
  if (a.isDouble()) {
    // c10: a finite double below 1e10 that is an integer prints as `N.` (zero
    // is left to c10: whether -0.0 prints `-0.` differs between versions)
    const double d = a.toDouble();
    if (std::fpclassify(d) == FP_NORMAL && std::abs(d) < 1e10) {
      const auto i = static_cast<std::int64_t>(d);
      if (static_cast<double>(i) == d) return std::to_string(i) + ".";
    }
    if (std::isfinite(d) && d != std::trunc(d) && direct_text().reals) return real_text(d);
  } else if (a.isIntList() && direct_text().int_lists) {
    const auto items = a.toListRef();
    if (!items.empty()) return int_list_text(items);
  }
  return c10_text(a);
}

/// The operator and layer-type names of the vertices capture makes itself,
/// interned once (a Name made from a literal looks the text up each time).
struct SourceNames {
  Name input{"input"}, buffer{"buffer"}, constant_op{"prim::Constant"}, constant{"constant"},
      literal_op{"aten::tensor"}, literal{"tensor"};
};
const SourceNames& source_names() {
  static const SourceNames names;
  return names;
}

/// An op's printable scalar arguments (each argument that is not a tensor, an
/// edge or a parameter, unless a number wrapped into a tensor), interned.
/// Their text is a function of each argument's schema name and kind and of the
/// value of a None, bool, int, double or int list: those are memoised per
/// thread by exactly that (the same op with the same arguments, op after op
/// and capture after capture, is printed and interned once). Other kinds
/// (strings, devices, wrapped numbers, ...) are printed every time.
class ScalarArgs {
 public:
  /// Argument `value`, schema name `name`; `is_tensor`: a tensor argument.
  /// Both are read again by interned(): they must live until then.
  void add(const Name& name, const c10::IValue& value, bool is_tensor) {
    const bool wrapped = is_wrapped_number(value);
    if (is_tensor && !wrapped) {
      key_.push_back(kTensor); // not printed
      return;
    }
    printed_.push_back({&name, &value, wrapped});
    // an interned name's text never moves: its address names it (and no
    // address equals a tag)
    key_.push_back(reinterpret_cast<std::uintptr_t>(name.data()));
    if (wrapped) {
      memoised_ = false; // its value is a tensor's
    } else if (value.isNone()) {
      key_.push_back(kNone);
    } else if (value.isBool()) {
      key_.append({kBool, static_cast<std::uint64_t>(value.toBool())});
    } else if (value.isInt()) {
      key_.append({kInt, static_cast<std::uint64_t>(value.toInt())});
    } else if (value.isDouble()) {
      key_.append({kDouble, std::bit_cast<std::uint64_t>(value.toDouble())});
    } else if (value.isIntList()) {
      const auto items = value.toListRef();
      key_.append({kIntList, items.size()});
      for (const auto& item : items) key_.push_back(static_cast<std::uint64_t>(item.toInt()));
    } else {
      memoised_ = false;
    }
  }

  /// The arguments added, printed and interned, or the memo's copy.
  Interned<ScalarArg> interned() const {
    if (printed_.empty()) return {};
    auto& memo = this_thread_memo();
    std::uint64_t hash = key_.size();
    if (memoised_) {
      for (const std::uint64_t w : key_) hash = (hash ^ w) * 0x9e3779b97f4a7c15ULL;
      auto it = memo.find(hash);
      if (it != memo.end() &&
          std::equal(key_.begin(), key_.end(), it->second.key.begin(), it->second.key.end())) {
        return it->second.args;
      }
    }
    c10::SmallVector<ScalarArg, 4> args;
    for (const auto& p : printed_) {
      args.push_back(ScalarArg{*p.name, print_argument(*p.value, p.wrapped)});
    }
    Interned<ScalarArg> out(std::span<const ScalarArg>(args.data(), args.size()));
    if (memoised_) {
      if (memo.size() >= kMemoSize) memo.clear(); // bounded: a model of ever new values
      memo.insert_or_assign(hash,
                            Memoised{std::vector<std::uint64_t>(key_.begin(), key_.end()), out});
    }
    return out;
  }

 private:
  enum : std::uint64_t { kTensor = 1, kNone, kBool, kInt, kDouble, kIntList };
  static constexpr std::size_t kMemoSize = 4096;
  struct Memoised {
    std::vector<std::uint64_t> key;
    Interned<ScalarArg> args;
  };
  static std::unordered_map<std::uint64_t, Memoised>& this_thread_memo() {
    thread_local std::unordered_map<std::uint64_t, Memoised> memo;
    return memo;
  }
  c10::SmallVector<std::uint64_t, 24> key_;
  struct Printed {
    const Name* name;
    const c10::IValue* value;
    bool wrapped;
  };
  c10::SmallVector<Printed, 8> printed_;
  bool memoised_ = true;
};

/// Which of the op's returns (the IR node's outputs) the `flat`-th tensor of
/// flatten_returns comes from: a Tensor return is one tensor, a Tensor[] return
/// (split, unbind) all of its elements.
std::size_t return_position(c10::ArrayRef<c10::IValue> returns, std::size_t flat) {
  for (std::size_t i = 0; i < returns.size(); ++i) {
    const std::size_t n = returns[i].isTensor()       ? 1
                          : returns[i].isTensorList() ? returns[i].toListRef().size()
                                                      : 0;
    if (flat < n) return i;
    flat -= n;
  }
  return returns.size();
}

/// Bit `position` of a mask over the IR node's outputs.
std::uint64_t output_bit(std::uint64_t mask, std::size_t position) {
  return mask & (std::uint64_t{1} << std::min<std::size_t>(position, 63));
}

// The interned names of a tensor's dtype and device, looked up once per
// distinct value (per thread): a vertex copies a pointer, no string.
Name dtype_name(c10::ScalarType type) {
  thread_local std::array<Name, static_cast<std::size_t>(c10::ScalarType::NumOptions)> names;
  Name& n = names.at(static_cast<std::size_t>(type));
  if (n.empty()) n = io::dtypes::name(type);
  return n;
}

Name device_name(const c10::Device& device) {
  static const Name cpu(c10::Device(c10::DeviceType::CPU).str()); // no thread-local look-up
  if (device.is_cpu() && !device.has_index()) return cpu;
  thread_local std::optional<std::pair<c10::Device, Name>> last;
  if (!last || last->first != device) last.emplace(device, Name(device.str()));
  return last->second;
}

// How many vertices and edges the latest capture of a model made (by the
// model's identity). The next capture of it reserves that many, plus room for
// the output nodes the pipeline adds: its graph's arrays neither reallocate
// while capturing nor end with up to twice the capacity they need (which the
// log would otherwise trim, moving every vertex). A wrong hint (a model whose
// op count changes, an address reused) costs a reallocation, never a result.
struct SizeHint {
  std::size_t vertices = 0, edges = 0;
};
class SizeHints {
 public:
  static SizeHint get(const void* model) {
    std::lock_guard<std::mutex> lock(mutex());
    auto it = hints().find(model);
    return it == hints().end() ? SizeHint{} : it->second;
  }
  static void set(const void* model, SizeHint hint) {
    std::lock_guard<std::mutex> lock(mutex());
    if (hints().size() >= 4096) hints().clear(); // many short-lived models: start over
    hints()[model] = hint;
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<const void*, SizeHint>& hints() {
    static std::unordered_map<const void*, SizeHint> h;
    return h;
  }
};

} // namespace

TORCH_LIBRARY_IMPL(_, TORCHLENS_CAPTURE_KEY_TOKEN, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&capture_fallback>());
}

bool is_scalar_read_op(const std::string& name) {
  return name == "aten::item" || name == "aten::is_nonzero" ||
         name == "aten::_local_scalar_dense" || name == "aten::equal" || name == "aten::allclose";
}

TensorList flatten_returns(c10::ArrayRef<c10::IValue> returns) {
  TensorList outputs;
  for (const auto& r : returns) {
    if (r.isTensor()) {
      outputs.push_back(r.toTensor());
    } else if (r.isTensorList()) {
      for (const auto& t : r.toTensorVector()) outputs.push_back(t);
    }
  }
  return outputs;
}

void flatten_outputs(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) flatten_outputs(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) flatten_outputs(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) flatten_outputs(kv.value(), out);
  }
}

// ---------------------------------------------------------------------------
// The op timer: the time-stamp counter where the CPU has one (x86: ~7 ns a
// read here, where steady_clock takes ~16, and each op reads it twice),
// steady_clock's nanoseconds elsewhere. Ticks become µs in finish(), at the
// rate measured over the forward (TickRate), so no fixed frequency is assumed.

namespace {

std::uint64_t op_ticks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

/// While alive, the forward runs; when it ends (also by an exception), writes
/// µs per tick of op_ticks() over its lifetime.
class TickRate {
 public:
  explicit TickRate(double& out) noexcept
      : out_(out), clock0_(std::chrono::steady_clock::now()), tick0_(op_ticks()) {}
  ~TickRate() {
    const std::uint64_t tick1 = op_ticks();
    const auto clock1 = std::chrono::steady_clock::now();
    out_ = tick1 > tick0_ ? std::chrono::duration<double, std::micro>(clock1 - clock0_).count() /
                                static_cast<double>(tick1 - tick0_)
                          : 0.0;
  }
  TickRate(const TickRate&) = delete;
  TickRate& operator=(const TickRate&) = delete;

 private:
  double& out_;
  std::chrono::steady_clock::time_point clock0_;
  std::uint64_t tick0_;
};

} // namespace

// ---------------------------------------------------------------------------
// Installing and removing the recorder (RAII, also when the model throws).

class CaptureScope {
 public:
  explicit CaptureScope(Recorder& rec, bool torchscript)
      : include_(kCaptureKey), marker_(kMarkerKind, std::make_shared<CaptureMarker>(&rec)) {
    TORCHLENS_CHECK(tls_recorder == nullptr && tls_lean == nullptr,
                    "log_forward_pass cannot be nested inside another capture");
    tls_recorder = &rec;
    if (torchscript) {
      callback_ = compat::add_frame_callbacks(&on_script_enter, &on_script_exit);
    }
  }
  ~CaptureScope() {
    if (callback_ != 0) compat::remove_frame_callbacks(callback_);
    tls_recorder = nullptr;
  }
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;

 private:
  c10::impl::IncludeDispatchKeyGuard include_;
  c10::DebugInfoGuard marker_;
  at::CallbackHandle callback_ = 0;
};

c10::IValue Recorder::run(const ForwardFn& forward) {
  c10::IValue out;
  {
    const TickRate rate(us_per_tick_);
    CaptureScope scope(*this, script_index_ != nullptr);
    out = forward(this);
  }
  const std::int64_t foreign = foreign_ops_.load();
  TORCHLENS_CHECK(foreign == 0, "the model ran ", foreign,
                  " op(s) on another thread (TorchScript fork/wait or at::launch; the first was ",
                  foreign_example_, "); capture logs one thread in order and would miss them. ",
                  "Run that code inline (without fork or launch) to log it.");
  return out;
}

/// The lean live engine's scope: its run installed on the thread, the capture
/// key included; both removed on return and on exceptions.
class LeanScope {
 public:
  explicit LeanScope(LeanRun& run)
      : include_(kCaptureKey),
        marker_(kMarkerKind, std::make_shared<CaptureMarker>(nullptr, &run)) {
    TORCHLENS_CHECK(tls_recorder == nullptr && tls_lean == nullptr,
                    "run_with_interventions cannot be nested inside a capture");
    tls_lean = &run;
  }
  ~LeanScope() { tls_lean = nullptr; }
  LeanScope(const LeanScope&) = delete;
  LeanScope& operator=(const LeanScope&) = delete;

 private:
  c10::impl::IncludeDispatchKeyGuard include_;
  c10::DebugInfoGuard marker_;
};

c10::IValue run_lean(LeanRun& run, const std::function<c10::IValue()>& forward) {
  LeanScope scope(run);
  return forward();
}

void Recorder::note_foreign_op(const c10::OperatorHandle& op) {
  if (foreign_ops_.fetch_add(1) == 0) foreign_example_ = op.schema().name();
}

// ---------------------------------------------------------------------------
// Module calls

void Recorder::push_call(int module, std::vector<at::Tensor> passthrough) {
  calls_.push_back(Call{module, std::move(passthrough)});
  inferred_.clear();
  if (module < 0) return;
  ModuleState& m = modules_[static_cast<std::size_t>(module)];
  if (m.passes++ == 0) module_order_.push_back(module);
  containment_.push_back(ModuleFrame{m.address, m.type, m.passes});
  containment_handle_.reset();
}

void Recorder::enter_module(const void* identity) {
  push_call(module_index(identity), {});
}

void Recorder::exit_module() {
  TORCH_INTERNAL_ASSERT(!calls_.empty(), "torchlens: a module scope closed twice");
  if (calls_.back().module >= 0) {
    containment_.pop_back();
    containment_handle_.reset();
  }
  calls_.pop_back();
  inferred_.clear();
}

void Recorder::script_enter(const at::RecordFunction& fn) {
  const auto inputs = fn.inputs(); // the interpreter's stack: valid only now
  int module = -1;
  std::vector<at::Tensor> through;
  if (!inputs.empty() && inputs[0].isObject()) {
    const auto self = inputs[0].toObject();
    // a module's forward (an overload, `forward__0`, or a traced module's
    // `forward1` for its second call) is a module call; other methods and
    // free functions are transparent (TorchLens wraps forward only)
    const char* name = fn.name();
    if (TorchScriptIndex::is_forward(name)) {
      module = module_index(self.get());
    }
    // arguments it returns unchanged get an identity node at its exit
    if (module >= 0) {
      if (const auto* positions = script_index_->passthrough(self->type().get(), name)) {
        for (std::size_t i : *positions) {
          if (i < inputs.size() && inputs[i].isTensor()) through.push_back(inputs[i].toTensor());
        }
      }
    }
  }
  push_call(module, std::move(through));
}

void Recorder::script_exit(const at::RecordFunction&) {
  if (calls_.empty()) return;
  try {
    for (const auto& t : calls_.back().passthrough) log_identity(t);
  } catch (...) {
    // end callbacks run in destructors (also while the model unwinds): never throw
  }
  exit_module();
}

void Recorder::log_identity(const at::Tensor& t) {
  ParentList parents;
  ParamList params;
  resolve_arg(t, 0, -1, false, parents, params);
  OpNode n = synthetic_node("identity", t, containment(), true);
  n.is_internally_generated = parents.empty();
  n.params = param_refs(params);
  const std::size_t id = new_node(std::move(n));
  for (const auto& p : parents) {
    boost::add_edge(p.node, id, TensorEdge{0, -1, "self", false}, graph);
  }
  static const auto alias = c10::Dispatcher::singleton().findSchemaOrThrow("aten::alias", "");
  set_replay(id, alias, {params.empty() ? c10::IValue() : c10::IValue(t)}, {!parents.empty()});
  if (params_.count(t.unsafeGetTensorImpl()) == 0) track(t, id); // uses after the module see it
  save(id, t, /*copy=*/false);
  note_gradient_edge(id, t);
}

namespace {

/// True when `owner` (a parameter's owning module) is module `address` itself
/// or a module inside it.
bool owned_within(std::string_view owner, std::string_view address) {
  return owner.starts_with(address) &&
         (owner.size() == address.size() || owner[address.size()] == '.');
}

} // namespace

Interned<ModuleFrame> Recorder::module_frames(const ParamList& params, bool& observed) {
  // inside any observed call (the root's own ModuleScope included) the place is known
  observed = !calls_.empty() || script_index_ != nullptr;
  // Announced calls are exact, unless the innermost one is opaque: nothing
  // inside it is announced, so its submodules' calls are inferred as below.
  const bool in_opaque = !calls_.empty() && calls_.back().module >= 0 &&
                         modules_[static_cast<std::size_t>(calls_.back().module)].opaque;
  if (script_index_ != nullptr || (model_.calls_observed && !in_opaque)) {
    inferred_.clear();
    return containment();
  }
  // An op that reads no parameter ends no inferred call: inside a module it is
  // the rest of the call (the matmul between a C++ Linear's `t` and its bias
  // `add`, the softmax between attention's projections); infer-modules places it.
  if (params.empty()) return containment();
  // C++ frontend (or an opaque module) below the innermost observed call: the op ran inside the
  // module owning the parameter it reads (and inside that module's parents).
  const std::string_view owner = params.front()->owner;
  const std::string_view base =
      containment_.empty() ? std::string_view() : std::string_view(containment_.back().address);
  if (owner.empty() ||
      !(base.empty() || (owner.size() > base.size() && owned_within(owner, base)))) {
    inferred_.clear();
    return containment();
  }
  // the callable modules on the way to the owner, below the innermost observed
  // call (the owner lies within it)
  c10::SmallVector<int, 8> chain;
  for (const int m : index_->prefixes_of(params.front()->index)) {
    const ModuleState& state = modules_[static_cast<std::size_t>(m)];
    if (state.callable && state.address.size() > base.size()) chain.push_back(m);
  }
  observed = true;
  // A call found this way continues while the ops that read parameters read
  // those of modules inside it, and none it already read (a Linear in a loop
  // gets one call per application); an op reading parameters outside it (the
  // root's own, a sibling's) ends it.
  std::size_t keep = 0;
  while (keep < inferred_.size() && keep < chain.size() && inferred_[keep].module == chain[keep]) {
    ++keep;
  }
  // (a parameter lies within module m when m is one of its dotted prefixes)
  const auto within = [this](const ParamState* p, int m) {
    const auto prefixes = index_->prefixes_of(p->index);
    return std::find(prefixes.begin(), prefixes.end(), m) != prefixes.end();
  };
  for (const ParamState* p : params) {
    for (std::size_t d = 0; d < keep; ++d) {
      if (within(p, inferred_[d].module) &&
          inferred_[d].params_used.contains(p->tensor.unsafeGetTensorImpl())) {
        keep = d;
        break;
      }
    }
  }
  inferred_.resize(keep);
  for (std::size_t d = keep; d < chain.size(); ++d) {
    ModuleState& m = modules_[static_cast<std::size_t>(chain[d])];
    if (m.passes++ == 0) module_order_.push_back(chain[d]);
    m.inferred = true;
    inferred_.push_back(InferredCall{chain[d], m.passes, UsedParams(&arena_)});
  }
  c10::SmallVector<ModuleFrame, 8> frames;
  frames.reserve(containment_.size() + inferred_.size());
  frames.assign(containment_.begin(), containment_.end());
  for (auto& call : inferred_) {
    const ModuleState& m = modules_[static_cast<std::size_t>(call.module)];
    for (const ParamState* p : params) {
      if (within(p, call.module)) {
        call.params_used.insert(p->tensor.unsafeGetTensorImpl());
      }
    }
    frames.push_back(ModuleFrame{m.address, m.type, call.pass});
  }
  // ops in a row in one module call: the frames interned for the last one
  if (!std::equal(frames.begin(), frames.end(), last_inferred_.begin(), last_inferred_.end())) {
    last_inferred_ = std::span<const ModuleFrame>(frames.data(), frames.size());
  }
  return last_inferred_;
}

// ---------------------------------------------------------------------------

DescriptionIndex::DescriptionIndex(const ModelDescription& d) : root(d.root) {
  params.reserve(d.params.size());
  for (const auto& p : d.params) params.emplace_back(p.address);
  buffers.reserve(d.buffers.size());
  for (const auto& b : d.buffers) buffers.emplace_back(b.address);
  module_addresses.reserve(d.modules.size());
  module_types.reserve(d.modules.size());
  module_by_identity.reserve(d.modules.size() + 1);
  module_by_address.reserve(d.modules.size());
  module_by_identity.emplace(d.root, -1);
  for (std::size_t i = 0; i < d.modules.size(); ++i) {
    const auto& m = d.modules[i];
    const int index = static_cast<int>(i);
    module_addresses.emplace_back(m.address);
    module_types.emplace_back(m.type);
    module_by_identity.emplace(m.identity, index); // a shared module keeps its first address
    module_by_address.emplace(std::string_view(module_addresses.back()), index);
  }
  prefix_start.reserve(params.size() + 1);
  prefix_start.push_back(0);
  for (const Name& address : params) {
    const std::string_view a = address;
    for (auto dot = a.find('.'); dot != std::string_view::npos; dot = a.find('.', dot + 1)) {
      const auto it = module_by_address.find(a.substr(0, dot));
      if (it != module_by_address.end()) prefixes.push_back(it->second);
    }
    prefix_start.push_back(static_cast<std::uint32_t>(prefixes.size()));
  }
}

Recorder::Recorder(const ModelDescription& model, const LogOptions& options, SavePolicy policy)
    : model_(model),
      options_(options),
      keep_records_(options.keep_replay()),
      policy_(std::move(policy)) {
  if (model.index != nullptr && model.index->fits(model)) {
    index_ = model.index; // derived when the model was described
  } else {
    index_ = std::make_shared<const DescriptionIndex>(model);
  }
  const DescriptionIndex& index = *index_;
  // a tensor registered under several addresses (a shared or tied parameter;
  // TorchScript's copies of a module used twice) keeps its first, as Python's
  // named_parameters() and named_buffers() list it
  for (std::size_t i = 0; i < model.params.size(); ++i) {
    const Name& address = index.params[i];
    const auto dot = address.rfind('.');
    params_.try_emplace(
        model.params[i].tensor.unsafeGetTensorImpl(),
        ParamState{address, std::string_view(address).substr(0, dot == std::string::npos ? 0 : dot),
                   model.params[i].tensor, static_cast<std::uint32_t>(i)});
  }
  for (std::size_t i = 0; i < model.buffers.size(); ++i) {
    const at::Tensor& t = model.buffers[i].tensor;
    buffers_.try_emplace(t.unsafeGetTensorImpl(), BufferState{index.buffers[i]});
    keep_alive_.push_back(t);
  }
  modules_.reserve(model.modules.size());
  pinned_.reserve(32); // grown one block at a time, not from one entry up
  for (std::size_t i = 0; i < model.modules.size(); ++i) {
    const auto& m = model.modules[i];
    modules_.push_back(ModuleState{index.module_addresses[i], index.module_types[i], 0, false,
                                   m.callable, m.opaque});
  }
  if (model.script_index != nullptr) {
    script_index_ = model.script_index;
  } else if (model.script != nullptr) {
    script_index_ = std::make_shared<const TorchScriptIndex>(*model.script);
  }
  graph[boost::graph_bundle].model_name = model.name;
  if (const SizeHint hint = SizeHints::get(model.root); hint.vertices > 0) {
    const std::size_t room = hint.vertices + 16; // + the output nodes
    graph.reserve(room, hint.edges + 16);
    activations.reserve(room);
    if (keep_records_) records.reserve(room);
    if (policy_.mode == SavePolicy::Mode::all) {
      // what every saved output keeps alive stays in these tables to the end
      tensors_.reserve(room);
      pinned_storages_.reserve(room);
      saved_by_storage_.reserve(room);
    }
  }
  if (options_.interventions() != nullptr) {
    live_ = std::make_unique<CompiledSpec>(*options_.interventions());
  }
}

Recorder::~Recorder() = default;

namespace {

OpInfo make_op_info(const c10::FunctionSchema& schema) {
  OpInfo info;
  info.name = schema.name();
  info.overload = schema.overload_name();
  info.layer_type = layer_type_of(info.name);
  for (const auto& a : schema.arguments()) {
    info.arg_names.push_back(a.name());
    const bool written = a.alias_info() != nullptr && a.alias_info()->isWrite();
    info.arg_written.push_back(written);
    info.arg_out.push_back(a.is_out());
    info.writes = info.writes || written;
  }
  for (const auto& r : schema.returns()) {
    if (r.alias_info() != nullptr && !r.alias_info()->isWrite()) {
      info.returns_view = true;
    }
  }
  info.scalar_read = is_scalar_read_op(info.name);
  info.uninitialized = is_uninitialized_op(info.name);
  return info;
}

} // namespace

const OpInfo& Recorder::info_for(const c10::OperatorHandle& op) {
  // One table per thread, kept across captures: a small model's capture would
  // otherwise rebuild an entry per distinct op each time (a dozen allocations
  // and the schema walked again). Keyed by the schema's address, which stays
  // put while the operator is registered; the name is checked too, so an
  // operator registered anew at a freed address has its entry rebuilt (in
  // place: a node's entry never moves, so a reference taken earlier stays valid).
  thread_local std::unordered_map<const c10::FunctionSchema*, OpInfo> cache;
  const c10::FunctionSchema& schema = op.schema();
  auto [it, inserted] = cache.try_emplace(&schema);
  OpInfo& info = it->second;
  if (inserted || info.name != schema.name() || info.overload != schema.overload_name()) {
    info = make_op_info(schema);
  }
  return info;
}

std::size_t Recorder::new_node(OpNode&& node) {
  node.id = boost::num_vertices(graph);
  const std::size_t id = node.id;
  boost::add_vertex(std::move(node), graph); // moved in once
  activations.emplace_back();
  if (keep_records_) records.emplace_back();
  if (id + 1 == kLongCapture) capture_is_long();
  return id;
}

Recorder::PinnedStorage& Recorder::pin(const at::Tensor& t, const c10::StorageImpl* st) {
  const auto [it, inserted] = pinned_storages_.try_emplace(st);
  if (inserted) pinned_.push_back(t.storage().getWeakStorageImpl());
  return it->second;
}

void Recorder::track(const at::Tensor& t, std::size_t node) {
  auto* impl = t.unsafeGetTensorImpl();
  tensors_.insert_or_assign(
      impl,
      Tracked{c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), node, version_of(t)});
  if (const auto* st = storage_of(t)) {
    PinnedStorage& pinned = pin(t, st);
    pinned.output = node;
    pinned.geometry.assign(t);
  }
  if (tensors_.size() >= purge_at_) purge_dead();
}

void Recorder::purge_dead() {
  // A dead tensor cannot be an argument again, and a new tensor at its address
  // is a different one: the entry can go, and the weak reference with it (it was
  // what kept the address from being reused). Without this, a long forward
  // (10^5 ops) keeps every intermediate TensorImpl and StorageImpl allocated
  // until the end: fresh memory for each op, and a costly teardown.
  for (auto it = tensors_.begin(); it != tensors_.end();) {
    if (it->second.weak.expired()) {
      written_by_.erase(it->first);
      it = tensors_.erase(it);
    } else {
      ++it;
    }
  }
  // a storage is dead only when every tensor on it is: its views are gone too
  std::erase_if(pinned_, [this](const c10::weak_intrusive_ptr<c10::StorageImpl>& w) {
    if (!w.expired()) return false;
    const c10::StorageImpl* st = w._unsafe_get_target();
    pinned_storages_.erase(st);
    storage_writers_.erase(st);
    return true;
  });
  purge_at_ = std::max(purge_at_, 2 * tensors_.size());
}

Recorder::Geometry Recorder::Geometry::of(const at::Tensor& t) {
  Geometry g;
  g.assign(t);
  return g;
}

void Recorder::Geometry::assign(const at::Tensor& t) {
  sizes.assign(t.sizes().begin(), t.sizes().end());
  strides.assign(t.strides().begin(), t.strides().end());
  offset = t.storage_offset();
  dtype = t.scalar_type();
}

void Recorder::set_writer(const c10::StorageImpl* st, std::size_t node, const at::Tensor& t) {
  Writer& w = storage_writers_[st];
  w.node = node;
  w.version = version_of(t);
  w.geometry.assign(t);
}

bool Recorder::Geometry::matches(const at::Tensor& t) const {
  return t.sizes() == c10::IntArrayRef(sizes.data(), sizes.size()) &&
         t.strides() == c10::IntArrayRef(strides.data(), strides.size()) &&
         t.storage_offset() == offset && t.scalar_type() == dtype;
}

void Recorder::log_base_update(const at::Tensor& view, std::size_t writer) {
  const at::Tensor base(view._base());
  if (!base.defined()) return;
  // the base's value before the write: its tracked node, whatever its version now
  ParentList parents;
  if (auto it = tensors_.find(base.unsafeGetTensorImpl()); it != tensors_.end()) {
    parents.push_back(Parent{it->second.node, 0, -1});
  } else {
    ParamList params;
    resolve_arg(base, 0, -1, false, parents, params);
  }
  OpNode n =
      synthetic_node("base_update", base, graph[writer].modules, graph[writer].module_observed);
  n.is_inplace = true;
  const std::int64_t offset = view.storage_offset() - base.storage_offset();
  set_location_args(n, view.sizes(), view.strides(), offset);
  const std::size_t id = new_node(std::move(n));
  for (const auto& p : parents) {
    if (p.node != writer) boost::add_edge(p.node, id, TensorEdge{0, -1, "base", false}, graph);
  }
  boost::add_edge(writer, id, TensorEdge{1, -1, "written", false}, graph);
  // replayable as as_strided_scatter(base, written, size, stride, offset), with
  // the view's geometry relative to the base (validation re-executes it)
  static const auto scatter =
      c10::Dispatcher::singleton().findSchemaOrThrow("aten::as_strided_scatter", "");
  set_replay(id, scatter,
             {c10::IValue(), c10::IValue(), c10::IValue(view.sizes().vec()),
              c10::IValue(view.strides().vec()), c10::IValue(offset)},
             {true, true, false, false, false});
  track(base, id);
  if (const auto* st = storage_of(base)) set_writer(st, id, base);
  save(id, base, /*copy=*/false);
  note_gradient_edge(id, base);
}

std::size_t Recorder::log_view_update(const at::Tensor& view, const Writer& writer) {
  OpNode n = synthetic_node("view_update", view, containment(),
                            script_index_ != nullptr || !calls_.empty());
  n.is_view = true;
  const std::int64_t offset = view.storage_offset() - writer.geometry.offset;
  set_location_args(n, view.sizes(), view.strides(), offset);
  const std::size_t id = new_node(std::move(n));
  boost::add_edge(writer.node, id, TensorEdge{0, -1, "self", false}, graph);
  // replayable as as_strided(written value, size, stride, offset) with the
  // view's geometry relative to the written tensor
  static const auto strided =
      c10::Dispatcher::singleton().findSchemaOrThrow("aten::as_strided", "");
  set_replay(id, strided,
             {c10::IValue(), c10::IValue(view.sizes().vec()), c10::IValue(view.strides().vec()),
              c10::IValue(offset)},
             {true, false, false, false});
  track(view, id);
  save(id, view, /*copy=*/false);
  note_gradient_edge(id, view);
  return id;
}

void Recorder::set_location_args(OpNode& n, c10::IntArrayRef sizes, c10::IntArrayRef strides,
                                 std::int64_t offset) {
  static const Name size_name("size"), stride_name("stride"), offset_name("storage_offset");
  n.scalar_args = {ScalarArg{size_name, print_argument(c10::IValue(sizes.vec()), false)},
                   ScalarArg{stride_name, print_argument(c10::IValue(strides.vec()), false)},
                   ScalarArg{offset_name, std::to_string(offset)}};
}

OpNode Recorder::synthetic_node(std::string_view name, const at::Tensor& t,
                                Interned<ModuleFrame> modules, bool observed) const {
  OpNode n;
  n.kind = NodeKind::op;
  n.op_name = "torchlens::" + std::string(name);
  n.layer_type = layer_type_of(name);
  n.modules = std::move(modules);
  n.module_observed = observed;
  fill_tensor_fields(n, t);
  return n;
}

void Recorder::set_replay(std::size_t id, const c10::OperatorHandle& op,
                          std::vector<c10::IValue> args, ArgFlags from_edges) {
  if (!keep_records_) return;
  OpRecord& rec = records[id];
  rec.op = op;
  rec.is_tensor.resize(args.size());
  for (std::size_t i = 0; i < args.size(); ++i)
    rec.is_tensor[i] = from_edges[i] || args[i].isTensor();
  rec.args = std::move(args);
  rec.from_edges = std::move(from_edges);
  note_kept_tensors(id);
}

ParamRef Recorder::param_ref(const ParamState& p) {
  return ParamRef{p.address, p.tensor.sizes().vec(), p.tensor.numel(), tensor_bytes(p.tensor),
                  p.tensor.requires_grad()};
}

Interned<ParamRef> Recorder::param_refs(const ParamList& params) {
  if (params.empty()) return {};
  const ParamState& first = *params.front();
  const auto still = [](const ParamState& p, const ParamRef& r) {
    const at::Tensor& t = p.tensor;
    return t.sizes().equals(r.shape) && t.numel() == r.numel && tensor_bytes(t) == r.bytes &&
           t.requires_grad() == r.requires_grad;
  };
  if (first.last_list.size() == params.size() &&
      std::equal(params.begin(), params.end(), first.last_list.begin())) {
    const auto& refs = first.last_refs.get();
    bool same = true;
    for (std::size_t i = 0; same && i < params.size(); ++i) same = still(*params[i], refs[i]);
    if (same) return first.last_refs;
  }
  c10::SmallVector<ParamRef, 4> refs;
  for (const ParamState* p : params) refs.push_back(param_ref(*p));
  first.last_list.assign(params.begin(), params.end());
  first.last_refs = std::span<const ParamRef>(refs.data(), refs.size());
  return first.last_refs;
}

void Recorder::fill_tensor_fields(OpNode& n, const at::Tensor& t) const {
  // A nested tensor has no sizes (LibTorch's own error says only "Internal
  // error"). nn.TransformerEncoder makes one on its fast path: in eval mode,
  // without gradients, with a src_key_padding_mask.
  TORCHLENS_CHECK(!t.is_nested(), "cannot log ", n.op_name.str(),
                  ": it returned a nested tensor, which torchlens does not log (it has no "
                  "single shape). nn.TransformerEncoder makes one on its fast path (eval mode, "
                  "no gradients, a src_key_padding_mask): build it with "
                  "enable_nested_tensor=False, or log it with gradients enabled");
  n.shape = std::span<const std::int64_t>(t.sizes().data(), t.sizes().size());
  n.dtype = dtype_name(t.scalar_type());
  n.device = device_name(t.device());
  n.bytes = tensor_bytes(t);
  n.requires_grad = t.requires_grad();
  // Without autograd metadata there is no grad_fn (grad_fn() asks the autograd
  // hooks first: ~120 instructions an op, most outputs of a no-grad forward).
  // Nor without requires_grad (a grad_fn makes a tensor require grad; a view's
  // grad_fn() asks its base and versions: ~220 instructions for each view a
  // no-grad forward makes).
  if (t.unsafeGetTensorImpl()->autograd_meta() == nullptr || !n.requires_grad) return;
  if (const auto& fn = t.grad_fn()) {
    n.grad_fn = fn->name(); // per instance: a Python Function's node names its class
  }
}

void Recorder::protect_storage(const c10::StorageImpl* s) {
  if (s == nullptr) {
    return;
  }
  auto it = saved_by_storage_.find(s);
  if (it == saved_by_storage_.end()) {
    return;
  }
  for (std::size_t id : it->second) {
    activations[id] = activations[id].clone();
  }
  saved_by_storage_.erase(it);
}

namespace {
/// The tensor at slot `index` of a kept argument (-1: the argument itself).
at::Tensor kept_tensor(const c10::IValue& arg, std::int32_t index) {
  if (index < 0) return arg.toTensor();
  const auto j = static_cast<std::size_t>(index);
  return arg.isTensorList() ? arg.toTensorList().get(j) : arg.toList().get(j).toTensor();
}
} // namespace

void Recorder::note_kept_tensors(std::size_t id) {
  // Each kept tensor becomes its own alias of the data the op read: forward may
  // give the live tensor other data (`p.data = ...`), and state restores write
  // into it; an in-place write into that data freezes a copy (freeze_kept_tensors).
  OpRecord& rec = records[id];
  for (std::size_t i = 0; i < rec.args.size(); ++i) {
    c10::IValue& a = rec.args[i];
    const auto keep = [&](const at::Tensor& t, std::int32_t index) {
      const auto* st = storage_of(t);
      if (st == nullptr) return false;
      kept_by_storage_[st].slots.push_back(KeptSlot{id, static_cast<std::uint32_t>(i), index});
      return true;
    };
    if (a.isTensor()) {
      if (keep(a.toTensor(), -1)) a = a.toTensor().detach();
    } else if (a.isTensorList()) {
      auto list = a.toTensorList();
      for (std::size_t j = 0; j < list.size(); ++j) {
        const at::Tensor t = list.get(j);
        if (keep(t, static_cast<std::int32_t>(j))) list.set(j, t.detach());
      }
    } else if (a.isList() && a.toList().elementType()->kind() == c10::TypeKind::OptionalType) {
      auto list = a.toList();
      for (std::size_t j = 0; j < list.size(); ++j) {
        const c10::IValue e = list.get(j);
        if (e.isTensor() && keep(e.toTensor(), static_cast<std::int32_t>(j))) {
          list.set(j, c10::IValue(e.toTensor().detach()));
        }
      }
    }
  }
}

void Recorder::freeze_kept_tensors(const c10::StorageImpl* s) {
  if (s == nullptr) return;
  auto it = kept_by_storage_.try_emplace(s).first; // later readers are frozen at the end
  it->second.written = true;
  // one copy per view of the storage: the aliases of a parameter that a loop
  // read a thousand times share one (a list argument shared by the records of
  // one op's outputs already holds its copy after the first slot)
  std::vector<std::pair<Geometry, at::Tensor>> copies; // view → its copy
  for (const KeptSlot& k : it->second.slots) {
    c10::IValue& arg = records[k.id].args[k.arg];
    const at::Tensor t = kept_tensor(arg, k.index);
    at::Tensor copy;
    for (const auto& [view, c] : copies) {
      if (c.unsafeGetTensorImpl() == t.unsafeGetTensorImpl() || view.matches(t)) {
        copy = c;
        break;
      }
    }
    if (!copy.defined()) {
      copy = t.clone();
      copies.emplace_back(Geometry::of(t), copy);
    }
    if (k.index < 0) {
      arg = copy;
    } else if (arg.isTensorList()) {
      arg.toTensorList().set(static_cast<std::size_t>(k.index), copy);
    } else {
      arg.toList().set(static_cast<std::size_t>(k.index), c10::IValue(copy));
    }
  }
  it->second.slots.clear();
}

void Recorder::save(std::size_t id, const at::Tensor& t, bool copy) {
  if (policy_.mode == SavePolicy::Mode::none ||
      (policy_.mode == SavePolicy::Mode::ids && policy_.ids.count(id) == 0)) {
    return;
  }
  at::Tensor s = options_.detach() ? t.detach() : t;
  if (options_.output_device() == OutputDevice::cpu && !s.device().is_cpu()) {
    s = s.to(c10::kCPU);
  } else if (copy) {
    s = s.clone();
  }
  if (options_.postfunc()) {
    paused_ = true;
    try {
      s = options_.postfunc()(s);
    } catch (...) {
      paused_ = false;
      throw;
    }
    paused_ = false;
  }
  const auto bytes = tensor_bytes(s);
  if (options_.max_saved_bytes() > 0 && saved_bytes_ + bytes > options_.max_saved_bytes()) {
    const OpNode& n = graph[id];
    TORCHLENS_CHECK(false, "saving the output of ", n.op_name, " (tensor ", id + 1,
                    " of the forward pass",
                    n.modules.empty() ? "" : ", in " + n.modules.back().address, ", shape ",
                    c10::IntArrayRef(n.shape.get()), ", ", bytes,
                    " bytes) would exceed max_saved_bytes = ", options_.max_saved_bytes(), " (",
                    saved_bytes_, " bytes saved so far); save fewer layers (LogOptions::save), ",
                    "move them to the CPU or shrink them (postfunc), or raise the budget");
  }
  saved_bytes_ += bytes;
  const auto* st = storage_of(s);
  if (st != nullptr && st == storage_of(t)) {
    pin(t, st);
    saved_by_storage_[st].push_back(id); // saved by reference: copy on write
  }
  activations[id] = std::move(s);
  graph[id].has_saved_activation = true;
}

void Recorder::note_gradient_edge(std::size_t id, const at::Tensor& t) {
  if (options_.save_gradients().kind() == SaveSpec::Kind::none) return;
  if (grad_edges.size() <= id) grad_edges.resize(id + 1);
  grad_edges[id] = compat::gradient_edge(t); // this version's node (docs/gradients.md)
}

void Recorder::add_input(const std::string& address, const at::Tensor& t) {
  TORCHLENS_CHECK(t.defined(), "input ", address, " is an undefined tensor");
  OpNode n;
  n.kind = NodeKind::input;
  n.op_name = source_names().input;
  n.layer_type = source_names().input;
  n.io_address = address;
  n.module_observed = true;
  n.exits_observed = true;
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  track(t, id);
  keep_alive_.push_back(t);
  save(id, intervene_source(id, t), /*copy=*/true); // the caller owns it and may change it later
  note_gradient_edge(id, t);
}

std::size_t Recorder::buffer_node(BufferState& b, const at::Tensor& t) {
  const std::uint32_t v = version_of(t);
  if (b.node != SIZE_MAX && b.version == v) {
    return b.node;
  }
  OpNode n;
  n.kind = NodeKind::buffer;
  n.op_name = source_names().buffer;
  n.layer_type = source_names().buffer;
  n.io_address = b.address;
  n.buffer_pass = ++b.passes;
  n.module_observed = true;
  n.exits_observed = true;
  // A buffer belongs to its owning module and that module's parents
  // (`lstm._flat_weights.0`: to `lstm`), in their current call, or the first
  // one when a caller reads the buffer before calling its owner (as TorchLens
  // places it). Containers that are never called (`transformer.h`, a
  // ModuleList) are not among them; finish() drops the modules that turn out
  // never to have been called at all.
  const auto dot = b.address.rfind('.');
  bool before_call = false;
  std::vector<ModuleFrame> frames;
  for (std::size_t pos = 0; dot != std::string::npos;) {
    const auto next = b.address.find('.', pos);
    if (next == std::string::npos || next > dot) break;
    const int at = module_at(std::string_view(b.address).substr(0, next));
    if (at < 0) break;
    const ModuleState& m = modules_[static_cast<std::size_t>(at)];
    if (m.callable) {
      frames.push_back(ModuleFrame{m.address, m.type, std::max(1, m.passes)});
      before_call = before_call || m.passes == 0;
    }
    pos = next + 1;
  }
  n.modules = frames;
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  if (before_call) buffers_before_call_.push_back(id);
  auto w = written_by_.find(t.unsafeGetTensorImpl());
  if (w != written_by_.end()) {
    boost::add_edge(w->second, id, TensorEdge{0, -1, "written", false}, graph);
  }
  b.node = id;
  b.version = v;
  save(id, intervene_source(id, t), /*copy=*/true); // buffers change under the model's feet
  note_gradient_edge(id, t);
  return id;
}

std::size_t Recorder::constant_node(const at::Tensor& t) {
  OpNode n;
  n.kind = NodeKind::op;
  n.op_name = source_names().constant_op;
  n.layer_type = source_names().constant;
  n.is_internally_generated = true;
  fill_tensor_fields(n, t);
  const std::size_t id = new_node(std::move(n));
  track(t, id);
  keep_alive_.push_back(t);
  save(id, t, /*copy=*/false);
  note_gradient_edge(id, t);
  return id;
}

void Recorder::mark_literal(std::size_t node) {
  OpNode& n = graph[node];
  n.op_name = source_names().literal_op;
  n.overload = {};
  n.layer_type = source_names().literal;
  n.scalar_args = {};
  if (keep_records_) records[node] = OpRecord{}; // a source: its saved value is the ground truth
}

void Recorder::settle_literal(std::size_t node, std::uint32_t version, bool written) {
  auto it = maybe_literal_.find(node);
  if (it == maybe_literal_.end() || viewing_) return; // a view of it reads nothing yet
  // first read of uninitialized memory: unwritten since, its values were set
  // outside the dispatcher (a tensor literal); an op writing it sets them
  if (!written && it->second == version) mark_literal(node);
  maybe_literal_.erase(it);
}

std::size_t Recorder::lookup(const at::Tensor& t) {
  if (!t.defined()) return SIZE_MAX;
  if (auto it = tensors_.find(t.unsafeGetTensorImpl()); it != tensors_.end()) {
    return it->second.node;
  }
  if (auto it = buffers_.find(t.unsafeGetTensorImpl()); it != buffers_.end()) {
    return it->second.node;
  }
  return SIZE_MAX;
}

bool Recorder::resolve_arg(const at::Tensor& t, int pos, int list_index, bool written,
                           ParentList& parents, ParamList& params) {
  if (!t.defined()) {
    return false;
  }
  const auto* impl = t.unsafeGetTensorImpl();
  if (auto it = tensors_.find(impl); it != tensors_.end()) {
    std::size_t node = it->second.node;
    const std::uint32_t v = version_of(t);
    if (v != it->second.version) {
      // Written through an alias (`x[i] = v` writes a view of x; `x.add_(1)`
      // makes every view of x stale): the value we see is the storage's latest
      // logged value, through this tensor's own geometry.
      auto w = storage_writers_.find(storage_of(t));
      if (w != storage_writers_.end() && w->second.version == v) {
        node = w->second.geometry.matches(t) ? w->second.node : log_view_update(t, w->second);
      } else {
        TORCH_WARN_ONCE("torchlens: a tensor was modified by an operation that was not ",
                        "logged; its consumers are linked to its last logged value");
      }
    }
    settle_literal(node, v, written);
    parents.push_back(Parent{node, pos, list_index});
    return true;
  }
  if (auto it = params_.find(impl); it != params_.end()) {
    params.push_back(&it->second);
    return false;
  }
  if (auto it = buffers_.find(impl); it != buffers_.end()) {
    parents.push_back(Parent{buffer_node(it->second, t), pos, list_index});
    return true;
  }
  if (auto it = pinned_storages_.find(storage_of(t));
      it != pinned_storages_.end() && it->second.output != PinnedStorage::kNoOutput &&
      it->second.geometry.matches(t)) {
    const std::size_t node = it->second.output; // same data, new TensorImpl
    settle_literal(node, version_of(t), written);
    track(t, node);
    parents.push_back(Parent{node, pos, list_index});
    return true;
  }
  // A Python number Python's argument parser wrapped into a 0-dim tensor
  // (`x + 1` calls add.Tensor; the Python binding): a scalar, as C++ and
  // TorchScript pass it to the Scalar overload, not a constant source.
  if (impl->is_wrapped_number()) return false;
  // A parameter through another TensorImpl on the same data (autograd's saved
  // `weight.t()` of a linear, read when `autograd.grad` runs inside forward): a
  // read of that parameter, not an unknown constant. The tensor itself stays in
  // the replay record, so re-execution reads it with its own geometry.
  if (!params_by_storage_built_) {
    params_by_storage_built_ = true;
    for (auto& [impl, p] : params_) {
      if (const auto* st = storage_of(p.tensor)) params_by_storage_.emplace(st, &p);
    }
  }
  if (const auto* st = storage_of(t); st != nullptr) {
    const auto [first, end] = params_by_storage_.equal_range(st);
    ParamState* found = first != end && std::next(first) == end ? first->second : nullptr;
    for (auto it = first; it != end && found == nullptr; ++it) { // parameters sharing storage
      if (Geometry::of(it->second->tensor).matches(t)) found = it->second;
    }
    if (found != nullptr) {
      params.push_back(found);
      return false;
    }
  }
  parents.push_back(Parent{constant_node(t), pos, list_index});
  return true;
}

void Recorder::read_scalar(c10::ArrayRef<c10::IValue> args, c10::ArrayRef<c10::IValue> returns,
                           ScalarUse use) {
  // A read is not a tensor: TorchLens logs nothing for it. The tensor read
  // keeps how its value was used (an `if` condition makes it a terminal bool).
  const bool is_bool = returns.size() == 1 && returns[0].isBool();
  if (use == ScalarUse::none && is_bool && bool_use_source_ != nullptr) use = bool_use_source_();
  if (use == ScalarUse::none) use = is_bool ? ScalarUse::condition : ScalarUse::value;
  for (const auto& a : args) {
    if (!a.isTensor()) continue;
    const std::size_t node = lookup(a.toTensor());
    if (node == SIZE_MAX) continue;
    OpNode& n = graph[node];
    if (n.scalar_use == ScalarUse::none || use == ScalarUse::condition) n.scalar_use = use;
    if (is_bool && n.shape.empty()) n.scalar_bool_value = returns[0].toBool();
  }
}

void Recorder::record(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  // halted, but the model caught the halt and went on: stop again
  TORCHLENS_CHECK(!halted_, "capture halted after op ", policy_.halt_after + 1);
  const OpInfo& info = info_for(op);
  const std::size_t num_args = info.arg_names.size();
  TORCH_INTERNAL_ASSERT(stack->size() >= num_args);

  // TorchScript: the IR node the interpreter runs, and the calls around it
  std::vector<torch::jit::StackEntry> callstack;
  const TorchScriptIndex::NodeFacts* facts = nullptr;
  if (script_index_ != nullptr) {
    callstack = compat::interpreter_callstack(); // innermost call first
    if (!callstack.empty()) facts = script_index_->find(callstack.front().range);
  }

  if (info.scalar_read) {
    const std::vector<c10::IValue> args(stack->end() - static_cast<std::ptrdiff_t>(num_args),
                                        stack->end());
    const std::uint64_t t0 = op_ticks();
    op.callBoxed(stack);
    op_ticks_ += op_ticks() - t0;
    const std::size_t num_returns = op.schema().returns().size();
    read_scalar(args, torch::jit::last(*stack, num_returns),
                facts != nullptr ? facts->bool_use : ScalarUse::none);
    return;
  }
  const auto args = torch::jit::last(*stack, num_args);
  viewing_ = info.returns_view && !info.writes;

  // Parents, parameters, and the non-tensor arguments: kept in the replay
  // record (keep_replay), from which finish() prints them, or else printed now.
  ParentList parents;
  ParamList params;
  TensorList arg_tensors;
  OpRecord rec;
  ScalarArgs scalars; // printed before the op runs (no replay record kept)
  if (keep_records_) {
    rec.op = op;
    rec.args.reserve(num_args);
  }
  const auto note = [&](std::size_t i, const c10::IValue& value, bool from_edge, bool is_tensor) {
    if (keep_records_) {
      rec.args.push_back(value);
      rec.from_edges.push_back(from_edge);
      rec.is_tensor.push_back(is_tensor);
    } else {
      scalars.add(info.arg_names[i], value, is_tensor);
    }
  };
  for (std::size_t i = 0; i < num_args; ++i) {
    const c10::IValue& a = args[i];
    const int pos = static_cast<int>(i);
    const bool written = info.arg_written[i];
    if (a.isTensor() && info.arg_out[i]) {
      // An out= buffer's old values never reach the result: no in-edge (TorchLens
      // has none; `torch.add(a, b, out=buf)` is add(a, b)), re-execution writes
      // into a copy of it (reexecute.cpp). It is written: a literal it held is not one.
      const at::Tensor& t = a.toTensor();
      if (auto it = tensors_.find(t.unsafeGetTensorImpl()); it != tensors_.end()) {
        settle_literal(it->second.node, version_of(t), true);
      }
      arg_tensors.push_back(t);
      note(i, a, false, true);
    } else if (a.isTensor()) {
      const bool edge = resolve_arg(a.toTensor(), pos, -1, written, parents, params);
      arg_tensors.push_back(a.toTensor());
      if (edge) {
        note(i, c10::IValue(), true, true);
      } else if (written && keep_records_) {
        // a parameter written in place (`weight.mul_(0.5)` under no_grad): the
        // record keeps the value the op read, not the one it leaves
        note(i, c10::IValue(a.toTensor().detach().clone()), false, true);
      } else {
        note(i, a, false, true);
      }
    } else if (a.isTensorList()) {
      // the record keeps a copy with the in-edge tensors taken out
      auto list = keep_records_ ? a.toTensorList().copy() : a.toTensorList();
      bool any_edge = false;
      for (std::size_t j = 0; j < list.size(); ++j) {
        const at::Tensor t = list.get(j);
        arg_tensors.push_back(t);
        if (resolve_arg(t, pos, static_cast<int>(j), written, parents, params)) {
          any_edge = true;
          if (keep_records_) list.set(j, at::Tensor());
        }
      }
      note(i, keep_records_ ? c10::IValue(std::move(list)) : c10::IValue(), any_edge, true);
    } else if (a.isList() && a.toList().elementType()->kind() == c10::TypeKind::OptionalType) {
      auto list = keep_records_ ? a.toList().copy() : a.toList(); // Tensor?[] (index)
      bool any_edge = false;
      for (std::size_t j = 0; j < list.size(); ++j) {
        const c10::IValue e = list.get(j);
        if (!e.isTensor()) continue;
        arg_tensors.push_back(e.toTensor());
        if (resolve_arg(e.toTensor(), pos, static_cast<int>(j), written, parents, params)) {
          any_edge = true;
          if (keep_records_) list.set(j, c10::IValue());
        }
      }
      note(i, keep_records_ ? c10::IValue(std::move(list)) : c10::IValue(), any_edge, true);
    } else if (a.isGenerator() && keep_records_) {
      // An explicit generator (`torch.rand(..., generator=g)`) advances as the op
      // runs: the record keeps a copy of its state now, and each re-execution
      // starts from a copy of that (reexecute.cpp), as the default generators'
      // states are kept in `rng`.
      note(i, c10::IValue(compat::copy_generator(a.toGenerator())), false, false);
    } else {
      note(i, a, false, false);
    }
  }

  // (printed while the arguments are on the stack, before anything changes it)
  Interned<ScalarArg> scalar_args = scalars.interned();

  // Copy-on-write: saved activations that this op is about to overwrite.
  c10::SmallVector<std::uint32_t, 4> versions_before;
  versions_before.reserve(arg_tensors.size());
  TensorList args_written_views(info.writes ? num_args : 0);
  for (std::size_t i = 0; info.writes && i < num_args; ++i) {
    if (info.arg_written[i] && args[i].isTensor()) {
      const at::Tensor& w = args[i].toTensor();
      protect_storage(storage_of(w));
      if (keep_records_) freeze_kept_tensors(storage_of(w));
      if (w.is_view() && !w.is_inference()) args_written_views[i] = w;
    }
  }
  for (const auto& t : arg_tensors) versions_before.push_back(t.defined() ? version_of(t) : 0);

  bool observed = false;
  Interned<ModuleFrame> frames = module_frames(params, observed);
  if (options_.keep_replay()) {
    rec.rng = GeneratorStates::read();
    const auto autocast = compat::autocast_state<AutocastState>();
    if (autocast.cpu || autocast.cuda) rec.autocast = autocast;
  }

  std::vector<std::string> edge_applied;
  if (live_ != nullptr) {
    intervene_inputs(boost::num_vertices(graph), parents, stack, num_args, info, edge_applied);
  }

  const std::uint64_t t0 = op_ticks();
  op.callBoxed(stack);
  const std::uint64_t ticks = op_ticks() - t0; // in µs from finish() on
  op_ticks_ += ticks;

  // Outputs: one vertex per returned tensor.
  const std::size_t num_returns = op.schema().returns().size();
  std::vector<std::vector<std::string>> applied;
  if (live_ != nullptr) {
    applied = intervene_outputs(boost::num_vertices(graph), info, frames.get(), stack, num_returns);
  }
  const auto outputs = flatten_returns(torch::jit::last(*stack, num_returns));

  Interned<ParamRef> param_refs = Recorder::param_refs(params);

  // TorchScript: which module calls return this op's value. The innermost call
  // runs the op's node; each outer call runs the node that called the next one.
  // A value leaves a call when its node's output reaches that call's return.
  // A return that depends on control flow leaves the exits to infer-modules.
  std::uint64_t returned_here = 0, uncertain_here = 0;
  int outer_exits = 0;
  bool exits_observed = false;
  if (facts != nullptr && callstack.size() <= calls_.size()) {
    exits_observed = true;
    returned_here = facts->returned;
    uncertain_here = facts->maybe_returned;
    std::size_t call = calls_.size() - 1;
    for (std::size_t i = 1; i < callstack.size(); ++i) {
      const auto* outer = script_index_->find(callstack[i].range);
      if (call == 0 || outer == nullptr) break;
      if (outer->returned == 0) {
        exits_observed = outer->maybe_returned == 0;
        break;
      }
      --call;
      outer_exits += calls_[call].module >= 0;
    }
  }
  const bool innermost_is_module = !calls_.empty() && calls_.back().module >= 0;

  std::size_t first_id = SIZE_MAX;
  int index = 0;
  // the last vertex takes the op's shared fields over instead of copying them
  std::size_t left = static_cast<std::size_t>(std::count_if(
      outputs.begin(), outputs.end(), [](const at::Tensor& t) { return t.defined(); }));
  for (const auto& t : outputs) {
    if (!t.defined()) {
      ++index;
      continue;
    }
    const bool last = --left == 0;
    OpNode n;
    n.kind = NodeKind::op;
    n.op_name = info.name;
    n.overload = info.overload;
    n.layer_type = info.layer_type;
    n.output_index = index++;
    n.num_outputs = static_cast<int>(outputs.size());
    n.is_inplace = info.writes;
    n.is_view = info.returns_view;
    n.params = last ? std::move(param_refs) : param_refs;
    n.time_us = static_cast<float>(ticks);
    n.is_internally_generated = parents.empty();
    if (t.dim() == 0 && t.scalar_type() == at::kBool && t.device().is_cpu()) {
      n.scalar_bool_value = t.item<bool>();
    }
    n.modules = last ? std::move(frames) : frames;
    n.scalar_args = last ? std::move(scalar_args) : scalar_args;
    n.module_observed = observed;
    const auto out = static_cast<std::size_t>(n.output_index);
    if (exits_observed) {
      // a return that depends on the branch taken is a guess that infer-modules
      // keeps only for a value nothing uses (returned, then dropped by the caller)
      // (embedding_bag's four outputs, of which F.embedding_bag returns the first)
      const std::size_t position =
          return_position(torch::jit::last(*stack, num_returns), n.output_index);
      n.exits_observed = output_bit(uncertain_here, position) == 0;
      if (output_bit(returned_here | uncertain_here, position) != 0) {
        n.modules_exited = (innermost_is_module ? 1 : 0) + outer_exits;
      }
    }
    fill_tensor_fields(n, t);
    if (live_ != nullptr) {
      if (out < applied.size()) n.interventions = std::move(applied[out]);
      if (first_id == SIZE_MAX && !edge_applied.empty()) {
        std::vector<std::string> all(edge_applied.begin(), edge_applied.end());
        all.insert(all.end(), n.interventions.begin(), n.interventions.end());
        n.interventions = all;
      }
    }
    const std::size_t id = new_node(std::move(n));
    if (first_id == SIZE_MAX) {
      first_id = id;
    }
    if (live_ != nullptr && std::binary_search(live_->reads().begin(), live_->reads().end(), id)) {
      live_values_[id] = t.detach().clone(); // later in-place ops must not change it
    }
    if (keep_records_) {
      records[id] = last ? std::move(rec) : rec;
      note_kept_tensors(id);
    }
    for (const auto& p : parents) {
      boost::add_edge(p.node, id,
                      TensorEdge{p.arg_pos, p.list_index, info.arg_names[p.arg_pos], false}, graph);
    }
    // A parameter or buffer an op hands back unchanged (`weight.contiguous()`)
    // stays a parameter or buffer.
    const auto* impl = t.unsafeGetTensorImpl();
    const bool kept_source =
        !info.writes &&
        std::any_of(arg_tensors.begin(), arg_tensors.end(),
                    [impl](const at::Tensor& a) { return a.unsafeGetTensorImpl() == impl; }) &&
        (params_.count(impl) != 0 || buffers_.count(impl) != 0);
    if (!kept_source) track(t, id);
    if (info.writes || info.returns_view) {
      if (const auto* st = storage_of(t)) set_writer(st, id, t);
    }
    if (parents.empty() && (info.uninitialized || (facts != nullptr && facts->literal))) {
      if (facts != nullptr && facts->literal) {
        mark_literal(id); // `torch.tensor([...])` in TorchScript
      } else {
        maybe_literal_[id] = version_of(t);
      }
    }
    save(id, t, /*copy=*/false);
    note_gradient_edge(id, t);
  }

  // An in-place write into a view changed its base too: log the base's new value
  // so later uses of the base see the whole tensor (TorchLens's setitem).
  if (info.writes && first_id != SIZE_MAX) {
    for (std::size_t i = 0; i < num_args; ++i) {
      if (info.arg_written[i] && args_written_views[i].defined()) {
        log_base_update(args_written_views[i], first_id);
      }
    }
  }

  // Writes the schema does not announce (batch_norm's running stats in training):
  // the next read of such a buffer becomes a new buffer pass fed by this op.
  for (std::size_t i = 0; i < arg_tensors.size(); ++i) {
    const auto& t = arg_tensors[i];
    if (t.defined() && first_id != SIZE_MAX && version_of(t) != versions_before[i]) {
      written_by_[t.unsafeGetTensorImpl()] = first_id;
    }
  }

  // SavePolicy::halt_after: everything that must be saved is recorded
  if (policy_.halt_after < boost::num_vertices(graph)) {
    halted_ = true;
    TORCHLENS_CHECK(false, "capture halted after op ", policy_.halt_after + 1);
  }
}

// ---------------------------------------------------------------------------
// The live intervention engine: the spec's entries applied in the fallback.

at::Tensor Recorder::live_value(std::size_t id) const {
  auto it = live_values_.find(id);
  TORCHLENS_CHECK(it != live_values_.end(), "an intervention reads the value of op ", id,
                  id < boost::num_vertices(graph) ? " (" + graph[id].op_name + ")" : std::string(),
                  ", which this run has not computed yet: it must run before the site");
  return it->second;
}

at::Tensor Recorder::intervene_source(std::size_t id, const at::Tensor& t) {
  if (live_ == nullptr) return t;
  OpNode& n = graph[id];
  OpView view;
  view.id = id;
  view.op_name = n.op_name;
  view.layer_type = n.layer_type;
  view.modules = &n.modules.get();
  view.value = &t;
  std::vector<std::string> applied;
  at::Tensor changed = live_->apply_output(
      view, "", [this](std::size_t i) { return live_value(i); }, applied);
  if (std::binary_search(live_->reads().begin(), live_->reads().end(), id)) {
    live_values_[id] = changed.detach().clone();
  }
  if (applied.empty()) return t;
  n.interventions = std::move(applied);
  substitute_[id] = changed;
  return changed;
}

void Recorder::intervene_inputs(std::size_t child, const ParentList& parents,
                                torch::jit::Stack* stack, std::size_t num_args, const OpInfo& info,
                                std::vector<std::string>& applied) {
  if (substitute_.empty() && !live_->edge_into(child)) return;
  const std::size_t first = stack->size() - num_args;
  for (const Parent& p : parents) {
    c10::IValue& arg = (*stack)[first + static_cast<std::size_t>(p.arg_pos)];
    const at::Tensor current = stack_tensor(arg, p.list_index);
    at::Tensor value = current;
    if (auto it = substitute_.find(p.node); it != substitute_.end()) value = it->second;
    if (live_->edge_into(child)) {
      value = live_->apply_edge(
          EdgeId{p.node, child, p.arg_pos, p.list_index}, info.name, "", value,
          [this](std::size_t i) { return live_value(i); }, applied);
    }
    if (value.is_same(current)) continue;
    put_argument(arg, p.list_index, info.arg_written[static_cast<std::size_t>(p.arg_pos)], current,
                 value);
  }
}

std::vector<std::vector<std::string>> Recorder::intervene_outputs(
    std::size_t first_id, const OpInfo& info, const std::vector<ModuleFrame>& frames,
    torch::jit::Stack* stack, std::size_t num_returns) {
  std::vector<std::vector<std::string>> applied;
  const auto value_of = [this](std::size_t i) { return live_value(i); };
  std::size_t id = first_id;
  change_returns(stack, num_returns, info.writes, [&](int out, const at::Tensor& t) -> at::Tensor {
    applied.emplace_back();
    if (!t.defined()) return t;
    OpView view;
    view.id = id++;
    view.op_name = info.name;
    view.layer_type = info.layer_type;
    view.modules = &frames;
    view.output_index = out;
    view.value = &t;
    return live_->apply_output(view, "", value_of, applied.back());
  });
  return applied;
}

void Recorder::set_returned(const c10::IValue& value) {
  auto& info = graph[boost::graph_bundle];
  std::function<void(const c10::IValue&, const std::string&)> walk =
      [&](const c10::IValue& v, const std::string& address) {
        if (v.isTensor()) {
          const at::Tensor& t = v.toTensor();
          ParentList parents;
          ParamList params;
          resolve_arg(t, 0, -1, false, parents, params);
          std::size_t node;
          if (!parents.empty()) {
            node = parents.front().node;
          } else {
            node = constant_node(t); // a parameter returned as is
          }
          info.returned.push_back(ReturnedTensor{node, address});
          if (const auto* st = storage_of(t)) {
            protect_storage(st); // the caller owns the returned tensor now
          }
        } else if (v.isTuple()) {
          const auto& elems = v.toTupleRef().elements();
          for (std::size_t i = 0; i < elems.size(); ++i) {
            walk(elems[i], address + "." + std::to_string(i));
          }
        } else if (v.isList()) {
          const auto& elems = v.toListRef();
          for (std::size_t i = 0; i < elems.size(); ++i) {
            walk(elems[i], address + "." + std::to_string(i));
          }
        } else if (v.isGenericDict()) {
          for (const auto& kv : v.toGenericDict()) {
            std::ostringstream key;
            key << kv.key();
            std::string k = key.str();
            k.erase(std::remove(k.begin(), k.end(), '"'), k.end());
            k.erase(std::remove(k.begin(), k.end(), '\''), k.end());
            walk(kv.value(), address + "." + k);
          }
        }
      };
  if (value.isTuple() || value.isList() || value.isGenericDict()) {
    walk(value, "output");
  } else {
    walk(value, "output.0");
  }
}

void Recorder::finish(double forward_ms) {
  SizeHints::set(model_.root, SizeHint{boost::num_vertices(graph), boost::num_edges(graph)});
  // Saved references that alias what the caller keeps (parameters, buffers,
  // inputs) become copies, so later changes on the caller's side cannot alter them.
  for (const auto& [impl, p] : params_) protect_storage(storage_of(p.tensor));
  for (const auto& t : keep_alive_) protect_storage(storage_of(t));
  saved_by_storage_.clear();
  // Records that read a tensor written during the capture (a parameter that
  // forward renormalises, clips or scales in place) after its last write: they
  // read its value as forward left it. Copy that, so that validation (which puts
  // the model's state back first) and replays see what each op read.
  for (auto& [storage, kept] : kept_by_storage_) {
    if (kept.written && !kept.slots.empty()) freeze_kept_tensors(storage);
  }
  kept_by_storage_.clear();
  tensors_.clear();

  // Printable non-tensor arguments, from the replay records (without them,
  // record() printed them already).
  if (keep_records_) {
    for (auto v : boost::make_iterator_range(boost::vertices(graph))) {
      const auto& rec = records[graph[v].id];
      if (!rec.op || graph[v].op_name.rfind("torchlens::", 0) == 0) continue;
      const OpInfo& info = info_for(*rec.op);
      ScalarArgs scalars;
      for (std::size_t i = 0; i < rec.args.size(); ++i) {
        scalars.add(info.arg_names[i], rec.args[i], rec.is_tensor[i]);
      }
      graph[v].scalar_args = scalars.interned();
    }
  }

  // A buffer read by a caller of a module that is then never called (the
  // root reading `self.table.weight_scale` of a helper it never runs) is in
  // none of that module's calls.
  for (std::size_t v : buffers_before_call_) {
    OpNode& n = graph[v];
    std::vector<ModuleFrame> kept = n.modules.vec();
    std::erase_if(kept, [this](const ModuleFrame& f) {
      const int at = module_at(std::string_view(f.address));
      return at >= 0 && modules_[static_cast<std::size_t>(at)].passes == 0;
    });
    n.modules = kept;
  }

  auto& info = graph[boost::graph_bundle];
  info.next_id = boost::num_vertices(graph);
  info.forward_time_ms = forward_ms;
  // the op timer's ticks in µs, at the rate run() measured over the forward
  for (auto v : boost::make_iterator_range(boost::vertices(graph))) {
    graph[v].time_us = static_cast<float>(graph[v].time_us * us_per_tick_);
  }
  info.logging_time_ms =
      std::max(0.0, forward_ms - static_cast<double>(op_ticks_) * us_per_tick_ / 1000.0);
  // A module's parameter count covers its subtree: every parameter whose
  // address continues the module's with a dot. Summed over each parameter's
  // dotted prefixes (found once per description: DescriptionIndex::prefixes_of;
  // matching every module against every parameter was quadratic, 12 % of a
  // 24-layer TransformerEncoder's capture).
  std::vector<std::int64_t> params_under(modules_.size(), 0);
  if (!module_order_.empty()) {
    for (std::size_t i = 0; i < model_.params.size(); ++i) {
      const auto prefixes = index_->prefixes_of(i);
      if (prefixes.empty()) continue;
      const std::int64_t count = model_.params[i].tensor.numel();
      for (const int m : prefixes) params_under[static_cast<std::size_t>(m)] += count;
    }
  }
  info.modules.reserve(info.modules.size() + module_order_.size());
  for (int index : module_order_) {
    const ModuleState& m = modules_[static_cast<std::size_t>(index)];
    const int first = module_at(std::string_view(m.address)); // its address's entry
    const std::int64_t under = first < 0 ? 0 : params_under[static_cast<std::size_t>(first)];
    info.modules.push_back(ModuleInfo{m.address, m.type, m.passes, under, !m.inferred});
  }
}

} // namespace torchlens::detail

namespace torchlens {

ModuleScope::ModuleScope(const torch::nn::Module& module) : recorder_(detail::tls_recorder) {
  if (recorder_ != nullptr) static_cast<detail::Recorder*>(recorder_)->enter_module(&module);
}

ModuleScope::~ModuleScope() {
  // only the capture that saw the entry sees the exit
  if (recorder_ != nullptr && recorder_ == detail::tls_recorder) {
    static_cast<detail::Recorder*>(recorder_)->exit_module();
  }
}

} // namespace torchlens
