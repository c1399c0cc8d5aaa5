// The lean live engine (docs/interventions.md, "Lean live"): run_with_interventions
// that finds only the spec's sites, by operator occurrence, without building the
// graph. On small models it equals the full live engine (the capture applying
// the spec) bit for bit, replay's output, and the change computed by hand; a run
// that is not the reference's op stream (another input shape, a branch that went
// another way, an edge whose argument changed) is refused naming the site.

#include <torchlens/intervene.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include <support/errors.hpp>
#include "support/doctest.hpp"

#include <functional>
#include <string>
#include <vector>

namespace tl = torchlens;
using namespace tl::sel;

namespace {

// An in-place op (relu_), a multi-output op (var_mean), a Tensor[] op (split),
// a loop (matmul and tanh three times) and a residual sum.
constexpr const char* kToy = R"JIT(
def forward(self, x):
    h = torch.matmul(x, self.w1)
    h.relu_()
    v, mu = torch.var_mean(h, [1], True, True)
    a = (h - mu) / (v + 1.0)
    p, q = torch.split(a, 3, 1)
    g = torch.cat([q, p], 1)
    for i in range(3):
        g = torch.tanh(torch.matmul(g, self.w2))
    return g + a
)JIT";

torch::jit::Module toy() {
  torch::manual_seed(3);
  torch::jit::Module m("Toy");
  m.register_parameter("w1", torch::randn({6, 6}) * 0.5, false);
  m.register_parameter("w2", torch::randn({6, 6}) * 0.5, false);
  m.define(kToy);
  m.eval();
  return m;
}

/// The toy's forward in plain C++; `at(point, value)` may change the value at
/// "relu", "mean" (var_mean's second output), "q" (split's second part) and
/// "tanh3" (the loop's last tanh).
at::Tensor toy_by_hand(const torch::jit::Module& m, const at::Tensor& x,
                       const std::function<at::Tensor(const std::string&, at::Tensor)>& at) {
  torch::NoGradGuard no_grad;
  const at::Tensor w1 = m.attr("w1").toTensor(), w2 = m.attr("w2").toTensor();
  const at::Tensor h = at("relu", x.matmul(w1).relu());
  auto [v, mu] = torch::var_mean(h, {1}, true, true);
  mu = at("mean", mu);
  const at::Tensor a = (h - mu) / (v + 1.0);
  const auto parts = torch::split(a, 3, 1);
  at::Tensor g = torch::cat({at("q", parts[1]), parts[0]}, 1);
  for (int i = 0; i < 3; ++i) {
    g = torch::tanh(g.matmul(w2));
    if (i == 2) g = at("tanh3", g);
  }
  return g + a;
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && torch::equal(a, b);
}

using torchlens::test::error_of;

/// The `nth` layer pass of `type` (and of output `output_index`), by label.
std::string nth_of(const tl::ModelLog& log, const std::string& type, int nth = 0,
                   int output_index = -1) {
  for (auto layer : log) {
    if (layer->layer_type != type) continue;
    if (output_index >= 0 && layer->output_index != output_index) continue;
    if (nth-- == 0) return layer.label();
  }
  FAIL("no layer pass of type " << type);
  return "";
}

at::Tensor run(torch::jit::Module& m, const at::Tensor& x, const tl::Interventions& spec,
               tl::LiveMode mode) {
  return tl::run_with_interventions(m, {x}, spec, mode).toTensor();
}

} // namespace

TEST_CASE("lean live equals the full live engine, replay and the hand computation") {
  torch::jit::Module m = toy();
  const at::Tensor x = torch::randn({2, 6});
  const tl::ModelLog ref = tl::log_forward_pass(m, {x}, tl::LogOptions().keep_replay(true).seed(0));
  const std::string matmul = nth_of(ref, "matmul", 0);
  const std::string relu = nth_of(ref, "relu", 0);
  const std::string mean = nth_of(ref, "varmean", 0, 1);
  const std::string q = nth_of(ref, "split", 0, 1);
  const std::string tanh1 = nth_of(ref, "tanh", 0);
  const std::string tanh3 = nth_of(ref, "tanh", 2);
  const std::string sub = nth_of(ref, "sub", 0);
  CHECK(ref[relu]->op_name == "aten::relu_");
  CHECK(ref[mean]->num_outputs == 2);
  CHECK(ref[q]->num_outputs == 2);
  CHECK(tanh3.find(":3") != std::string::npos);
  const std::string tanh_layer = tanh3.substr(0, tanh3.find(':'));
  MESSAGE("sites " << matmul << " " << relu << " " << mean << " " << q << " " << tanh3 << " "
                   << sub);

  torch::manual_seed(11);
  const at::Tensor replacement = torch::randn(ref[tanh3].activation().sizes());
  struct Case {
    std::string name;
    tl::Interventions spec;
  };
  std::vector<Case> cases = {
      {"zero", tl::Interventions().at(label(matmul), tl::zero_ablate())},
      {"scale, in place", tl::Interventions().at(label(relu), tl::scale(0.5))},
      {"clamp, second output",
       tl::Interventions().at(label(mean),
                              tl::clamp(tl::ClampOptions().set_min(0.1).set_max(0.2)))},
      {"noise, Tensor[] second output", tl::Interventions().at(label(q), tl::noise(0.3, 5))},
      {"replace, loop pass 3",
       tl::Interventions().at(label(tanh_layer + ":3"), tl::replace_with(replacement))},
      {"region", tl::Interventions().at(tl::Site(label(relu)).at_index(1, 2), tl::zero_ablate())},
      {"edge", tl::Interventions().at(edge(relu, sub), tl::scale(-1.0))},
      {"edge from the input", tl::Interventions().at(edge("input.0", matmul), tl::scale(0.5))},
      {"input", tl::Interventions().at(label("input.0"), tl::scale(0.5))},
      {"two occurrences of one operator",
       tl::Interventions().at(label(tanh1), tl::scale(2.0)).at(label(tanh3), tl::scale(-1.0))},
      {"every pass of a loop layer", tl::Interventions().at(label(tanh_layer), tl::scale(0.9))},
      {"several entries on one site",
       tl::Interventions()
           .at(label(relu), tl::scale(3.0))
           .at(label(relu), tl::noise(0.1, 2))
           .at(label(relu), tl::clamp(tl::ClampOptions().set_max(1)))},
      {"user code sees the site's id and op",
       tl::Interventions().at(label(q), tl::call([](const at::Tensor& v, const tl::HookContext& c) {
                                return v + static_cast<double>(c.id) +
                                       static_cast<double>(c.op_name.size());
                              }))},
      {"patch_from", tl::Interventions().at(label(mean), tl::patch_from(ref))},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const tl::Interventions spec = c.spec.resolve(ref);
    REQUIRE(tl::lean_unavailable(spec) == "");
    const std::int64_t runs = tl::detail::lean_runs();
    const at::Tensor lean = run(m, x, spec, tl::LiveMode::lean);
    CHECK(tl::detail::lean_runs() == runs + 1);
    const at::Tensor automatic = run(m, x, spec, tl::LiveMode::automatic);
    CHECK(tl::detail::lean_runs() == runs + 2); // automatic chose the lean mode
    const at::Tensor full = run(m, x, spec, tl::LiveMode::full);
    CHECK(tl::detail::lean_runs() == runs + 2);
    CHECK(same(lean, full));
    CHECK(same(automatic, full));
    CHECK(same(lean, tl::replay(ref, spec)["output.0"].activation()));
    // it changed something (the patch from the reference itself changes nothing)
    if (c.name != "patch_from") CHECK_FALSE(same(lean, ref["output.0"].activation()));
  }
  // the caller's input is not touched by an input site
  const at::Tensor x0 = x.clone();
  (void)run(m, x, tl::Interventions().at(label("input.0"), tl::scale(0.5)).resolve(ref),
            tl::LiveMode::lean);
  CHECK(same(x, x0));

  SUBCASE("against the toy written out in C++") {
    const auto none = [](const std::string&, at::Tensor v) { return v; };
    CHECK(torch::allclose(toy_by_hand(m, x, none), ref["output.0"].activation(), 1e-5, 1e-6));
    const auto lean = [&](const tl::Interventions& s) {
      return run(m, x, s.resolve(ref), tl::LiveMode::lean);
    };
    CHECK(torch::allclose(
        lean(tl::Interventions().at(label(relu), tl::scale(0.5))),
        toy_by_hand(m, x,
                    [](const std::string& at, at::Tensor v) { return at == "relu" ? v * 0.5 : v; }),
        1e-5, 1e-6));
    CHECK(torch::allclose(lean(tl::Interventions().at(label(mean), tl::zero_ablate())),
                          toy_by_hand(m, x,
                                      [](const std::string& at, at::Tensor v) {
                                        return at == "mean" ? torch::zeros_like(v) : v;
                                      }),
                          1e-5, 1e-6));
    CHECK(torch::allclose(
        lean(tl::Interventions().at(tl::Site(label(q)).at_index(1, 0), tl::scale(-2.0))),
        toy_by_hand(m, x,
                    [](const std::string& at, at::Tensor v) {
                      if (at != "q") return v;
                      v = v.clone();
                      v.select(1, 0).mul_(-2.0);
                      return v;
                    }),
        1e-5, 1e-6));
    CHECK(torch::allclose(
        lean(tl::Interventions().at(label(tanh_layer + ":3"), tl::replace_with(replacement))),
        toy_by_hand(
            m, x,
            [&](const std::string& at, at::Tensor v) { return at == "tanh3" ? replacement : v; }),
        1e-5, 1e-6));
    // an input site is the model run on the changed input
    CHECK(same(lean(tl::Interventions().at(label("input.0"), tl::scale(0.5))),
               run(m, x * 0.5, tl::Interventions().at(label(relu), tl::scale(1.0)).resolve(ref),
                   tl::LiveMode::lean)));
    CHECK(torch::allclose(lean(tl::Interventions().at(label("input.0"), tl::scale(0.5))),
                          toy_by_hand(m, x * 0.5, none), 1e-5, 1e-6));
  }
}

TEST_CASE("lean live: which specs it takes, and the full engine for the rest") {
  torch::jit::Module m = toy();
  const at::Tensor x = torch::randn({2, 6});
  const tl::ModelLog ref = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
  const std::string relu = nth_of(ref, "relu", 0);
  const std::string tanh1 = nth_of(ref, "tanh", 0);
  const std::vector<std::pair<tl::Interventions, std::string>> refused = {
      {tl::Interventions().at(func("relu"), tl::zero_ablate()), "not resolved"},
      {tl::Interventions().at(func("relu"), tl::zero_ablate()).resolve(ref), "live facts"},
      {tl::Interventions().at(label(tanh1), tl::take_from(relu)).resolve(ref), "reads another"},
      // extended after resolve: the plan no longer covers the spec
      {tl::Interventions()
           .at(label(relu), tl::scale(2.0))
           .resolve(ref)
           .at(label(relu), tl::scale(2.0))
           .resolve(ref),
       ""},
  };
  for (const auto& [spec, why] : refused) {
    CAPTURE(spec.describe());
    if (why.empty()) { // resolving again makes a fresh plan
      CHECK(tl::lean_unavailable(spec) == "");
      continue;
    }
    CHECK(tl::lean_unavailable(spec).find(why) != std::string::npos);
    CHECK(error_of([&] { (void)run(m, x, spec, tl::LiveMode::lean); }).find(why) !=
          std::string::npos);
    // automatic mode runs them in the full engine
    const std::int64_t runs = tl::detail::lean_runs();
    const at::Tensor automatic = run(m, x, spec, tl::LiveMode::automatic);
    CHECK(tl::detail::lean_runs() == runs);
    CHECK(same(automatic, run(m, x, spec, tl::LiveMode::full)));
  }
  const auto extended = tl::Interventions()
                            .at(label(relu), tl::scale(2.0))
                            .resolve(ref)
                            .at(func("tanh"), tl::scale(2.0));
  CHECK(tl::lean_unavailable(extended).find("not resolved") != std::string::npos);
}

TEST_CASE("lean live leaves a reference with a tensor literal to the full engine") {
  // the literal's op is logged as aten::tensor: its real operator, which the
  // occurrences count, is unknown
  torch::jit::Module m("Literal");
  m.define(R"JIT(
def forward(self, x):
    t = torch.tensor([1.0, 2.0, 3.0])
    return torch.relu(x) * t
)JIT");
  const at::Tensor x = torch::randn({2, 3});
  const tl::ModelLog ref = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
  bool literal = false;
  for (auto layer : ref) literal = literal || layer->op_name == "aten::tensor";
  REQUIRE(literal);
  const auto spec =
      tl::Interventions().at(label(nth_of(ref, "relu", 0)), tl::scale(2.0)).resolve(ref);
  CHECK(tl::lean_unavailable(spec).find("tensor literal") != std::string::npos);
  const std::int64_t runs = tl::detail::lean_runs();
  const at::Tensor out = run(m, x, spec, tl::LiveMode::automatic);
  CHECK(tl::detail::lean_runs() == runs);
  torch::NoGradGuard no_grad;
  CHECK(torch::allclose(out, torch::relu(x) * 2.0 * torch::tensor({1.0F, 2.0F, 3.0F})));
}

TEST_CASE("lean live refuses a run that is not the reference's op stream, naming the site") {
  SUBCASE("another input shape") {
    torch::jit::Module m = toy();
    const at::Tensor x = torch::randn({2, 6});
    const tl::ModelLog ref = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
    const std::string relu = nth_of(ref, "relu", 0);
    const auto spec = tl::Interventions().at(label(relu), tl::zero_ablate()).resolve(ref);
    const std::string msg = error_of([&] {
      (void)run(m, torch::randn({3, 6}), spec, tl::LiveMode::automatic);
    });
    CHECK(msg.find(relu) != std::string::npos);
    CHECK(msg.find("[2, 6]") != std::string::npos);
    CHECK(msg.find("[3, 6]") != std::string::npos);
    CHECK(msg.find("not the reference's op stream") != std::string::npos);
    const auto on_input = tl::Interventions().at(label("input.0"), tl::zero_ablate()).resolve(ref);
    const std::string in_msg = error_of([&] {
      (void)run(m, torch::randn({3, 6}), on_input, tl::LiveMode::lean);
    });
    CHECK(in_msg.find("input.0") != std::string::npos);
    CHECK(in_msg.find("[3, 6]") != std::string::npos);
    // nothing was left installed: captures and plain runs work as before
    const tl::ModelLog again = tl::log_forward_pass(m, {x}, tl::LogOptions().seed(0));
    CHECK(same(again["output.0"].activation(), ref["output.0"].activation()));
    CHECK(same(m.forward({x}).toTensor(), ref["output.0"].activation()));
  }

  torch::jit::Module branchy("Branchy");
  branchy.define(R"JIT(
def forward(self, x):
    a = torch.exp(x)
    b = torch.sigmoid(x)
    if bool(x.sum() > 0):
        a = torch.tanh(a)
        y = torch.add(a, b)
    else:
        y = torch.add(b, a)
    return torch.tanh(y * 2.0)
)JIT");
  const at::Tensor neg = -torch::rand({2, 3}) - 0.1; // the else branch
  const at::Tensor pos = torch::rand({2, 3}) + 0.1;  // the if branch: one tanh more
  const tl::ModelLog ref = tl::log_forward_pass(branchy, {neg}, tl::LogOptions().seed(0));

  SUBCASE("a branch that runs the site's operator once more") {
    const std::string last_tanh = nth_of(ref, "tanh", 0);
    const auto spec = tl::Interventions().at(label(last_tanh), tl::scale(3.0)).resolve(ref);
    CHECK(same(run(branchy, neg, spec, tl::LiveMode::lean),
               run(branchy, neg, spec, tl::LiveMode::full)));
    const std::string msg = error_of([&] { (void)run(branchy, pos, spec, tl::LiveMode::lean); });
    CHECK(msg.find("aten::tanh 2 times where the reference log has it 1 times") !=
          std::string::npos);
  }
  SUBCASE("an edge whose argument is another value in this run") {
    const std::string exp = nth_of(ref, "exp", 0);
    const std::string add = nth_of(ref, "add", 0);
    const auto spec = tl::Interventions().at(edge(exp, add), tl::scale(3.0)).resolve(ref);
    CHECK(same(run(branchy, neg, spec, tl::LiveMode::lean),
               run(branchy, neg, spec, tl::LiveMode::full)));
    CHECK_FALSE(same(run(branchy, neg, spec, tl::LiveMode::lean), ref["output.0"].activation()));
    const std::string msg = error_of([&] { (void)run(branchy, pos, spec, tl::LiveMode::lean); });
    CHECK(msg.find("the edge site " + exp + " -> " + add) != std::string::npos);
    CHECK(msg.find("is not the value") != std::string::npos);
  }
}

TEST_CASE(
    "lean live on C++-frontend models (a driven Sequential, a module) equals the full engine") {
  torch::manual_seed(4);
  torch::nn::Sequential seq(torch::nn::Linear(5, 6), torch::nn::ReLU(), torch::nn::Linear(6, 2));
  const at::Tensor x = torch::randn({3, 5});
  const tl::ModelLog ref = tl::log_forward_pass(seq, x, tl::LogOptions().keep_replay(true));
  const std::string relu = nth_of(ref, "relu", 0);
  const std::string fc2 = nth_of(ref, "addmm", 1);
  for (const auto& spec :
       {tl::Interventions().at(label(relu), tl::scale(-1.0)),
        tl::Interventions().at(edge(relu, fc2), tl::zero_ablate()),
        tl::Interventions().at(module("0"), tl::clamp(tl::ClampOptions().set_min(0)))}) {
    CAPTURE(spec.describe());
    const tl::Interventions resolved = spec.resolve(ref);
    const at::Tensor lean =
        tl::run_with_interventions(seq, x, resolved, tl::LiveMode::lean).toTensor();
    const at::Tensor full =
        tl::run_with_interventions(seq, x, resolved, tl::LiveMode::full).toTensor();
    CHECK(same(lean, full));
    CHECK(same(lean, tl::replay(ref, resolved)["output.0"].activation()));
  }
  torch::NoGradGuard no_grad;
  const at::Tensor by_hand = seq[2]->as<torch::nn::Linear>()->forward(
      -torch::relu(seq[0]->as<torch::nn::Linear>()->forward(x)));
  CHECK(torch::allclose(
      tl::run_with_interventions(seq, x,
                                 tl::Interventions().at(label(relu), tl::scale(-1.0)).resolve(ref),
                                 tl::LiveMode::lean)
          .toTensor(),
      by_hand));
}
