#pragma once
/// \file
/// What an intervention does to the value at its site (docs/interventions.md).
/// An Action is a value: a registered name, its parameters (numbers and
/// tensors: what a saved spec holds) and the function it runs. Built-ins
/// below; user code through `call` (not portable) or a registered name
/// (`register_action`, portable: a saved spec names it, loading never runs code
/// that was not compiled into the program).

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace torchlens {

class ModelLog;
struct OpNode;

/// What an action knows about where it runs.
struct HookContext {
  std::size_t id = 0;       ///< OpNode::id of the value (an edge: its parent)
  std::string_view op_name; ///< the op that produced the value
  std::string_view label;   ///< its label in the reference log, or "" (valid during the
                            ///< call: copy it to keep it)
  std::function<at::Tensor(std::size_t)> value_of; ///< this run's value of another
                                                   ///< site (by id), as downstream saw it
  /// The site's region applied to another full-size tensor (a donor's value);
  /// the identity when the site has no region.
  std::function<at::Tensor(const at::Tensor&)> restrict;
};

/// Looks labels up on the reference log when a spec is resolved.
class LabelResolver {
 public:
  virtual ~LabelResolver() = default;
  /// The op id of one layer pass (`relu_1_4`, `relu_1_4:2`); throws for keys
  /// that match none or several.
  virtual std::size_t id_of(const std::string& key) = 0;
};

class Action {
 public:
  using Fn = std::function<at::Tensor(const at::Tensor& value, const HookContext& ctx)>;
  /// Builds the function once labels are known (take_from, add_delta_from) and
  /// reports which ids it reads (the live engine keeps those values).
  using Bind = std::function<Fn(LabelResolver&, std::vector<std::size_t>& reads)>;

  Action(std::string name, Fn fn);
  Action(std::string name, Bind bind);

  const std::string& name() const noexcept { return name_; }
  /// Can be saved and loaded: a built-in or registered action whose parameters
  /// are all numbers, strings and tensors.
  bool portable() const noexcept { return portable_; }
  /// `steer(magnitude=4, feature_dim=1)`.
  std::string describe() const;

  /// Numbers and strings a saved spec records; tensors go to `.npy` sidecars.
  std::map<std::string, std::string> params;
  std::map<std::string, at::Tensor> tensors;

  /// The action with its labels looked up: what the engines run.
  Action resolved(LabelResolver& resolver) const;
  /// True once resolved (or when it names no labels).
  bool is_resolved() const noexcept { return !needs_labels_; }
  /// The op ids whose values this (resolved) action reads in the same run.
  const std::vector<std::size_t>& reads() const noexcept { return reads_; }
  /// The function to run; throws for an action that still names labels.
  const Fn& function() const;

  Action& set_portable(bool p) {
    portable_ = p;
    return *this;
  }

 private:
  std::string name_;
  Bind bind_;
  Fn fn_;
  std::vector<std::size_t> reads_;
  bool portable_ = true;
  bool needs_labels_ = false;
};

struct ClampOptions {
  std::optional<double> min, max;
  ClampOptions& set_min(double v) {
    min = v;
    return *this;
  }
  ClampOptions& set_max(double v) {
    max = v;
    return *this;
  }
};

/// Replace with zeros.
Action zero_ablate();
/// Multiply by `factor`.
Action scale(double factor);
/// Clamp into [min, max].
Action clamp(ClampOptions options);
/// Add Gaussian noise of standard deviation `std` from the action's own
/// generator, seeded with `seed` and the site's id: the same at a site in every
/// engine, and the global generator is never touched.
Action noise(double std, std::uint64_t seed);
/// Add `magnitude * direction` along `feature_dim` (direction: one value per feature).
Action steer(at::Tensor direction, double magnitude, std::int64_t feature_dim = -1);
/// Keep only the component along `direction` (per position, along `feature_dim`).
Action project_onto(at::Tensor direction, std::int64_t feature_dim = -1);
/// Remove the component along `direction`.
Action project_off(at::Tensor direction, std::int64_t feature_dim = -1);
/// Replace with `value` (same shape, dtype and device; cloned on use).
Action replace_with(at::Tensor value);
/// Per-feature mean ablation: every example gets `mean` (the shape of one
/// example, e.g. running statistics of `torchlens extract` over a data set).
Action mean_ablate(at::Tensor mean);
/// Resample ablation: each example gets a row of `pool` ([P, ...example]),
/// drawn with the action's own generator.
Action resample_ablate(at::Tensor pool, std::uint64_t seed);
/// The same site's value in another log (same model, same graph): cloned, so
/// later in-place ops never reach the donor.
Action patch_from(const ModelLog& donor);
/// Another site's value in this run (it must run earlier).
Action take_from(std::string key);
/// Adds donor[key] − this run's [key]: path patching across a residual sum.
Action add_delta_from(const ModelLog& donor, std::string key);
/// User code. Not portable: a spec holding it cannot be saved.
Action call(std::function<at::Tensor(const at::Tensor&, const HookContext&)> fn,
            std::string name = "call");

/// A user action saved and loaded by name: `factory(params, tensors)` builds it.
using ActionFactory = std::function<Action(const std::map<std::string, std::string>& params,
                                           const std::map<std::string, at::Tensor>& tensors)>;
/// Registers `name` (`my_lab::whiten`); throws when the name is taken.
void register_action(const std::string& name, ActionFactory factory);
/// Builds a registered or built-in action from saved parameters.
Action make_action(const std::string& name, const std::map<std::string, std::string>& params,
                   const std::map<std::string, at::Tensor>& tensors);

} // namespace torchlens
