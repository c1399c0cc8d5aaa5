// Every built-in action on real models nobody here wrote (torchvision's
// resnet18, PyTorch's TransformerEncoder and LSTM, exported to TorchScript with
// random weights by scripts/export_torchvision.py): the live engine (a rerun
// with the spec applied in the capture, and run_with_interventions without a
// log) and the replay engine agree at every layer, and the site holds what
// the action computes from the reference's value by plain torch ops.

#include <torchlens/intervene.hpp>
#include <torchlens/io/model_file.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace tl = torchlens;
using namespace tl::sel;

namespace {

struct Export {
  torch::jit::Module model;
  at::Tensor x;
};

Export load(const std::string& name) {
  const char* dir = std::getenv("TORCHLENS_INTERVENE_MODELS");
  REQUIRE_MESSAGE(dir != nullptr,
                  "TORCHLENS_INTERVENE_MODELS is not set (tests/intervene/meson.build)");
  Export e;
  e.model = tl::io::load_torchscript(std::string(dir) + "/" + name + ".pt");
  e.model.eval();
  e.x = tl::io::load_torchscript(std::string(dir) + "/" + name + ".ref.pt").attr("x").toTensor();
  return e;
}

/// A float op pass near the middle of the graph, of the first preferred type
/// present (the first return of multi-output ops: the one output.0 depends
/// on); its feature dimension is 1 for images, the last one otherwise.
std::string middle_site(const tl::ModelLog& log) {
  for (const std::string type : {"relu", "lstm", "gelu", "add"}) {
    std::vector<std::string> found;
    for (auto layer : log) {
      if (layer->layer_type == type && layer->dtype == "float32" && layer->shape.size() >= 2 &&
          layer->output_index == 0 && layer.has_activation()) {
        found.push_back(layer.label());
      }
    }
    if (!found.empty()) return found[found.size() / 2];
  }
  FAIL("no site");
  return "";
}

/// The earliest op pass before `site` with the same shape (take_from's donor site).
std::string earlier_same_shape(const tl::ModelLog& log, const std::string& site) {
  const auto& target = log[site];
  for (auto layer : log) {
    if (layer->id >= target->id) break;
    if (layer->kind == tl::NodeKind::op && layer->shape == target->shape &&
        layer->dtype == target->dtype) {
      return layer.label();
    }
  }
  return "";
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

at::Tensor along(const at::Tensor& dir, const at::Tensor& value, std::int64_t dim) {
  std::vector<std::int64_t> shape(static_cast<std::size_t>(value.dim()), 1);
  shape[static_cast<std::size_t>(dim)] = value.size(dim);
  return dir.reshape(shape);
}

void check_model(const std::string& name) {
  CAPTURE(name);
  Export e = load(name);
  const std::vector<c10::IValue> inputs{e.x};
  const tl::LogOptions options = tl::LogOptions().keep_replay(true).seed(0);
  const tl::ModelLog ref = tl::log_forward_pass(e.model, inputs, options);
  const tl::ModelLog donor = tl::log_forward_pass(e.model, {e.x.flip(0) * 0.5}, options);
  const std::string site = middle_site(ref);
  // take_from / add_delta_from need an earlier site of the same shape (none in the LSTM)
  const std::string earlier = earlier_same_shape(ref, site);
  const at::Tensor v = ref[site].activation();
  const std::int64_t fd = v.dim() == 4 ? 1 : v.dim() - 1;
  torch::manual_seed(1);
  const at::Tensor dir = torch::randn({v.size(fd)});
  const at::Tensor u = along(dir / dir.norm(), v, fd);
  const at::Tensor mean = donor[site].activation().mean(0); // of another set than x
  const at::Tensor replacement = torch::randn(v.sizes());
  MESSAGE(name << ": site " << site << " " << v.sizes() << ", take_from " << earlier);

  struct Case {
    std::string name;
    tl::Action action;
    std::function<at::Tensor()> hand; // null: checked separately
  };
  const double cap = v.abs().max().item<double>() / 2;
  std::vector<Case> cases = {
      {"zero_ablate", tl::zero_ablate(), [&] { return torch::zeros_like(v); }},
      {"scale", tl::scale(0.5), [&] { return v * 0.5; }},
      {"clamp", tl::clamp(tl::ClampOptions().set_min(-cap).set_max(cap)),
       [&] { return v.clamp(-cap, cap); }},
      {"noise", tl::noise(0.1, 7), nullptr},
      {"steer", tl::steer(dir, 3.0, fd), [&] { return v + along(dir, v, fd) * 3.0; }},
      {"project_onto", tl::project_onto(dir, fd), [&] { return (v * u).sum(fd, true) * u; }},
      {"project_off", tl::project_off(dir, fd), [&] { return v - (v * u).sum(fd, true) * u; }},
      {"replace_with", tl::replace_with(replacement), [&] { return replacement; }},
      {"mean_ablate", tl::mean_ablate(mean), [&] { return mean.unsqueeze(0).expand_as(v); }},
      {"resample_ablate", tl::resample_ablate(v, 3), nullptr},
      {"patch_from", tl::patch_from(donor), [&] { return donor[site].activation(); }},
  };
  if (!earlier.empty()) {
    cases.push_back(
        {"take_from", tl::take_from(earlier), [&] { return ref[earlier].activation(); }});
    cases.push_back({"add_delta_from", tl::add_delta_from(donor, earlier),
                     [&] { return v + donor[earlier].activation() - ref[earlier].activation(); }});
  }
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const auto spec = tl::Interventions().at(label(site), c.action);
    const tl::ModelLog replayed = tl::replay(ref, spec);
    const tl::InterventionRun rerun = tl::rerun(e.model, inputs, ref, spec);
    CHECK(rerun.note.empty());
    REQUIRE(rerun.log.size() == replayed.size());
    // live (in the capture) == replay, at every layer pass
    std::size_t differing = 0;
    std::string first;
    for (std::size_t i = 0; i < replayed.size(); ++i) {
      const auto a = replayed[static_cast<std::int64_t>(i)];
      const auto b = rerun.log[static_cast<std::int64_t>(i)];
      if (!a.has_activation() || !b.has_activation()) continue;
      if (!same(a.activation(), b.activation())) {
        if (differing++ == 0) first = a.label();
      }
    }
    CHECK_MESSAGE(differing == 0, differing << " layers differ, first " << first);
    // live without a log returns the same output
    const c10::IValue out = tl::run_with_interventions(e.model, inputs, spec.resolve(ref));
    const at::Tensor out0 =
        out.isTuple() ? out.toTupleRef().elements()[0].toTensor() : out.toTensor();
    CHECK(same(out0, replayed["output.0"].activation()));
    // the site holds what the action computes
    const at::Tensor got = replayed[site].activation();
    if (c.hand) {
      CHECK(torch::allclose(got, c.hand(), 1e-5, 1e-5));
    } else if (c.name == "noise") {
      CHECK(torch::allclose(got, v, 0, 0.8));
      CHECK_FALSE(same(got, v));
    } else {
      for (std::int64_t i = 0; i < got.size(0); ++i) {
        bool found = false;
        for (std::int64_t j = 0; j < v.size(0); ++j) found = found || same(got[i], v[j]);
        CHECK(found);
      }
    }
    CHECK(replayed[site]->interventions.size() == 1);
    // the change reached the output
    if (c.name != "resample_ablate") {
      CHECK_FALSE(same(replayed["output.0"].activation(), ref["output.0"].activation()));
    }
  }
  // replay from the input with the reference's own input reproduces it bit for bit
  const tl::ModelLog again =
      tl::replay(ref, tl::Interventions().at(label("input.0"), tl::patch_from(ref)));
  for (auto layer : ref) {
    if (layer.has_activation()) {
      CHECK_MESSAGE(same(again[layer.label()].activation(), layer.activation()), layer.label());
    }
  }
}

/// The lean live engine (run_with_interventions finding only the sites) equals
/// the full live engine bit for bit, and replay, on specs of every kind.
void check_lean(const std::string& name) {
  CAPTURE(name);
  Export e = load(name);
  const std::vector<c10::IValue> inputs{e.x};
  const tl::ModelLog ref =
      tl::log_forward_pass(e.model, inputs, tl::LogOptions().keep_replay(true).seed(0));
  const std::string site = middle_site(ref);
  std::string child, earlier;
  for (const auto& c : ref[site].children()) {
    if (ref[c]->kind == tl::NodeKind::op && child.empty()) child = c;
  }
  for (auto layer : ref) { // an earlier pass of the site's operator
    if (layer->id >= ref[site]->id) break;
    if (layer->op_name == ref[site]->op_name && layer->shape.size() >= 2) earlier = layer.label();
  }
  REQUIRE(!child.empty());
  REQUIRE(!earlier.empty());
  MESSAGE(name << ": lean sites " << site << ", " << earlier << ", edge to " << child);
  const std::vector<std::pair<std::string, tl::Interventions>> specs = {
      {"zero", tl::Interventions().at(label(site), tl::zero_ablate())},
      {"two occurrences",
       tl::Interventions().at(label(earlier), tl::scale(0.5)).at(label(site), tl::scale(-1.0))},
      {"noise", tl::Interventions().at(label(site), tl::noise(0.2, 9))},
      {"region", tl::Interventions().at(tl::Site(label(site)).at_index(-1, 1), tl::zero_ablate())},
      {"edge", tl::Interventions().at(edge(site, child), tl::scale(2.0))},
      {"input", tl::Interventions().at(label("input.0"), tl::scale(0.5))},
  };
  for (const auto& [what, unresolved] : specs) {
    CAPTURE(what);
    const tl::Interventions spec = unresolved.resolve(ref);
    REQUIRE(tl::lean_unavailable(spec) == "");
    const std::int64_t runs = tl::detail::lean_runs();
    const c10::IValue lean = tl::run_with_interventions(e.model, inputs, spec, tl::LiveMode::lean);
    CHECK(tl::detail::lean_runs() == runs + 1);
    const c10::IValue full = tl::run_with_interventions(e.model, inputs, spec, tl::LiveMode::full);
    std::vector<at::Tensor> a, b;
    const auto flat = [](const c10::IValue& v, std::vector<at::Tensor>& out) {
      if (v.isTensor()) {
        out.push_back(v.toTensor());
      } else {
        for (const auto& t : v.toTupleRef().elements()) {
          if (t.isTensor()) out.push_back(t.toTensor());
        }
      }
    };
    flat(lean, a);
    flat(full, b);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(same(a[i], b[i]));
    CHECK(same(a[0], tl::replay(ref, spec)["output.0"].activation()));
    CHECK_FALSE(same(a[0], ref["output.0"].activation()));
  }
}

} // namespace

TEST_CASE("lean live == full live, bit for bit, on resnet18") {
  check_lean("resnet18");
}

TEST_CASE("lean live == full live, bit for bit, on a TransformerEncoder") {
  check_lean("transformer_encoder");
}

TEST_CASE("every action on resnet18: live == replay == rerun == by hand") {
  check_model("resnet18");
}

TEST_CASE("every action on a TransformerEncoder: live == replay == rerun == by hand") {
  check_model("transformer_encoder");
}

TEST_CASE("every action on an LSTM (multi-output op): live == replay == rerun == by hand") {
  check_model("lstm");
}
