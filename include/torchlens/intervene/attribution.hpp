#pragma once
/// \file
/// Gradient-based attribution on the log's gradients (docs/gradients.md):
///
/// - attribution patching: the first-order estimate of activation patching,
///   gradient × (donor − base) summed over a site's value, for every site at
///   once from one backward (Nanda's "attribution patching"); the same sites,
///   directions and normalisation as patching::activation_patch;
/// - integrated gradients (Sundararajan et al. 2017) for a model input, or for
///   any intermediate op pass: the site's value is moved from a baseline's to
///   the input's along a straight line by the live intervention engine, and the
///   gradients along it are averaged.

#include <torchlens/intervene/action.hpp>
#include <torchlens/intervene/engines.hpp>
#include <torchlens/intervene/patching.hpp>

#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <type_traits>
#include <vector>

namespace torchlens::attribution {

/// A differentiable scalar of the model's first output (`y[0][3] - y[0][5]`).
using Metric = std::function<at::Tensor(const at::Tensor&)>;

struct AttributionOptions {
  /// Adds a site (label, module or live selectors; every op pass it selects is
  /// a row). Edge sites are not supported.
  AttributionOptions& site(Site s) {
    sites_.push_back(std::move(s));
    return *this;
  }
  const std::vector<Site>& sites() const noexcept { return sites_; }
  TORCH_ARG(Metric, metric);
  TORCH_ARG(patching::Direction, direction) = patching::Direction::denoise;
  TORCH_ARG(std::uint64_t, seed) = 0;

 private:
  std::vector<Site> sites_;
};

struct AttributionRow {
  std::string site;    ///< the site as given
  std::string label;   ///< the op pass
  double estimate = 0; ///< estimated metric change: Σ gradient × (donor − base)
  double effect = 0;   ///< normalised as activation patching's effect
};

struct AttributionResult {
  double clean_metric = 0, corrupted_metric = 0;
  std::vector<AttributionRow> rows;
  void to_csv(const std::string& path) const;
  friend std::ostream& operator<<(std::ostream& os, const AttributionResult& r);
};

/// From two logs of the same model; the base log (corrupted for denoise, clean
/// for noise) must hold the gradients of the metric: logged with
/// `save_gradients(SaveSpec::all())` and backward run from
/// `metric(base.returned()[0])`. The donor needs its activations.
AttributionResult attribution_patch(const ModelLog& clean, const ModelLog& corrupted,
                                    const AttributionOptions& options);

namespace detail {
/// The model's parameters that require grad (the leaves the metric's gradient
/// is taken against, so that `.grad` of the caller's parameters is untouched).
std::vector<at::Tensor> trainable_params(torch::jit::Module& model);
std::vector<at::Tensor> trainable_params(torch::nn::Module& model);
/// Runs the base log's gradient hooks: d metric / d leaves, without accumulating.
void metric_backward(const ModelLog& base, const Metric& metric,
                     const std::vector<at::Tensor>& leaves);

template <class Model>
std::vector<at::Tensor> params_of(Model& model) {
  if constexpr (std::is_same_v<Model, torch::jit::Module>) {
    return trainable_params(model);
  } else {
    return trainable_params(torchlens::detail::module_of(model));
  }
}
} // namespace detail

/// Logs both inputs (the base with every gradient saved), runs the metric's
/// backward on the base, and estimates every site's patching effect.
template <class Model, class Input>
AttributionResult attribution_patch(Model& model, Input clean, Input corrupted,
                                    const AttributionOptions& options) {
  const bool denoise = options.direction() == patching::Direction::denoise;
  const LogOptions plain = LogOptions().seed(options.seed());
  const LogOptions with_grads = LogOptions(plain).save_gradients(SaveSpec::all());
  const ModelLog clean_log = log_forward_pass(model, clean, denoise ? plain : with_grads);
  const ModelLog corrupted_log = log_forward_pass(model, corrupted, denoise ? with_grads : plain);
  detail::metric_backward(denoise ? corrupted_log : clean_log, options.metric(),
                          detail::params_of(model));
  return attribution_patch(clean_log, corrupted_log, options);
}

// ---- integrated gradients ----------------------------------------------------

struct IntegratedGradientsOptions {
  /// Points on the path (midpoint rule).
  TORCH_ARG(std::int64_t, steps) = 32;
  TORCH_ARG(Metric, metric);
  TORCH_ARG(std::uint64_t, seed) = 0;
};

struct IntegratedGradientsResult {
  std::string site;              ///< `input.0` or the op pass
  at::Tensor attribution;        ///< (value − baseline) × mean gradient, the site's shape
  double metric_input = 0;       ///< the metric with the site at its value
  double metric_baseline = 0;    ///< ... at the baseline's value
  double total = 0;              ///< Σ attribution
  double completeness_error = 0; ///< |total − (metric_input − metric_baseline)|
  friend std::ostream& operator<<(std::ostream& os, const IntegratedGradientsResult& r);
};

namespace detail {
/// Integrated gradients along the path, with `metric_at(point)` giving the
/// (differentiable) metric when the site holds `point`.
IntegratedGradientsResult integrate(const std::string& site, const at::Tensor& value,
                                    const at::Tensor& baseline,
                                    const std::function<at::Tensor(const at::Tensor&)>& metric_at,
                                    const IntegratedGradientsOptions& options);
/// The label of the one op pass a site selects on a log (throws otherwise).
std::string single_label(const Site& site, const ModelLog& reference);
/// The tensors of a forward() result, in output order.
std::vector<at::Tensor> output_tensors(const c10::IValue& out);
} // namespace detail

/// For a model input (a forward taking one tensor): baseline → input.
template <class Model>
IntegratedGradientsResult integrated_gradients(Model& model, const at::Tensor& input,
                                               const at::Tensor& baseline,
                                               const IntegratedGradientsOptions& options) {
  TORCHLENS_CHECK(input.sizes() == baseline.sizes(),
                  "integrated_gradients: the baseline's shape differs from the input's");
  auto metric_at = [&](const at::Tensor& point) {
    torch::manual_seed(options.seed());
    c10::IValue out;
    if constexpr (std::is_same_v<Model, torch::jit::Module>) {
      out = model.forward({point});
    } else {
      out = torchlens::detail::to_ivalue(torchlens::detail::call_forward(model, point));
    }
    return options.metric()(detail::output_tensors(out).at(0));
  };
  return detail::integrate("input.0", input, baseline, metric_at, options);
}

/// For an intermediate op pass: the site (a label or module selector naming one
/// op pass of an out-of-place op) is moved from its value in the baseline
/// input's run to its value in the input's run, by the live intervention
/// engine; everything else is computed from `input`.
template <class Model>
IntegratedGradientsResult integrated_gradients(Model& model, const at::Tensor& input,
                                               const at::Tensor& baseline, const Site& site,
                                               const IntegratedGradientsOptions& options) {
  const LogOptions log_options = LogOptions().seed(options.seed());
  const ModelLog ref = log_forward_pass(model, input, log_options);
  const ModelLog base = log_forward_pass(model, baseline, log_options);
  const std::string label = detail::single_label(site, ref);
  const at::Tensor value = ref[label].activation().detach();
  const at::Tensor start = base[label].activation().detach();
  auto metric_at = [&](const at::Tensor& point) {
    torch::manual_seed(options.seed());
    const Interventions spec =
        Interventions().at(sel::label(label), replace_with(point)).resolve(ref);
    c10::IValue out;
    if constexpr (std::is_same_v<Model, torch::jit::Module>) {
      out = run_with_interventions(model, std::vector<c10::IValue>{input}, spec);
    } else {
      out = run_with_interventions(model, input, spec);
    }
    return options.metric()(detail::output_tensors(out).at(0));
  };
  return detail::integrate(label, value, start, metric_at, options);
}

} // namespace torchlens::attribution
