#pragma once
// Private to src/: the capture engine. One Recorder lives for one forward pass;
// a boxed dispatcher fallback (recorder.cpp) feeds it every top-level ATen op,
// and module calls reach it from TorchScript's interpreter (RecordFunction),
// from ModuleScope in C++-frontend forwards, and from driven Sequentials.

#include <torchlens/capture/engine.hpp>
#include <torchlens/capture/options.hpp>
#include <torchlens/graph/model_graph.hpp>

#include "memory_pool.hpp"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <c10/util/SmallVector.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/edge.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace at {
class RecordFunction;
}

namespace torchlens::detail {

class TorchScriptIndex;
class CompiledSpec;

/// Which tensors a capture keeps.
struct SavePolicy {
  enum class Mode { all, none, ids } mode = Mode::all;
  std::unordered_set<std::size_t> ids; ///< OpNode ids, for Mode::ids
  /// Stop the forward once the op with this OpNode id is recorded (SIZE_MAX:
  /// run it all). The recorder marks itself halted() and throws out of the
  /// fallback; CaptureSession::capture recognises the halt by that state, not
  /// by the exception (the TorchScript interpreter re-wraps what ops throw).
  std::size_t halt_after = SIZE_MAX;
};

/// Per-argument flags of one op: schemas of up to 16 arguments (nearly all)
/// keep them inline, without a heap allocation per op.
using ArgFlags = c10::SmallVector<bool, 16>;

/// An op's returned tensors while it is recorded: inline up to four.
using TensorList = c10::SmallVector<at::Tensor, 4>;

/// What captures derive from a ModelDescription, derived once per description
/// (describe() attaches it; ModelDescription::index). Everything in it is
/// immutable and owns its data: a copied description shares it.
struct DescriptionIndex {
  const void* root = nullptr;
  std::vector<Name> params, buffers;                ///< addresses, in the description's order
  std::vector<Name> module_addresses, module_types; ///< in the description's order
  /// Modules by identity (the root: -1) and by address; a module registered
  /// twice keeps its first address. The address keys view the Names' texts,
  /// which live as long as the process.
  std::unordered_map<const void*, int> module_by_identity;
  std::unordered_map<std::string_view, int> module_by_address;
  /// For parameter i: the modules whose addresses are dotted prefixes of its
  /// address (`a`, `a.b` for `a.b.weight`), outermost first:
  /// prefixes[prefix_start[i] .. prefix_start[i + 1]).
  std::vector<std::uint32_t> prefix_start;
  std::vector<int> prefixes;

  /// Derived from `d`.
  explicit DescriptionIndex(const ModelDescription& d);
  /// Derived from `d` (the sizes tell: describe() makes both at once, nothing
  /// edits a description afterwards).
  [[nodiscard]] bool fits(const ModelDescription& d) const {
    return root == d.root && params.size() == d.params.size() &&
           buffers.size() == d.buffers.size() && module_addresses.size() == d.modules.size();
  }
  [[nodiscard]] std::span<const int> prefixes_of(std::size_t param) const {
    return {prefixes.data() + prefix_start[param], prefixes.data() + prefix_start[param + 1]};
  }
};

/// Autocast as an op ran under it (`torch.autocast`): its replay must run
/// under the same, or a linear that ran in bfloat16 replays in float32.
struct AutocastState {
  bool cpu = false, cuda = false;
  c10::ScalarType cpu_dtype = c10::ScalarType::BFloat16, cuda_dtype = c10::ScalarType::Half;
};

/// The states of the default generators an op may draw from: the CPU one and,
/// where LibTorch has CUDA, the current CUDA device's (undefined otherwise).
struct GeneratorStates {
  at::Tensor cpu, cuda;
  /// Reads both (under each generator's lock).
  static GeneratorStates read();
  /// Sets each recorded state back; an undefined one is left as it is.
  void write() const;
};

/// What capture records per op beyond the graph, enough to call it again: the
/// operator, its arguments with the logged tensors taken out (they are the
/// vertex's in-edges; parameters stay), the generator state and the autocast
/// state it ran with. A vertex without an operator and without parents is a
/// source (a constant or a tensor literal): its saved value is the ground truth.
struct OpRecord {
  std::optional<c10::OperatorHandle> op;
  std::vector<c10::IValue> args;         ///< in-edge tensors replaced by None / undefined
  ArgFlags from_edges;                   ///< argument (or some list element) comes from in-edges
  ArgFlags is_tensor;                    ///< argument is a tensor or tensor list (not printable)
  GeneratorStates rng;                   ///< generator states before the op (keep_replay)
  std::optional<AutocastState> autocast; ///< set when autocast was on for the op
};

/// Replay records of a log, by OpNode::id (kept when LogOptions::keep_replay).
struct ReplayRecords {
  std::vector<OpRecord> by_id;
};

/// Static facts about an operator, computed once per schema.
struct OpInfo {
  Name name, overload, layer_type; // interned once per schema: a vertex copies pointers
  std::vector<Name> arg_names;
  std::vector<bool> arg_written; ///< schema says Tensor(a!)
  std::vector<bool> arg_out;     ///< an out= buffer (keyword-only, written): written, not read
  bool writes = false;           ///< some argument is written
  bool returns_view = false;     ///< a return aliases an argument without a write
  bool scalar_read = false;      ///< item / is_nonzero / _local_scalar_dense / equal
  bool uninitialized = false;    ///< empty / empty_like / ...: the values are set elsewhere
};

/// A read of tensor values into a host scalar (`item`, `is_nonzero`, `equal`):
/// capture logs no vertex for it.
bool is_scalar_read_op(const std::string& name);

/// An op's tensor returns as capture logs them, in order (tensor lists
/// flattened, undefined ones kept as placeholders).
TensorList flatten_returns(c10::ArrayRef<c10::IValue> returns);

/// Tensors of a forward() result in output-node order (tuples, lists, dicts).
void flatten_outputs(const c10::IValue& value, std::vector<at::Tensor>& out);

/// The tensors of TorchScript forward() arguments, addressed `input.0`,
/// `input.1.2` (element 2 of a list/tuple argument).
std::vector<std::pair<std::string, at::Tensor>> jit_input_tensors(
    const std::vector<c10::IValue>& inputs);

class Recorder {
 public:
  Recorder(const ModelDescription& model, const LogOptions& options, SavePolicy policy);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;
  /// A recorder lives in a block kept per thread (take_scratch): it is larger
  /// than glibc serves without sweeping its fastbins.
  static void* operator new(std::size_t bytes) { return take_scratch(bytes); }
  static void operator delete(void* p, std::size_t bytes) noexcept { give_scratch(p, bytes); }

  void add_input(const std::string& address, const at::Tensor& t);
  void set_returned(const c10::IValue& value);

  /// A call of the module with this identity (a torch::nn::Module* or a
  /// TorchScript object) begins / ends: exact nesting and pass numbers.
  void enter_module(const void* identity);
  void exit_module();
  /// True for one of the model's modules.
  [[nodiscard]] bool has_module(const void* identity) const { return module_index(identity) >= 0; }
  /// True for a module of the model marked opaque (ModelDescription::NamedModule).
  [[nodiscard]] bool is_opaque_module(const void* identity) const {
    const int i = module_index(identity);
    return i >= 0 && modules_[static_cast<std::size_t>(i)].opaque;
  }
  // ---- Python module hooks (python/; implemented in python_hooks.cpp) ----
  /// The vertex holding t's current value, or SIZE_MAX (parameters, unseen tensors).
  std::size_t node_of(const at::Tensor& t) { return lookup(t); }
  /// Ends the innermost call like exit_module(), knowing what it returned: each
  /// of `unchanged` (outputs it received as arguments and returned untouched)
  /// gets an `identity` node, as for TorchScript, and every output's value
  /// leaves this module pass (OpNode::modules_exited, exits observed).
  void exit_module_returning(const std::vector<at::Tensor>& outputs,
                             const std::vector<at::Tensor>& unchanged);

  /// How the caller uses a bool it reads from a tensor (`if`, `while`,
  /// `assert`), for front ends whose ops carry no such fact (eager Python: the
  /// binding reads the statement being run); ScalarUse::none when unknown.
  using BoolUseSource = ScalarUse (*)();
  void set_bool_use_source(BoolUseSource source) { bool_use_source_ = source; }

  /// TorchScript interpreter frames (methods and functions), from RecordFunction.
  void script_enter(const at::RecordFunction& fn);
  void script_exit(const at::RecordFunction& fn);

  /// Runs `forward` with this recorder installed on the thread and the capture
  /// key enabled; both are removed on return and on exceptions. Throws when
  /// the model ran ops on other threads (they cannot be logged in order).
  c10::IValue run(const ForwardFn& forward);

  /// The fallback's body: runs the op and records it.
  void record(const c10::OperatorHandle& op, torch::jit::Stack* stack);
  bool paused() const noexcept { return paused_; }
  /// The forward was stopped at SavePolicy::halt_after.
  bool halted() const noexcept { return halted_; }
  /// An op ran on another thread that inherited this capture (TorchScript
  /// fork, at::launch): counted, run unlogged, and reported by run().
  void note_foreign_op(const c10::OperatorHandle& op);

  /// Ends the capture: protective copies, printable arguments, model facts.
  void finish(double forward_ms);

  ModelGraph graph;
  std::vector<at::Tensor> activations; ///< by OpNode::id
  std::vector<OpRecord> records;       ///< by OpNode::id (empty without keep_replay)
  /// Where each output's gradient arrives in the autograd graph (its grad_fn
  /// and output number, or a leaf's accumulator), by OpNode::id; recorded when
  /// LogOptions::save_gradients is not none (src/grad attaches the hooks).
  std::vector<torch::autograd::Edge> grad_edges;

 private:
  struct Tracked {
    // Keeps the address from being reused while the entry exists; once the
    // tensor has died (no op can take it as an argument again) purge_dead()
    // drops the entry and with it the TensorImpl's memory.
    c10::weak_intrusive_ptr<c10::TensorImpl> weak;
    std::size_t node;
    std::uint32_t version;
  };
  /// Geometry of a tensor over its storage.
  struct Geometry {
    c10::SmallVector<std::int64_t, 5> sizes, strides; // no allocation up to 5 dims
    std::int64_t offset = 0;
    c10::ScalarType dtype = c10::ScalarType::Undefined;
    static Geometry of(const at::Tensor& t);
    /// Becomes t's geometry in place (no temporary moved through the tables).
    void assign(const at::Tensor& t);
    bool matches(const at::Tensor& t) const;
  };
  /// The writer entry of storage st becomes (node, version, t's geometry).
  void set_writer(const c10::StorageImpl* st, std::size_t node, const at::Tensor& t);
  /// The latest logged value of a storage: the node that last wrote it (or the
  /// base update after a write through a view), at which version.
  struct Writer {
    std::size_t node;
    std::uint32_t version;
    Geometry geometry;
  };
  struct BufferState {
    Name address;
    std::size_t node = SIZE_MAX;
    std::uint32_t version = 0;
    int passes = 0;
  };
  struct ParamState {
    Name address;           // from the description's index: each ParamRef copies the pointer
    std::string_view owner; // the owning module's address (a prefix of `address`)
    at::Tensor tensor;
    std::uint32_t index = 0; ///< in the description (DescriptionIndex::prefixes_of)
    /// The last list of parameters read that began with this one, and what it
    /// interned to (param_refs()).
    mutable c10::SmallVector<const ParamState*, 4> last_list{};
    mutable Interned<ParamRef> last_refs{};
  };
  struct Parent {
    std::size_t node;
    int arg_pos, list_index;
  };
  // an op's parents and parameters while it is recorded: inline, no allocation per op
  using ParentList = c10::SmallVector<Parent, 4>;
  using ParamList = c10::SmallVector<const ParamState*, 4>;
  /// One module of the model (from the description, in named_modules order).
  struct ModuleState {
    Name address, type; // interned once per module: each frame copies two pointers
    int passes = 0;
    bool inferred = false; ///< some call was found by parameter ownership, not observed
    bool callable = true;  ///< has a forward (not a ModuleList, ModuleDict, ...)
    bool opaque = false;   ///< calls inside it are not announced (ModelDescription)
  };
  /// One call in progress: a module's forward (module >= 0) or a function /
  /// helper method (module < 0, transparent for nesting).
  struct Call {
    int module;
    std::vector<at::Tensor> passthrough; // arguments it returns unchanged (TorchScript)
  };
  /// A call found by parameter ownership (C++ frontend without ModuleScope):
  /// continued while the op reads parameters it has not read in this call.
  /// The parameters a call has read: a short list searched in place (a module
  /// reads a few), a hash set (nodes from arena_) once it outgrows the list.
  class UsedParams {
   public:
    UsedParams() = default; // (for resize(), which only shrinks)
    explicit UsedParams(std::pmr::memory_resource* arena) : set_(arena) {}
    [[nodiscard]] bool contains(const c10::TensorImpl* p) const {
      return set_.empty() ? std::find(list_.begin(), list_.end(), p) != list_.end()
                          : set_.count(p) != 0;
    }
    void insert(const c10::TensorImpl* p) {
      if (!set_.empty()) {
        set_.insert(p);
      } else if (std::find(list_.begin(), list_.end(), p) == list_.end()) {
        if (list_.size() < kListed) {
          list_.push_back(p);
        } else {
          set_.insert(list_.begin(), list_.end());
          set_.insert(p);
          list_.clear();
        }
      }
    }

   private:
    static constexpr unsigned kListed = 16;
    c10::SmallVector<const c10::TensorImpl*, kListed> list_;
    std::pmr::unordered_set<const c10::TensorImpl*> set_;
  };
  struct InferredCall {
    int module;
    int pass;
    UsedParams params_used;
  };

  /// The op's static facts, from a table per thread (kept across captures).
  static const OpInfo& info_for(const c10::OperatorHandle& op);
  std::size_t new_node(OpNode&& node);
  void track(const at::Tensor& t, std::size_t node);
  /// A storage capture keys on (pinned_ keeps its address from being reused)
  /// and the last output tracked on it.
  struct PinnedStorage {
    static constexpr std::size_t kNoOutput = SIZE_MAX;
    std::size_t output = kNoOutput; ///< the last output tracked on it, or kNoOutput
    Geometry geometry;              ///< that output's geometry over the storage
  };
  /// Pins t's storage (st, not null): its entry in pinned_storages_.
  PinnedStorage& pin(const at::Tensor& t, const c10::StorageImpl* st);
  /// Forgets the tensors and storages that died since the last sweep, so that
  /// the forward can reuse their memory (track() calls it each time the table
  /// has doubled: amortised O(1) per op).
  void purge_dead();
  /// After an in-place write into a view: a node for the base's new value.
  void log_base_update(const at::Tensor& view, std::size_t writer);
  /// A view read after its storage was written: a node for its new value.
  std::size_t log_view_update(const at::Tensor& view, const Writer& writer);
  /// The node holding t's current value, or SIZE_MAX when capture never saw t.
  std::size_t lookup(const at::Tensor& t);
  /// Resolves one tensor argument to a parent vertex (creating buffer or
  /// constant sources on first sight) or to a parameter. `written`: the op
  /// overwrites it. Returns true when the tensor became an in-edge (false: a parameter).
  bool resolve_arg(const at::Tensor& t, int pos, int list_index, bool written, ParentList& parents,
                   ParamList& params);
  std::size_t buffer_node(BufferState& b, const at::Tensor& t);
  std::size_t constant_node(const at::Tensor& t);
  /// A node whose values were set outside the dispatcher becomes a tensor literal.
  void mark_literal(std::size_t node);
  /// At the first read of uninitialized memory (`empty`): a literal when no
  /// logged op wrote it since.
  void settle_literal(std::size_t node, std::uint32_t version, bool written);
  void fill_tensor_fields(OpNode& n, const at::Tensor& t) const;
  void save(std::size_t id, const at::Tensor& t, bool copy);
  /// Notes where t's gradient will arrive (LogOptions::save_gradients).
  void note_gradient_edge(std::size_t id, const at::Tensor& t);
  void protect_storage(const c10::StorageImpl* s);
  /// The index of a module of the model in modules_, or -1.
  [[nodiscard]] int module_index(const void* identity) const {
    auto it = index_->module_by_identity.find(identity);
    return it == index_->module_by_identity.end() ? -1 : it->second;
  }
  /// The index of the module at `address` in modules_, or -1.
  [[nodiscard]] int module_at(std::string_view address) const {
    auto it = index_->module_by_address.find(address);
    return it == index_->module_by_address.end() ? -1 : it->second;
  }
  /// Replay records keep the tensors they read outside the graph (parameters)
  /// as references: registers those of record `id` by storage.
  void note_kept_tensors(std::size_t id);
  /// Storage `s` is about to be written (or the capture ends after it was):
  /// the records that read it so far get a copy of its value now, so each
  /// re-executes on what its op read.
  void freeze_kept_tensors(const c10::StorageImpl* s);
  void push_call(int module, std::vector<at::Tensor> passthrough);
  Interned<ModuleFrame> module_frames(const ParamList& params, bool& observed);
  /// Where a written or re-read view lies in its base (`size`, `stride`,
  /// `storage_offset`, as the replaying as_strided(_scatter) takes them): the
  /// synthetic node's scalar arguments, so that writes into different parts of
  /// one tensor are different operations (TorchLens hashes `__setitem__`'s
  /// index), while the same write repeated in a loop is the same one.
  void set_location_args(OpNode& n, c10::IntArrayRef sizes, c10::IntArrayRef strides,
                         std::int64_t offset);
  /// A vertex for a value no single dispatched op made (`torchlens::{name}`).
  OpNode synthetic_node(std::string_view name, const at::Tensor& t, Interned<ModuleFrame> modules,
                        bool observed) const;
  /// The record that re-executes vertex `id` (arguments from in-edges as None).
  void set_replay(std::size_t id, const c10::OperatorHandle& op, std::vector<c10::IValue> args,
                  ArgFlags from_edges);
  static ParamRef param_ref(const ParamState& p);
  /// The ParamRefs of the parameters an op read, interned. The same list read
  /// again (a module's weights, op after op and call after call) reuses what it
  /// interned to while every field a ParamRef records (shape, numel, bytes,
  /// requires_grad) is unchanged: no shape copied, hashed and looked up per op.
  static Interned<ParamRef> param_refs(const ParamList& params);
  /// A module that returns an argument unchanged gets an `identity` node.
  void log_identity(const at::Tensor& t);
  // ---- interventions (the live engine, src/intervene/compiled.hpp) ----
  /// Before op `child` runs: edge sites and changed sources it reads replace
  /// its arguments on the stack (written arguments are written through).
  void intervene_inputs(std::size_t child, const ParentList& parents, torch::jit::Stack* stack,
                        std::size_t num_args, const OpInfo& info,
                        std::vector<std::string>& applied);
  /// After the op ran: output sites change its returns (in-place and out=
  /// ops are written through, since callers keep using the argument). Returns
  /// what was applied, by output index.
  std::vector<std::vector<std::string>> intervene_outputs(std::size_t first_id, const OpInfo& info,
                                                          const std::vector<ModuleFrame>& frames,
                                                          torch::jit::Stack* stack,
                                                          std::size_t num_returns);
  /// A source (input, buffer) as output sites change it; later reads get the
  /// changed value. Returns the value to save.
  at::Tensor intervene_source(std::size_t id, const at::Tensor& t);
  /// This run's value of op `id` for actions that read another site.
  at::Tensor live_value(std::size_t id) const;

  /// A read of tensor values into a host scalar (`item`, `is_nonzero`): no
  /// vertex; the tensors read record how the value was used.
  void read_scalar(c10::ArrayRef<c10::IValue> args, c10::ArrayRef<c10::IValue> returns,
                   ScalarUse use);
  BoolUseSource bool_use_source_ = nullptr;

  const ModelDescription& model_;
  std::shared_ptr<const DescriptionIndex> index_; ///< model_.index, or one of its own
  LogOptions options_;
  bool keep_records_ = false; ///< options_.keep_replay(): records are kept
  SavePolicy policy_;
  bool paused_ = false;
  bool halted_ = false;
  std::atomic<std::int64_t> foreign_ops_{0};
  std::string foreign_example_;
  std::shared_ptr<const TorchScriptIndex> script_index_;

  // The per-op tables take their nodes from one arena, released at once with
  // the recorder: an insertion is a pointer bump, not a malloc, and tearing
  // them down frees a few blocks instead of a node per op (docs/performance.md).
  // Its first block is kept per thread (take_scratch) for the next capture.
  ScratchBlock arena_block_{std::size_t{1} << 16};
  std::pmr::monotonic_buffer_resource arena_{arena_block_.data(), arena_block_.size()};
  std::pmr::unordered_map<const c10::TensorImpl*, Tracked> tensors_{&arena_};
  std::pmr::unordered_map<const c10::StorageImpl*, Writer> storage_writers_{&arena_};
  std::pmr::unordered_map<const c10::StorageImpl*, PinnedStorage> pinned_storages_{&arena_};
  /// outputs saved by reference, by storage (copied before a write reaches them)
  std::pmr::unordered_map<const c10::StorageImpl*, c10::SmallVector<std::size_t, 1>>
      saved_by_storage_{&arena_};
  /// A tensor argument a replay record keeps (not from an in-edge): record,
  /// argument, index in a list argument (-1 for none).
  struct KeptSlot {
    std::size_t id;
    std::uint32_t arg;
    std::int32_t index;
  };
  struct KeptTensors {
    std::vector<KeptSlot> slots; ///< records still pointing at the live tensor
    bool written = false;        ///< some op wrote the storage during the capture
  };
  std::unordered_map<const c10::StorageImpl*, KeptTensors> kept_by_storage_;
  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> pinned_; ///< pinned_storages_'s
  std::size_t purge_at_ = std::size_t{1} << 12; // tensors_ size that triggers purge_dead()
  std::pmr::unordered_map<const c10::TensorImpl*, ParamState> params_{&arena_};
  /// Parameters by storage, for a parameter reaching an op through another
  /// TensorImpl (autograd's saved copy when `autograd.grad` runs in forward).
  /// Built on first use (most captures never need it).
  std::unordered_multimap<const c10::StorageImpl*, ParamState*> params_by_storage_;
  bool params_by_storage_built_ = false;
  std::pmr::unordered_map<const c10::TensorImpl*, BufferState> buffers_{&arena_};
  std::unordered_map<const c10::TensorImpl*, std::size_t> written_by_; // unannotated writes
  std::unordered_map<std::size_t, std::uint32_t> maybe_literal_; // node → version at creation
  bool viewing_ = false;               // the op being recorded only views its arguments
  std::vector<at::Tensor> keep_alive_; // constants and inputs we point at
  // buffer vertices placed in a module not called yet (finish() drops the
  // frames of those never called)
  std::vector<std::size_t> buffers_before_call_;

  // module tracking
  std::vector<ModuleState> modules_;
  std::vector<int> module_order_; // first-call order
  std::vector<Call> calls_;
  std::vector<ModuleFrame> containment_; // the module calls of calls_, outer → inner
  /// containment_, interned when an op first needs it after a change (an op in
  /// a module call and the call's return need not intern it twice)
  std::optional<Interned<ModuleFrame>> containment_handle_;
  Interned<ModuleFrame> last_inferred_; ///< what module_frames() inferred last

  const Interned<ModuleFrame>& containment() {
    if (!containment_handle_) containment_handle_.emplace(containment_);
    return *containment_handle_;
  }
  std::vector<InferredCall> inferred_;
  std::uint64_t op_ticks_ = 0;   ///< the ops' own time, in op timer ticks (recorder.cpp)
  double us_per_tick_ = 0;       ///< the op timer's rate over the forward, from run()
  std::int64_t saved_bytes_ = 0; // for LogOptions::max_saved_bytes

  std::unique_ptr<CompiledSpec> live_;                      // LogOptions::intervene
  std::unordered_map<std::size_t, at::Tensor> live_values_; // values actions read
  std::unordered_map<std::size_t, at::Tensor> substitute_;  // changed inputs and buffers
};

} // namespace torchlens::detail
