#pragma once
// Private to src/: a TorchScript model as captures run it, cached per model.
//
// Every capture of a TorchScript model runs on its capture copy (engine.hpp,
// capture_copy: methods of its own, every value shared). Making the copy,
// describing it and indexing its graphs cost milliseconds (5 ms for a small
// TransformerEncoder, 8 ms for resnet18), more than a small model's forward.
// The cache keeps them per model object and hands them out as a lease:
//   - on each lease the copy is checked against the model: the same module
//     objects (a replaced submodule rebuilds the entry) and the same attribute
//     values (reassigned ones are copied over, and the description is redone
//     when a tensor attribute changed);
//   - when the lease ends, what forward reassigned is put back on the model
//     (copy_back, slot by slot), as for an uncached copy;
//   - a lease taken while another thread holds the model's entry gets a fresh,
//     uncached copy; entries whose model died are dropped, and at most a few
//     models are kept (least recently used first out).

#include "recorder.hpp"

#include <memory>
#include <vector>

namespace torchlens::detail {

/// capture_copy(m) under the lock leases take to read or write a model's
/// attribute slots: a copy made while a capture of the same model on another
/// thread puts forward's reassignments back (`self.count = ...`) would read a
/// slot as it is replaced. For copies kept outside the cache (Extractor).
torch::jit::Module guarded_capture_copy(const torch::jit::Module& m);

class ScriptLease {
 public:
  explicit ScriptLease(torch::jit::Module& model);
  ~ScriptLease();
  ScriptLease(const ScriptLease&) = delete;
  ScriptLease& operator=(const ScriptLease&) = delete;

  /// The copy to run.
  torch::jit::Module& module();
  /// Runs the copy's forward (found once per entry: Module::forward looks the
  /// method up by name on every call).
  c10::IValue forward(const std::vector<c10::IValue>& inputs);
  /// Its description, with the cached TorchScript index.
  const ModelDescription& description() const;

  struct Entry;

 private:
  torch::jit::Module& model_;
  std::vector<c10::intrusive_ptr<c10::ivalue::Object>> objects_; // its modules, root first
  std::shared_ptr<Entry> entry_;
  bool cached_ = false;
};

} // namespace torchlens::detail
