#pragma once
// Private to src/: the lean live engine (docs/interventions.md, "Lean live").
//
// run_with_interventions without a log does not need the graph when every
// site of the spec is an op of a reference log: the spec's resolution
// (Interventions::resolve) records, for each op it names, the operator, which
// occurrence of that operator it was among the reference's recorded op
// outputs, its output index, shape and dtype (a LeanPlan). The run then keeps
// one counter per operator of interest in the capture's fallback, applies the
// entries at the matching occurrences through CompiledSpec (the full engine's
// code) and lets every other op through untouched. Any disagreement with the
// reference (another shape or dtype, an edge whose argument is not the value
// its parent produced, an operator run a different number of times) stops the
// run with an error naming the site.

#include "compiled.hpp"

#include <torchlens/capture/engine.hpp>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/intrusive_ptr.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torchlens::detail {

/// What the lean engine needs of the reference, recorded by resolve().
struct LeanPlan {
  /// One op output of the reference the spec names (an output site, an edge's
  /// parent or an edge's child).
  struct Op {
    std::size_t id = 0;         ///< OpNode::id in the reference
    std::string label;          ///< for errors
    std::string name, overload; ///< the operator (`aten::relu_`, "")
    std::size_t occurrence = 0; ///< among the reference's outputs of that operator
    int output_index = 0;       ///< which return
    std::vector<std::int64_t> shape;
    std::string dtype; ///< `float32`
  };
  /// An input of forward the spec names.
  struct Input {
    std::size_t id = 0;
    std::string label, address; ///< `input.0`
    std::vector<std::int64_t> shape;
    std::string dtype;
  };
  std::vector<Op> ops;       ///< sorted by (operator, occurrence)
  std::vector<Input> inputs; ///< by id
  /// How many outputs the reference recorded of each operator in `ops`
  /// (name, overload → count): a run that differs was another op stream.
  std::vector<std::pair<std::pair<std::string, std::string>, std::size_t>> totals;
  /// Empty when the lean engine can run the spec; else why not.
  std::string unavailable;
};

/// The single eligibility rule: builds the plan of `resolved` (the result of
/// resolving `original` on `reference`), or a plan whose `unavailable` says
/// why only the full engine can run it.
std::shared_ptr<const LeanPlan> make_lean_plan(const Interventions& original,
                                               const Interventions& resolved,
                                               const ModelLog& reference);

/// "" when run_with_interventions can run `spec` the lean way, else why not.
std::string lean_unavailable(const Interventions& spec);

/// One lean run: the fallback's state (src/capture/recorder.cpp calls on_op
/// for every op the capture key sees while it is installed).
class LeanRun {
 public:
  /// `spec` must be lean-eligible (lean_unavailable(spec) empty).
  explicit LeanRun(const Interventions& spec);
  ~LeanRun();
  LeanRun(const LeanRun&) = delete;
  LeanRun& operator=(const LeanRun&) = delete;

  /// Applies the input sites to forward's inputs (before the forward).
  void set_inputs(const std::vector<std::pair<std::string, at::Tensor>>& inputs);
  /// The fallback's body.
  void on_op(const c10::OperatorHandle& op, torch::jit::Stack* stack);
  /// An op on another thread that inherited the run (TorchScript fork).
  void note_foreign_op(const c10::OperatorHandle& op);
  /// After the forward: every site was reached, every operator of interest
  /// ran as often as in the reference, no op ran on another thread.
  void finish() const;

 private:
  struct Target;
  struct Watch;
  void on_target(Watch& w, const c10::OperatorHandle& op, torch::jit::Stack* stack);
  void substitute_sources(const c10::OperatorHandle& op, torch::jit::Stack* stack,
                          const Target* child);

  const LeanPlan& plan_;
  CompiledSpec compiled_;
  ValueOf value_of_;
  std::vector<Target> targets_; // as plan_.ops
  std::vector<Watch> watches_;  // one per operator of interest
  std::vector<std::string> applied_;
  struct Source;
  std::vector<Source> sources_; // inputs changed or watched
  bool substituting_ = false;   // some input was changed: every op's arguments are looked at
  std::unordered_map<const c10::FunctionSchema*, bool> scalar_reads_;
  std::atomic<std::int64_t> foreign_ops_{0};
  std::string foreign_example_;
};

/// Runs `forward` with `run` installed as the capture fallback's lean mode on
/// this thread (the capture key included); removed on return and on
/// exceptions (recorder.cpp).
c10::IValue run_lean(LeanRun& run, const std::function<c10::IValue()>& forward);

/// How many lean runs this process made (tests: the lean path really ran).
std::int64_t lean_runs();

} // namespace torchlens::detail
