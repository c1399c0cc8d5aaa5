#pragma once
// Private to src/: the capture engine. One Recorder lives for one forward pass;
// a boxed dispatcher fallback (recorder.cpp) feeds it every top-level ATen op.

#include <torchlens/capture/options.hpp>
#include <torchlens/capture/recorder.hpp>
#include <torchlens/graph/model_graph.hpp>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace torchlens::detail {

/// Which tensors a capture keeps.
struct SavePolicy {
  enum class Mode { all, none, ids } mode = Mode::all;
  std::unordered_set<std::size_t> ids; ///< OpNode ids, for Mode::ids
};

/// What capture records per op beyond the graph, enough to call it again: the
/// operator, its arguments with the logged tensors taken out (they are the
/// vertex's in-edges; parameters stay), and the generator state it ran with.
struct OpRecord {
  std::optional<c10::OperatorHandle> op;
  std::vector<c10::IValue> args; ///< in-edge tensors replaced by None / undefined
  std::vector<bool> from_edges;  ///< argument (or some list element) comes from in-edges
  std::vector<bool> is_tensor;   ///< argument is a tensor or tensor list (not printable)
  at::Tensor rng_state;          ///< CPU generator state before the op (keep_replay)
};

/// Replay records of a log, by OpNode::id (kept when LogOptions::keep_replay).
struct ReplayRecords {
  std::vector<OpRecord> by_id;
};

/// Static facts about an operator, computed once per schema.
struct OpInfo {
  std::string name, overload, layer_type;
  std::vector<std::string> arg_names;
  std::vector<bool> arg_written; ///< schema says Tensor(a!)
  bool returns_view = false;     ///< a return aliases an argument without a write
  bool scalar_read = false;      ///< item / is_nonzero / _local_scalar_dense / equal
};

/// An op's returns as capture logs them: tensors in order (tensor lists
/// flattened, undefined ones kept as placeholders), and for scalar reads the
/// value as a 0-dim tensor. The second member says "scalar read".
std::vector<std::pair<at::Tensor, bool>> flatten_returns(c10::ArrayRef<c10::IValue> returns,
                                                         bool scalar_read);

/// Tensors of a forward() result in output-node order (tuples, lists, dicts).
void flatten_outputs(const c10::IValue& value, std::vector<at::Tensor>& out);

/// The tensors of TorchScript forward() arguments, addressed `input.0`,
/// `input.1.2` (element 2 of a list/tuple argument).
std::vector<std::pair<std::string, at::Tensor>> jit_input_tensors(
    const std::vector<c10::IValue>& inputs);

/// One capture of `forward` with `seed`: inputs registered, the recorder
/// installed, TorchScript's graph executor kept plain, outputs recorded. With
/// `finish`, also the end-of-capture work a returned log needs (protective
/// copies, printable arguments, model facts); a saving re-run can skip it.
std::unique_ptr<Recorder> capture_once(
    const ModelDescription& model, const std::vector<std::pair<std::string, at::Tensor>>& inputs,
    const ForwardFn& forward, const LogOptions& options, SavePolicy policy, std::uint64_t seed,
    bool finish);

/// Parameters, buffers and inputs as they were, to undo what a forward pass
/// changes in place (batch-norm statistics, counters) between repeated runs.
class StateSnapshot {
 public:
  StateSnapshot(const ModelDescription& model,
                const std::vector<std::pair<std::string, at::Tensor>>& inputs);
  void restore();

 private:
  std::vector<std::pair<at::Tensor, at::Tensor>> saved_; // (live, copy)
};

class Recorder {
 public:
  Recorder(const ModelDescription& model, const LogOptions& options, SavePolicy policy);
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  void add_input(const std::string& address, const at::Tensor& t);
  void set_returned(const c10::IValue& value);
  void enter_module(const std::string& address, const std::string& type);
  void exit_module();

  /// Runs `forward` with this recorder installed on the thread and the capture
  /// key enabled; both are removed on return and on exceptions.
  c10::IValue run(const ForwardFn& forward);

  /// The fallback's body: runs the op and records it.
  void record(const c10::OperatorHandle& op, torch::jit::Stack* stack);
  bool paused() const noexcept { return paused_; }

  /// Ends the capture: protective copies, printable arguments, model facts.
  void finish(double forward_ms);

  ModelGraph graph;
  std::vector<at::Tensor> activations; ///< by OpNode::id
  std::vector<OpRecord> records;       ///< by OpNode::id

 private:
  struct Tracked {
    c10::weak_intrusive_ptr<c10::TensorImpl> weak; // keeps the address from being reused
    std::size_t node;
    std::uint32_t version;
  };
  struct Writer {
    std::size_t node;
    std::uint32_t version;
  };
  struct BufferState {
    std::string address;
    std::size_t node = SIZE_MAX;
    std::uint32_t version = 0;
    int passes = 0;
  };
  struct ParamState {
    std::string address, owner;
    at::Tensor tensor;
  };
  struct RawFrame {
    std::string address, type;
    std::vector<std::size_t> key; // call-site chain (TorchScript) or driver serial
  };
  struct OpenFrame {
    RawFrame frame;
    int pass;
    std::unordered_set<const c10::TensorImpl*> params_used;
  };
  struct Parent {
    std::size_t node;
    int arg_pos, list_index;
  };
  /// Geometry of a logged output, to recognise a new TensorImpl over the same
  /// data (torch:: factories re-wrap their result in a new impl).
  struct Geometry {
    std::size_t node;
    std::vector<std::int64_t> sizes, strides;
    std::int64_t offset;
    c10::ScalarType dtype;
    bool matches(const at::Tensor& t) const;
  };

  const OpInfo& info_for(const c10::OperatorHandle& op);
  std::size_t new_node(OpNode node);
  void track(const at::Tensor& t, std::size_t node);
  /// After an in-place write into a view: a node for the base's new value.
  void log_base_update(const at::Tensor& view, std::size_t writer);
  /// Resolves one tensor argument to a parent vertex (creating buffer or
  /// constant sources on first sight) or to a parameter.
  /// Returns true when the tensor became an in-edge (false: a parameter).
  bool resolve_arg(const at::Tensor& t, int pos, int list_index, std::vector<Parent>& parents,
                   std::vector<const ParamState*>& params);
  std::size_t buffer_node(BufferState& b, const at::Tensor& t);
  std::size_t constant_node(const at::Tensor& t);
  void fill_tensor_fields(OpNode& n, const at::Tensor& t) const;
  void save(std::size_t id, const at::Tensor& t, bool copy);
  void protect_storage(const c10::StorageImpl* s);
  std::vector<ModuleFrame> module_frames(const std::vector<const ParamState*>& params,
                                         bool& observed);
  std::vector<RawFrame> torchscript_frames() const;

  const ModelDescription& model_;
  LogOptions options_;
  SavePolicy policy_;
  bool paused_ = false;

  std::unordered_map<const c10::FunctionSchema*, OpInfo> op_infos_;
  std::unordered_map<const c10::TensorImpl*, Tracked> tensors_;
  std::unordered_map<const c10::StorageImpl*, Writer> storage_writers_;
  std::unordered_map<const c10::StorageImpl*, Geometry> outputs_by_storage_;
  std::unordered_map<const c10::StorageImpl*, std::vector<std::size_t>> saved_by_storage_;
  std::unordered_map<const c10::TensorImpl*, ParamState> params_;
  std::unordered_map<const c10::TensorImpl*, BufferState> buffers_;
  std::unordered_map<const c10::TensorImpl*, std::size_t> written_by_; // unannotated writes
  std::unordered_map<std::string, std::string> module_types_;
  std::vector<at::Tensor> keep_alive_; // constants and inputs we point at

  // module tracking
  std::vector<RawFrame> driven_; // frames announced by drivers
  std::size_t driver_serial_ = 0;
  std::vector<OpenFrame> open_;
  std::unordered_map<std::string, int> module_passes_;
  std::vector<std::string> module_order_;
  double op_time_us_ = 0;
};

} // namespace torchlens::detail
