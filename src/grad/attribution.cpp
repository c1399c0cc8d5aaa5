// Attribution patching and integrated gradients (torchlens/intervene/attribution.hpp)
// on the log's saved gradients.

#include <torchlens/intervene/attribution.hpp>

#include "../capture/recorder.hpp"
#include "../io/csv.hpp"

#include <torchlens/torch_error.hpp>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <boost/range/iterator_range.hpp>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <unordered_map>

namespace torchlens::attribution {

namespace detail {

std::vector<at::Tensor> trainable_params(torch::jit::Module& model) {
  std::vector<at::Tensor> out;
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::vector<at::Tensor> trainable_params(torch::nn::Module& model) {
  std::vector<at::Tensor> out;
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::vector<at::Tensor> output_tensors(const c10::IValue& out) {
  std::vector<at::Tensor> tensors;
  torchlens::detail::flatten_outputs(out, tensors);
  return tensors;
}

void metric_backward(const ModelLog& base, const Metric& metric,
                     const std::vector<at::Tensor>& leaves) {
  TORCHLENS_CHECK(static_cast<bool>(metric), "attribution needs a metric");
  const auto returned = base.returned();
  TORCHLENS_CHECK(!returned.empty(),
                  "attribution patching needs the base log's output: log it "
                  "with save_gradients(SaveSpec::all())");
  const at::Tensor m = metric(returned[0]);
  TORCHLENS_CHECK(m.numel() == 1 && m.requires_grad(),
                  "the attribution metric must be a differentiable scalar of the output");
  // Against the parameters (not backward()): every interior node runs, so the
  // log's hooks see every site, and the caller's .grad is left alone.
  TORCHLENS_CHECK(!leaves.empty(), "attribution patching needs parameters that require grad");
  (void)torch::autograd::grad({m}, leaves, {}, /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
}

std::string single_label(const Site& site, const ModelLog& reference) {
  std::vector<std::size_t> ids;
  if (const auto* live = std::get_if<LiveSelector>(&site.selector())) {
    ids = LabelSelector(live->node()).resolve(reference);
  } else if (const auto* label = std::get_if<LabelSelector>(&site.selector())) {
    ids = label->resolve(reference);
  } else {
    TORCHLENS_CHECK(false, "integrated gradients take an op pass, not an edge: ", site.describe());
  }
  TORCHLENS_CHECK(ids.size() == 1, "integrated gradients need a site naming one op pass; ",
                  site.describe(), " selects ", ids.size());
  const ModelGraph& g = reference.graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].id == ids.front()) return g[v].label();
  }
  TORCHLENS_CHECK(false, "site ", site.describe(), " resolved to no layer");
  return {};
}

IntegratedGradientsResult integrate(const std::string& site, const at::Tensor& value,
                                    const at::Tensor& baseline,
                                    const std::function<at::Tensor(const at::Tensor&)>& metric_at,
                                    const IntegratedGradientsOptions& options) {
  TORCHLENS_CHECK(static_cast<bool>(options.metric()), "integrated_gradients needs a metric");
  TORCHLENS_CHECK(options.steps() >= 1, "integrated_gradients needs at least one step");
  TORCHLENS_CHECK(value.sizes() == baseline.sizes(), "integrated_gradients: the baseline of ", site,
                  " has shape ", baseline.sizes(), ", the value ", value.sizes());
  const at::Tensor x = value.detach(), b = baseline.detach().to(x.scalar_type());
  at::Tensor sum = at::zeros_like(x);
  const auto n = options.steps();
  for (std::int64_t k = 0; k < n; ++k) {
    const double alpha = (static_cast<double>(k) + 0.5) / static_cast<double>(n);
    const at::Tensor point = (b + alpha * (x - b)).detach().requires_grad_(true);
    const at::Tensor m = metric_at(point);
    TORCHLENS_CHECK(m.numel() == 1, "the integrated-gradients metric must be a scalar");
    auto g = torch::autograd::grad({m}, {point}, {}, false, false, /*allow_unused=*/true);
    TORCHLENS_CHECK(g[0].defined(), "the metric does not depend on ", site,
                    " (an in-place op's value cannot be moved with gradients: pick its parent)");
    sum += g[0];
  }
  IntegratedGradientsResult r;
  r.site = site;
  r.attribution = (x - b) * sum / static_cast<double>(n);
  {
    at::NoGradGuard no_grad;
    r.metric_input = metric_at(x).item<double>();
    r.metric_baseline = metric_at(b).item<double>();
  }
  r.total = r.attribution.sum().item<double>();
  r.completeness_error = std::abs(r.total - (r.metric_input - r.metric_baseline));
  return r;
}

} // namespace detail

AttributionResult attribution_patch(const ModelLog& clean, const ModelLog& corrupted,
                                    const AttributionOptions& options) {
  TORCHLENS_CHECK(static_cast<bool>(options.metric()), "attribution_patch needs a metric");
  TORCHLENS_CHECK(!options.sites().empty(), "attribution_patch needs at least one site");
  const bool denoise = options.direction() == patching::Direction::denoise;
  const ModelLog& base = denoise ? corrupted : clean;
  const ModelLog& donor = denoise ? clean : corrupted;
  TORCHLENS_CHECK(base.tracks_gradients() && !base.gradient_layers().empty(),
                  "attribution_patch needs the metric's gradients in the ",
                  denoise ? "corrupted" : "clean",
                  " log: log it with save_gradients(SaveSpec::all()) and run backward from "
                  "the metric of its returned output");
  AttributionResult result;
  {
    at::NoGradGuard no_grad;
    result.clean_metric = options
                              .metric()(clean.returned().empty() ? clean["output.0"].activation()
                                                                 : clean.returned()[0])
                              .item<double>();
    result.corrupted_metric =
        options
            .metric()(corrupted.returned().empty() ? corrupted["output.0"].activation()
                                                   : corrupted.returned()[0])
            .item<double>();
  }
  const double span = result.clean_metric - result.corrupted_metric;
  const ModelGraph& g = base.graph();
  std::unordered_map<std::size_t, Vertex> vertex_of;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) vertex_of[g[v].id] = v;
  std::unordered_map<std::size_t, Vertex> donor_vertex;
  for (Vertex v : boost::make_iterator_range(boost::vertices(donor.graph()))) {
    donor_vertex[donor.graph()[v].id] = v;
  }
  for (const Site& site : options.sites()) {
    std::vector<std::size_t> ids;
    if (const auto* live = std::get_if<LiveSelector>(&site.selector())) {
      ids = LabelSelector(live->node()).resolve(base);
    } else if (const auto* label = std::get_if<LabelSelector>(&site.selector())) {
      ids = label->resolve(base);
    } else {
      TORCHLENS_CHECK(false, "attribution patching takes op passes, not edges: ", site.describe());
    }
    for (std::size_t id : ids) {
      const Vertex v = vertex_of.at(id);
      AttributionRow row;
      row.site = site.describe();
      row.label = g[v].label();
      const at::Tensor grad = base.gradient(v);
      auto dv = donor_vertex.find(id);
      TORCHLENS_CHECK(dv != donor_vertex.end(), "the two logs differ: ", row.label,
                      " is not in the ", denoise ? "clean" : "corrupted", " log");
      const at::Tensor& a = base.activation(v);
      const at::Tensor& d = donor.activation(dv->second);
      TORCHLENS_CHECK(a.defined() && d.defined(), "attribution patching needs the activation of ",
                      row.label, " in both logs");
      if (grad.defined()) {
        at::NoGradGuard no_grad;
        row.estimate =
            (grad * (d.detach() - a.detach()).to(grad.scalar_type())).sum().item<double>();
      }
      // activation patching's normalisation: (metric − corrupted) / (clean − corrupted)
      const double m = (denoise ? result.corrupted_metric : result.clean_metric) + row.estimate;
      row.effect = span == 0 ? std::nan("") : (m - result.corrupted_metric) / span;
      result.rows.push_back(std::move(row));
    }
  }
  return result;
}

void AttributionResult::to_csv(const std::string& path) const {
  std::ofstream f(path);
  TORCHLENS_CHECK(static_cast<bool>(f), "cannot write ", path);
  f << "site,label,estimate,effect\n" << std::setprecision(9);
  for (const auto& r : rows) {
    f << io::csv_text(r.site) << ',' << io::csv_text(r.label) << ',' << r.estimate << ','
      << r.effect << '\n';
  }
}

std::ostream& operator<<(std::ostream& os, const AttributionResult& r) {
  os << "attribution patching: clean metric " << r.clean_metric << ", corrupted "
     << r.corrupted_metric << "\n";
  os << std::left << std::setw(28) << "layer" << std::right << std::setw(14) << "estimate"
     << std::setw(10) << "effect"
     << "\n";
  for (const auto& row : r.rows) {
    os << std::left << std::setw(28) << row.label << std::right << std::setw(14) << row.estimate
       << std::setw(10) << std::fixed << std::setprecision(3) << row.effect << std::defaultfloat
       << std::setprecision(6) << "\n";
  }
  return os;
}

std::ostream& operator<<(std::ostream& os, const IntegratedGradientsResult& r) {
  return os << "integrated gradients at " << r.site << ": total " << r.total << ", metric "
            << r.metric_input << " (baseline " << r.metric_baseline << "), completeness error "
            << r.completeness_error;
}

} // namespace torchlens::attribution
