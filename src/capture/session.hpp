#pragma once
// Private to src/: the one capture session that logging, extraction and
// validation (and, next, interventions) share. A session is a model, the
// tensors handed to its forward, the forward itself, the log options and one
// seed; it captures as often as its user needs, with a save policy each time,
// and knows how to
//   - run the plain forward for ground truth,
//   - resolve lookup keys on a labelled log to the OpNode ids to save,
//   - check that a later capture ran the same graph (the first difference, named),
//   - put back the model state a forward changed in place.

#include "recorder.hpp"

#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torchlens::detail {

/// Parameters, buffers and inputs as they were, to undo what a forward pass
/// changes in place between repeated runs. Parameters and inputs are copied
/// back only when they changed: their version counter moved (in-place ops bump
/// it) or their values differ (a write through `p.data` bumps another counter);
/// an eval-mode forward writes none of them, and comparing is cheaper than
/// copying back (for vgg11_bn, no 530 MB writes). Data the forward swapped in
/// (`p.data = new`, a momentum encoder) is swapped back first. Buffers are
/// always copied back: batch norm updates its running statistics through raw
/// pointers, without bumping their version. `also`, when set, runs after every
/// restore (TorchScript attributes forward reassigned).
class StateSnapshot {
 public:
  StateSnapshot(const ModelDescription& model,
                const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                std::function<void()> also = {});
  void restore();

 private:
  struct Entry {
    at::Tensor live;
    at::Tensor data; ///< the tensor's data when saved (same storage, own TensorImpl)
    at::Tensor copy;
    std::int64_t version;
    bool always;
  };
  void add(const at::Tensor& t, bool always);
  std::vector<Entry> saved_;
  std::function<void()> also_;
};

/// Which OpNode ids a capture saves, and which saved tensors double as others
/// (an output node is its producer's tensor: shared, never copied).
struct Selection {
  SavePolicy policy;                                        ///< Mode::ids
  std::vector<std::pair<std::size_t, std::size_t>> aliases; ///< (output id, producer id)
};

/// The keys (any lookup key of the log) resolved on a labelled log. Unknown
/// keys throw the log's own error, with near-match suggestions.
Selection select_ids(const ModelLog& log, const std::vector<std::string>& keys);

/// What every later capture of a session must reproduce: each op of the
/// labelled graph (by id, which is creation order) with its op and shape, and
/// the number of ops the first capture ran.
struct GraphSignature {
  struct Op {
    std::size_t id;
    std::string op_name, label;
    std::vector<std::int64_t> shape;
  };
  std::vector<Op> ops;
  std::size_t raw_count = 0;
};

/// The signature of a labelled graph whose capture ran `raw_count` ops.
GraphSignature signature_of(const ModelGraph& labelled, std::size_t raw_count);

/// The first way a raw capture differs from a signature, as a sentence
/// ("first difference at relu_2_5 (aten::relu [1, 4]) ..."); empty when it ran
/// the same graph. Ops the first capture ran but trimmed (orphans) are not
/// compared; a different op count is. A capture halted after op id
/// `halted_after` (SavePolicy::halt_after) is compared up to that op only.
std::string first_difference(const GraphSignature& reference, const ModelGraph& raw,
                             std::size_t halted_after = SIZE_MAX);

/// The id after which a capture saving `selection` may stop: its last saved id.
std::size_t last_saved_id(const Selection& selection);

/// One model, one input, one forward, one seed: captured as often as needed.
class CaptureSession {
 public:
  CaptureSession(const ModelDescription& model,
                 std::vector<std::pair<std::string, at::Tensor>> inputs, ForwardFn forward,
                 LogOptions options, std::uint64_t seed);

  /// One capture with `policy`. With `finish`, also the end-of-capture work a
  /// returned log needs (protective copies, printable arguments, model facts,
  /// the seed); a saving re-run can skip it.
  /// `output`, when given, receives what forward returned.
  std::unique_ptr<Recorder> capture(SavePolicy policy, bool finish,
                                    c10::IValue* output = nullptr) const;

  /// The plain forward (no capture) under the session's seed, its tensors in
  /// output-node order, detached copies: the ground truth of validation.
  std::vector<at::Tensor> run_plain() const;

  /// A capture saving `selection` that must run the graph of `reference`;
  /// throws GraphChanged naming the first difference. Aliased outputs share
  /// their producer's tensor in the result (by id, `next_id` long).
  /// `grad_edges` and `output`, when given, receive the capture's gradient
  /// edges (by id) and what forward returned.
  std::vector<at::Tensor> capture_selection(
      const Selection& selection, const GraphSignature& reference, std::size_t next_id,
      std::vector<torch::autograd::Edge>* grad_edges = nullptr,
      c10::IValue* output = nullptr) const;

 private:
  const ModelDescription& model_;
  std::vector<std::pair<std::string, at::Tensor>> inputs_;
  ForwardFn forward_;
  LogOptions options_;
  std::uint64_t seed_;
};

/// The seed a run uses: the options' or a fresh random one.
std::uint64_t session_seed(const LogOptions& options);

} // namespace torchlens::detail
