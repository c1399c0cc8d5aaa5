// Validation of saved gradients (torchlens/validate/gradients.hpp): each
// layer's saved gradient against the sum, over its children, of the
// vector-Jacobian product of the child re-executed from the saved forward
// values (src/capture/reexecute.hpp) with the child's saved gradient.

#include <torchlens/validate/gradients.hpp>

#include "../capture/reexecute.hpp"
#include "gradient_store.hpp"

#include <torchlens/torch_error.hpp>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <boost/range/iterator_range.hpp>

#include <algorithm>
#include <map>
#include <ostream>
#include <set>
#include <unordered_map>

namespace torchlens {

namespace {

/// The vertices of the op call that made `c` (a multi-output op gives one
/// vertex per output), by output index.
std::map<int, Vertex> call_outputs(const ModelGraph& g,
                                   const std::unordered_map<std::size_t, Vertex>& by_id, Vertex c) {
  std::map<int, Vertex> out{{g[c].output_index, c}};
  auto same_call = [&](Vertex o) {
    return g[o].kind == g[c].kind && g[o].op_name == g[c].op_name &&
           g[o].num_outputs == g[c].num_outputs;
  };
  for (std::size_t id = g[c].id, k = 1; id >= k; ++k) { // earlier outputs
    auto it = by_id.find(id - k);
    if (it == by_id.end() || !same_call(it->second) ||
        g[it->second].output_index >= out.begin()->first) {
      break;
    }
    out.emplace(g[it->second].output_index, it->second);
  }
  for (std::size_t k = 1;; ++k) { // later outputs
    auto it = by_id.find(g[c].id + k);
    if (it == by_id.end() || !same_call(it->second) ||
        g[it->second].output_index <= out.rbegin()->first) {
      break;
    }
    out.emplace(g[it->second].output_index, it->second);
  }
  return out;
}

} // namespace

GradientReport validate_gradients(const ModelLog& log, const GradientValidateOptions& options) {
  TORCHLENS_CHECK(log.replay() != nullptr,
                  "validate_gradients needs the re-execution records: log with "
                  "LogOptions().keep_replay(true)");
  TORCHLENS_CHECK(
      log.tracks_gradients() && log.options().save_gradients().kind() == SaveSpec::Kind::all,
      "validate_gradients needs every gradient: log with "
      "LogOptions().save_gradients(SaveSpec::all()) and run backward first");
  const ModelGraph& g = log.graph();
  const auto& records = log.replay()->by_id;
  std::unordered_map<std::size_t, Vertex> by_id;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) by_id.emplace(g[v].id, v);

  GradientReport report;
  const detail::GeneratorStateGuard generator; // replays restore recorded states
  at::AutoGradMode grad_on(true);
  for (Vertex p : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& pn = g[p];
    if (pn.kind == NodeKind::output) continue; // its producer's gradient
    const at::Tensor saved = log.gradient(p);
    if (!saved.defined()) continue;
    auto skip = [&](std::string why) { report.skipped.push_back({pn.label(), std::move(why), 0}); };
    const at::Tensor& value = log.activation(p);
    if (!value.defined()) {
      skip("activation not saved");
      continue;
    }
    std::set<Vertex> children;
    bool feeds_output = false;
    for (auto e : boost::make_iterator_range(boost::out_edges(p, g))) {
      const Vertex c = boost::target(e, g);
      feeds_output = feeds_output || g[c].kind == NodeKind::output;
      children.insert(c);
    }
    if (feeds_output) {
      skip("feeds a model output: its gradient comes from the loss");
      continue;
    }
    if (children.empty()) {
      skip("no children: its gradient comes from outside the log");
      continue;
    }
    // the parent as a leaf: every edge from it reads this one tensor
    const at::Tensor leaf = value.detach().clone().requires_grad_(true);
    at::Tensor expected = at::zeros_like(saved);
    std::string why_not;
    int vjps = 0;
    std::set<Vertex> calls_done; // a multi-output call is a child once per output
    for (Vertex c : children) {
      const auto outputs = call_outputs(g, by_id, c);
      if (!calls_done.insert(outputs.begin()->second).second) continue;
      const OpNode& cn = g[c];
      if (cn.id >= records.size() || !records[cn.id].op) {
        why_not = "child " + cn.label() + " has no re-execution record";
        break;
      }
      std::map<std::pair<int, int>, at::Tensor> inputs;
      for (auto e : boost::make_iterator_range(boost::in_edges(c, g))) {
        const Vertex src = boost::source(e, g);
        const at::Tensor& a = log.activation(src);
        if (!a.defined()) {
          why_not = "a parent of child " + cn.label() + " was not saved";
          break;
        }
        // the other inputs as fresh leaves that require grad as the originals
        // did: kernels choose paths by it (LibTorch's CPU LSTM does)
        inputs[{g[e].arg_pos, g[e].list_index}] =
            src == p ? leaf : a.detach().requires_grad_(a.requires_grad());
      }
      if (!why_not.empty()) break;
      std::vector<at::Tensor> outs;
      try {
        outs = detail::reexecute(records[cn.id], inputs);
      } catch (const c10::Error& e) {
        std::string msg = e.what_without_backtrace();
        why_not =
            "child " + cn.label() + " cannot be re-executed: " + msg.substr(0, msg.find('\n'));
        break;
      }
      std::vector<at::Tensor> ys, gys;
      for (const auto& [index, o] : outputs) {
        const auto k = static_cast<std::size_t>(index);
        if (k >= outs.size() || !outs[k].defined() || !outs[k].requires_grad()) continue;
        const at::Tensor go = log.gradient(o);
        if (!go.defined()) continue; // an output nothing used: no gradient flows from it
        ys.push_back(outs[k]);
        gys.push_back(go.to(outs[k].scalar_type()));
      }
      ++vjps;
      if (ys.empty()) continue;
      auto grads = torch::autograd::grad(ys, {leaf}, gys, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      if (grads[0].defined()) expected = expected + grads[0];
    }
    if (!why_not.empty()) {
      skip(why_not);
      continue;
    }
    ++report.layers_checked;
    report.vjps += vjps;
    const double scale = std::max(1.0, saved.abs().max().item<double>());
    const at::Tensor diff = (expected - saved).abs();
    const double err = diff.numel() == 0 ? 0.0 : diff.max().item<double>();
    report.max_error = std::max(report.max_error, err);
    const bool ok =
        (diff <= options.atol() * scale + options.rtol() * saved.abs()).all().item<bool>();
    if (!ok) {
      report.valid = false;
      std::string names;
      for (Vertex c : children) names += (names.empty() ? "" : ", ") + g[c].label();
      report.failures.push_back({pn.label(),
                                 "saved gradient differs from the sum over its children's "
                                 "backward (" +
                                     names + ")",
                                 err});
    }
  }
  return report;
}

std::ostream& operator<<(std::ostream& os, const GradientReport& r) {
  os << (r.valid ? "valid" : "INVALID") << ": " << r.layers_checked << " gradients checked ("
     << r.vjps << " child backward products), max error " << r.max_error << ", " << r.skipped.size()
     << " not checkable\n";
  for (const auto& f : r.failures) {
    os << "  " << f.label << ": " << f.detail << " (max error " << f.max_error << ")\n";
  }
  std::size_t shown = 0;
  for (const auto& s : r.skipped) {
    if (++shown > 8) {
      os << "  ... and " << r.skipped.size() - 8 << " more not checked\n";
      break;
    }
    os << "  not checked: " << s.label << ": " << s.detail << "\n";
  }
  return os;
}

} // namespace torchlens
