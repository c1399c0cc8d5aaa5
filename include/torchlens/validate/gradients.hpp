#pragma once
/// \file
/// Validation of saved gradients (docs/gradients.md): each saved gradient is
/// recomputed from the saved forward values through its consumers' backward —
/// every child op is re-executed from its parents' saved activations with the
/// parent requiring grad, and the vector-Jacobian product with the child's own
/// saved gradient is taken (`torch::autograd::grad`) — and compared with the
/// parent's saved gradient (the sum over its children).

#include <torchlens/config.hpp>
#include <torchlens/log/model_log.hpp>

#include <iosfwd>
#include <string>
#include <vector>

namespace torchlens {

/// Tolerances of gradient validation: |recomputed - saved| <= atol * scale +
/// rtol * |saved|, scale being the largest |saved| of that layer (at least 1).
struct GradientValidateOptions {
  TORCHLENS_OPTIONS((double, atol, 1e-5), (double, rtol, 1e-4));
};

/// One layer pass whose saved gradient differs from the recomputed one, or
/// could not be checked (`checked == false`, with the reason).
struct GradientFailure {
  std::string label;
  std::string detail;
  double max_error = 0; ///< max |recomputed - saved|
};

/// The result: truthy when every checked gradient matched.
struct GradientReport {
  bool valid = true;
  int layers_checked = 0;
  int vjps = 0;                          ///< child ops re-executed and differentiated
  std::vector<GradientFailure> failures; ///< mismatches
  std::vector<GradientFailure> skipped;  ///< not checkable, with the reason
  double max_error = 0;                  ///< over the checked layers
  explicit operator bool() const noexcept { return valid; }
  friend std::ostream& operator<<(std::ostream& os, const GradientReport& r);
};

/// Checks the saved gradients of a log captured with `keep_replay(true)`,
/// every activation saved and `save_gradients(SaveSpec::all())`, after a
/// backward. A layer is checked when it has a saved gradient and every child
/// can be re-executed; layers feeding a model output get their gradient from
/// the loss, outside the log, and are skipped (listed).
GradientReport validate_gradients(const ModelLog& log, const GradientValidateOptions& options = {});

} // namespace torchlens
