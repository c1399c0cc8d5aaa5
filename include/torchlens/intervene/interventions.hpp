#pragma once
/// \file
/// An intervention spec: an ordered list of (site, action) entries, one value
/// that every engine takes (docs/interventions.md):
///
/// - **live**: `LogOptions().intervene(spec)` changes values inside the
///   capture while the model runs (`run_with_interventions` without a log);
/// - **replay**: `replay(reference, spec)` recomputes only the downstream cone
///   of the changed sites from the log, without running model code;
/// - **rerun**: `rerun(model, inputs, reference, spec)` runs the model again
///   with the spec live and compares the graph with the reference;
/// - **auto**: replay where it is valid, rerun where it is not.
///
/// Entries on one site apply in spec order, each seeing the previous result;
/// downstream selectors and donors see the changed values (cascading).

#include <torchlens/intervene/action.hpp>
#include <torchlens/intervene/site.hpp>
#include <torchlens/torch_error.hpp>

#include <memory>
#include <string>
#include <vector>

namespace torchlens {

class ModelLog;
namespace detail {
struct LeanPlan; // src/intervene/lean.hpp
}

class Interventions {
 public:
  struct Entry {
    Site site;
    Action action;
  };

  Interventions() = default;
  /// Appends an entry (fluent).
  Interventions& at(Site site, Action action);

  const std::vector<Entry>& entries() const noexcept { return entries_; }
  bool empty() const noexcept { return entries_.empty(); }
  /// True when some site needs a reference log (labels, modules, edges).
  bool needs_reference() const;
  /// True when every site and action can be saved.
  bool portable() const;

  /// The spec with every label, module and edge site turned into op ids of
  /// `reference`, and every action's labels resolved: what the live engine
  /// runs. Unknown keys throw KeyError with near matches.
  Interventions resolve(const ModelLog& reference) const;
  /// True for a spec returned by resolve(), or one with live sites only.
  bool resolved() const { return !needs_reference(); }

  /// Saves to `path` (JSON) with tensors as `.npy` files beside it
  /// (`<stem>.<entry>.<name>.npy`). Throws for a spec that is not portable,
  /// naming the entry.
  void save(const std::string& path) const;
  /// Loads a saved spec. Never runs code: actions are built-ins or registered
  /// names; a sidecar path that is not a plain file name in the spec's folder is
  /// refused.
  static Interventions load(const std::string& path);

  /// One line per entry: `1. label(relu_2_5) -> zero_ablate()`.
  std::string describe() const;

  /// Internal: where the lean live engine finds the sites (recorded by
  /// resolve(); null for a spec that was not resolved, or was extended since).
  const std::shared_ptr<const detail::LeanPlan>& lean_plan() const noexcept { return lean_; }

 private:
  std::vector<Entry> entries_;
  std::shared_ptr<const detail::LeanPlan> lean_;
};

/// Replay stopped where the model's control flow could diverge: a value read
/// into a host scalar (`item`, `bool(t)`) or a data-dependent shape changed.
class ReplayDivergence : public TorchError {
 public:
  ReplayDivergence(c10::SourceLocation where, const std::string& message, std::string vertex_label)
      : TorchError(where, message), label_(std::move(vertex_label)) {}
  /// The label of the vertex where replay stopped.
  const std::string& vertex() const noexcept { return label_; }

 private:
  std::string label_;
};

} // namespace torchlens
