// Interventions on small models whose changed forward pass is written out by
// hand in each test: live, replay and rerun must each equal that independent
// computation. Also edges, in-place ops, donors, recurrence, randomness, branch
// divergence, persistence and activation patching (docs/interventions.md).

#include <torchlens/intervene.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include <support/errors.hpp>
#include "support/doctest.hpp"

#include <boost/property_tree/json_parser.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tl = torchlens;
using namespace tl::sel;
namespace fs = std::filesystem;

namespace {

// out = fc3(a + fc2(a)), a = relu(fc1(x)): `a` has two consumers
struct ResidualImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  ResidualImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 4));
    fc2 = register_module("fc2", torch::nn::Linear(4, 4));
    fc3 = register_module("fc3", torch::nn::Linear(4, 3));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor a = torch::relu(fc1(x));
    return fc3(a + fc2(a));
  }
};
TORCH_MODULE(Residual);

// C++ callers ignore the return of in-place ops
struct InplaceImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  InplaceImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 4));
    fc2 = register_module("fc2", torch::nn::Linear(4, 2));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = fc1(x);
    h.relu_();
    h.mul_(2);
    return fc2(h);
  }
};
TORCH_MODULE(Inplace);

// the same linear layer three times: one layer, three passes
struct LoopImpl : torch::nn::Module {
  torch::nn::Linear fc{nullptr};
  LoopImpl() { fc = register_module("fc", torch::nn::Linear(4, 4)); }
  at::Tensor forward(at::Tensor x) {
    for (int i = 0; i < 3; ++i) x = torch::tanh(fc(x));
    return x;
  }
};
TORCH_MODULE(Loop);

// dropout in training mode downstream of the site
struct DropImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  DropImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 2));
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc2(torch::dropout(fc1(x), 0.5, /*train=*/true));
  }
};
TORCH_MODULE(Drop);

tl::LogOptions replayable(std::uint64_t seed = 1) {
  return tl::LogOptions().keep_replay(true).seed(seed);
}

std::string first_of_type(const tl::ModelLog& log, const std::string& type, int nth = 0) {
  for (auto layer : log) {
    if (layer->layer_type == type && nth-- == 0) return layer.label();
  }
  std::string all;
  for (auto layer : log) all += " " + layer.label() + "(" + layer->layer_type + ")";
  FAIL("no layer of type " << type << " in" << all);
  return "";
}

const at::Tensor& output_of(const tl::ModelLog& log) {
  return log["output.0"].activation();
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

/// Every activation of `a` equals `b`'s, bit for bit (same graph).
void check_same_log(const tl::ModelLog& a, const tl::ModelLog& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t v = 0; v < a.size(); ++v) {
    const auto la = a[static_cast<std::int64_t>(v)];
    const auto lb = b[static_cast<std::int64_t>(v)];
    CHECK(la.label() == lb.label());
    if (la.has_activation() && lb.has_activation()) {
      CHECK_MESSAGE(same(la.activation(), lb.activation()), la.label());
    }
  }
}

using torchlens::test::error_of;

} // namespace

namespace {
/// RFC 4180 records: fields in double quotes may hold commas, line breaks and
/// doubled quotes.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      record.push_back(std::exchange(field, {}));
    } else if (c == '\n') {
      record.push_back(std::exchange(field, {}));
      records.push_back(std::exchange(record, {}));
    } else {
      field += c;
    }
  }
  REQUIRE_FALSE(quoted);
  REQUIRE(field.empty());
  return records;
}
} // namespace

TEST_CASE("live, replay and rerun all equal the change written by hand") {
  torch::manual_seed(0);
  Residual model;
  const at::Tensor x = torch::randn({2, 4});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable());
  const std::string relu = first_of_type(ref, "relu");
  const auto spec = tl::Interventions().at(label(relu), tl::scale(0.5));

  torch::NoGradGuard no_grad;
  const at::Tensor a = torch::relu(model->fc1(x)) * 0.5;
  const at::Tensor hand = model->fc3(a + model->fc2(a));

  const tl::ModelLog live = tl::log_forward_pass(model, x, replayable().intervene(spec, ref));
  const tl::ModelLog replayed = tl::replay(ref, spec);
  const tl::InterventionRun rerun = tl::rerun(model, x, ref, spec);
  const at::Tensor plain = tl::run_with_interventions(model, x, spec.resolve(ref)).toTensor();

  CHECK(torch::allclose(output_of(live), hand));
  CHECK(same(output_of(live), output_of(replayed)));
  CHECK(same(output_of(rerun.log), output_of(replayed)));
  CHECK(same(plain, output_of(replayed)));
  CHECK(rerun.note.empty());
  check_same_log(live, replayed);
  // the log says where, and what
  CHECK(replayed[relu]->interventions == std::vector<std::string>{"scale(factor=0.5)"});
  CHECK(live[relu]->interventions == std::vector<std::string>{"scale(factor=0.5)"});
  CHECK(replayed[relu].activation().equal(ref[relu].activation() * 0.5));
  // the reference is untouched
  CHECK(ref[relu]->interventions.empty());
  CHECK(torch::allclose(output_of(ref), model->fc3(torch::relu(model->fc1(x)) +
                                                   model->fc2(torch::relu(model->fc1(x))))));

  SUBCASE("live selectors need no reference log") {
    const auto by_type = tl::Interventions().at(func("relu"), tl::scale(0.5));
    CHECK_FALSE(by_type.needs_reference());
    const tl::ModelLog l = tl::log_forward_pass(model, x, replayable().intervene(by_type));
    CHECK(same(output_of(l), output_of(live)));
    CHECK(same(tl::run_with_interventions(model, x, by_type).toTensor(), output_of(live)));
    const auto in_fc = tl::Interventions().at(func("addmm") & in_module("fc2"), tl::zero_ablate());
    const at::Tensor zeroed = model->fc3(torch::relu(model->fc1(x)) + 0.0);
    CHECK(torch::allclose(tl::run_with_interventions(model, x, in_fc).toTensor(), zeroed));
  }
  SUBCASE("label sites without a reference are refused, by the type's rules") {
    CHECK(spec.needs_reference());
    CHECK(error_of([&] { tl::LogOptions().intervene(spec); }).find("reference log") !=
          std::string::npos);
    CHECK(error_of([&] { tl::run_with_interventions(model, x, spec); }).find("reference log") !=
          std::string::npos);
  }
  SUBCASE("unknown labels suggest near matches") {
    const auto bad = tl::Interventions().at(label(relu + "9"), tl::zero_ablate());
    CHECK(error_of([&] { tl::replay(ref, bad); }).find("did you mean") != std::string::npos);
  }
  SUBCASE("a replacement of another shape is refused with both shapes") {
    const auto wrong = tl::Interventions().at(label(relu), tl::replace_with(torch::zeros({3})));
    const std::string msg = error_of([&] { tl::replay(ref, wrong); });
    CHECK(msg.find("where the site holds [2, 4]") != std::string::npos);
  }
}

TEST_CASE("an edge site changes only the consumer it names") {
  torch::manual_seed(1);
  Residual model;
  const at::Tensor x = torch::randn({3, 4});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable());
  const std::string relu = first_of_type(ref, "relu");
  const std::string fc2 = first_of_type(ref, "addmm", 1);
  const std::string add = first_of_type(ref, "add");
  const auto spec = tl::Interventions().at(edge(relu, add), tl::zero_ablate());

  torch::NoGradGuard no_grad;
  const at::Tensor a = torch::relu(model->fc1(x));
  const at::Tensor hand = model->fc3(torch::zeros_like(a) + model->fc2(a));
  const tl::ModelLog replayed = tl::replay(ref, spec);
  const tl::ModelLog live = tl::log_forward_pass(model, x, replayable().intervene(spec, ref));
  CHECK(torch::allclose(output_of(replayed), hand));
  CHECK(same(output_of(live), output_of(replayed)));
  // the other consumer of relu saw the original value
  CHECK(same(replayed[fc2].activation(), ref[fc2].activation()));
  CHECK(same(live[fc2].activation(), ref[fc2].activation()));
  CHECK(same(replayed[relu].activation(), ref[relu].activation()));
  CHECK(replayed[add]->interventions.size() == 1);

  SUBCASE("on a node with one consumer, an edge equals its output") {
    const std::string fc1 = first_of_type(ref, "addmm", 0);
    const auto on_edge = tl::Interventions().at(edge(fc1, relu), tl::scale(-1.0));
    const auto on_output = tl::Interventions().at(label(fc1), tl::scale(-1.0));
    CHECK(same(output_of(tl::replay(ref, on_edge)), output_of(tl::replay(ref, on_output))));
  }
  SUBCASE("layers that are not connected are refused") {
    const auto bad = tl::Interventions().at(edge(fc2, relu), tl::zero_ablate());
    CHECK(error_of([&] { tl::replay(ref, bad); }).find("does not read") != std::string::npos);
  }
}

TEST_CASE("replay from the input reproduces a clean run bit for bit") {
  torch::manual_seed(2);
  Residual model;
  const at::Tensor clean_x = torch::randn({2, 4}), corrupt_x = torch::randn({2, 4});
  const tl::ModelLog clean = tl::log_forward_pass(model, clean_x, replayable());
  const tl::ModelLog corrupt = tl::log_forward_pass(model, corrupt_x, replayable());
  const auto spec = tl::Interventions().at(label("input.0"), tl::patch_from(clean));
  // every op is in the cone of the input: the whole graph is recomputed
  const tl::ModelLog patched = tl::replay(corrupt, spec);
  check_same_log(patched, clean);
  // live: the input is replaced where the model reads it, the caller's tensor is not
  const at::Tensor before = corrupt_x.clone();
  const tl::ModelLog live =
      tl::log_forward_pass(model, corrupt_x, replayable().intervene(spec, corrupt));
  check_same_log(live, clean);
  CHECK(same(corrupt_x, before));
}

TEST_CASE("in-place ops are written through, and donors never change") {
  torch::manual_seed(3);
  Inplace model;
  const at::Tensor x1 = torch::randn({2, 4}), x2 = torch::randn({2, 4});
  const tl::ModelLog clean = tl::log_forward_pass(model, x1, replayable());
  const tl::ModelLog corrupt = tl::log_forward_pass(model, x2, replayable());
  const std::string relu = first_of_type(clean, "relu");
  CHECK(clean[relu]->op_name == "aten::relu_");

  torch::NoGradGuard no_grad;
  SUBCASE("zeroing the relu_ output reaches the caller's tensor") {
    const auto spec = tl::Interventions().at(label(relu), tl::zero_ablate());
    const at::Tensor hand = model->fc2(torch::zeros({2, 4}) * 2);
    CHECK(torch::allclose(tl::run_with_interventions(model, x1, spec.resolve(clean)).toTensor(),
                          hand));
    CHECK(torch::allclose(output_of(tl::replay(clean, spec)), hand));
  }
  SUBCASE("patching from a donor log leaves the donor as it was") {
    std::vector<at::Tensor> before;
    for (auto layer : clean) before.push_back(layer.activation().clone());
    const auto spec = tl::Interventions().at(label(relu), tl::patch_from(clean));
    const tl::ModelLog replayed = tl::replay(corrupt, spec);
    const tl::ModelLog live =
        tl::log_forward_pass(model, x2, replayable().intervene(spec, corrupt));
    const at::Tensor hand = model->fc2(torch::relu(model->fc1(x1)) * 2);
    CHECK(torch::allclose(output_of(replayed), hand));
    CHECK(same(output_of(live), output_of(replayed)));
    std::size_t i = 0;
    for (auto layer : clean) CHECK_MESSAGE(same(layer.activation(), before[i++]), layer.label());
  }
}

TEST_CASE("a site with a pass changes only that pass") {
  torch::manual_seed(4);
  Loop model;
  const at::Tensor x = torch::randn({1, 4});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable());
  const std::string second = first_of_type(ref, "addmm", 1);
  const std::string first = first_of_type(ref, "addmm", 0);
  CHECK(second.substr(second.size() - 2) == ":2");
  CHECK(ref[first]->num_passes == 3);
  torch::NoGradGuard no_grad;
  const at::Tensor h1 = torch::tanh(model->fc(x));
  const at::Tensor hand = torch::tanh(model->fc(torch::tanh(torch::zeros({1, 4}))));
  const auto spec = tl::Interventions().at(label(second), tl::zero_ablate());
  const tl::ModelLog replayed = tl::replay(ref, spec);
  CHECK(torch::allclose(output_of(replayed), hand));
  CHECK(same(replayed[first].activation(), ref[first].activation()));
  CHECK(replayed[first]->interventions.empty());
  CHECK(replayed[second]->interventions.size() == 1);
  const tl::ModelLog live = tl::log_forward_pass(model, x, replayable().intervene(spec, ref));
  CHECK(same(output_of(live), output_of(replayed)));
  // without a pass, every pass
  const auto all =
      tl::Interventions().at(label(std::string(ref[first]->label_no_pass())), tl::zero_ablate());
  const tl::ModelLog every = tl::replay(ref, all);
  CHECK(same(output_of(every), torch::zeros({1, 4})));
  CHECK(every[first_of_type(ref, "addmm", 2)]->interventions.size() == 1);
  CHECK(torch::allclose(replayed[first].activation(), model->fc(x)));
  CHECK(torch::allclose(torch::tanh(replayed[first].activation()), h1));
}

TEST_CASE("random ops replay with the generator state they ran with") {
  torch::manual_seed(5);
  Drop model;
  const at::Tensor x = torch::randn({4, 8});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable(11));
  const std::string fc1 = first_of_type(ref, "addmm");
  const auto spec = tl::Interventions().at(label(fc1), tl::scale(2.0));
  const at::Tensor global_before = torch::randn({1});
  torch::manual_seed(5);
  (void)torch::randn({1});
  const tl::ModelLog replayed = tl::replay(ref, spec);
  // the global generator is where it was: the next draw is the same
  const at::Tensor next = torch::randn({1});
  torch::manual_seed(5);
  (void)torch::randn({1});
  CHECK(same(torch::randn({1}), next));
  const tl::ModelLog live = tl::log_forward_pass(model, x, replayable(11).intervene(spec, ref));
  CHECK(same(output_of(live), output_of(replayed)));
  // the same dropout mask: zeros where the reference had zeros
  const std::string drop = first_of_type(ref, "dropout");
  CHECK(same(replayed[drop].activation().eq(0), ref[drop].activation().eq(0)));
  (void)global_before;
}

TEST_CASE("replay stops where a branch could flip; auto mode reruns and is right") {
  torch::jit::Module model("Branch");
  model.define(R"JIT(
def forward(self, x):
    h = x * 3.0
    if bool(h.sum() > 0.0):
        return h + 1.0
    else:
        return h - 1.0
)JIT");
  const at::Tensor x = torch::rand({2, 3}) + 0.1;
  const std::vector<c10::IValue> inputs{x};
  const tl::ModelLog ref = tl::log_forward_pass(model, inputs, replayable());
  const std::string mul = first_of_type(ref, "mul");
  const std::string gt = first_of_type(ref, "gt");
  const auto flip = tl::Interventions().at(label(mul), tl::scale(-1.0));
  try {
    (void)tl::replay(ref, flip);
    FAIL("replay did not stop");
  } catch (const tl::ReplayDivergence& e) {
    CHECK(e.vertex() == gt);
    CHECK(e.message().find("host scalar") != std::string::npos);
  }
  const tl::InterventionRun run = tl::intervene(tl::Engine::automatic, model, inputs, ref, flip);
  CHECK(run.engine == tl::Engine::rerun);
  CHECK(run.note.find("replay diverged") != std::string::npos);
  CHECK(torch::allclose(output_of(run.log), x * -3.0 - 1.0));
  // a change that keeps the branch replays
  const auto keep = tl::Interventions().at(label(mul), tl::scale(2.0));
  const tl::InterventionRun kept = tl::intervene(tl::Engine::automatic, model, inputs, ref, keep);
  CHECK(kept.engine == tl::Engine::replay);
  CHECK(torch::allclose(output_of(kept.log), x * 6.0 + 1.0));
}

TEST_CASE("built-in actions compute what they say") {
  torch::manual_seed(6);
  Residual model;
  const at::Tensor x = torch::randn({2, 4});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable());
  const std::string relu = first_of_type(ref, "relu");
  const std::string fc1 = first_of_type(ref, "addmm");
  const at::Tensor v = ref[relu].activation();
  const at::Tensor dir = torch::tensor({1.0f, -2.0f, 0.5f, 3.0f});
  auto at_relu = [&](const tl::Action& a) {
    return tl::replay(ref, tl::Interventions().at(label(relu), a))[relu].activation();
  };
  CHECK(same(at_relu(tl::clamp(tl::ClampOptions().set_max(0.1))), v.clamp_max(0.1)));
  CHECK(torch::allclose(at_relu(tl::steer(dir, 2.0, 1)), v + 2.0 * dir));
  const at::Tensor u = dir / dir.norm();
  const at::Tensor onto = at_relu(tl::project_onto(dir, 1));
  CHECK(torch::allclose(onto, (v * u).sum(1, true) * u, 1e-5, 1e-6));
  CHECK(torch::allclose((at_relu(tl::project_off(dir, 1)) * u).sum(1), torch::zeros({2}), 1e-5,
                        1e-5));
  const at::Tensor mean = torch::tensor({0.1f, 0.2f, 0.3f, 0.4f});
  CHECK(same(at_relu(tl::mean_ablate(mean)), mean.expand({2, 4})));
  const at::Tensor pool = torch::arange(12, torch::kFloat).reshape({3, 4});
  const at::Tensor resampled = at_relu(tl::resample_ablate(pool, 3));
  for (int i = 0; i < 2; ++i) {
    const at::Tensor row = resampled[i];
    CHECK((same(row, pool[0]) || same(row, pool[1]) || same(row, pool[2])));
  }
  CHECK(same(resampled, at_relu(tl::resample_ablate(pool, 3)))); // seeded: the same
  // noise: own generator, the same in every engine, never the global one
  const at::Tensor noisy = at_relu(tl::noise(0.1, 7));
  CHECK(same(noisy, at_relu(tl::noise(0.1, 7))));
  CHECK_FALSE(same(noisy, at_relu(tl::noise(0.1, 8))));
  CHECK(torch::allclose(noisy, v, 0, 0.6));
  const auto noise_spec = tl::Interventions().at(label(relu), tl::noise(0.1, 7));
  CHECK(same(
      tl::log_forward_pass(model, x, replayable().intervene(noise_spec, ref))[relu].activation(),
      noisy));
  // take_from: another site's value in this run (fc1's output, before relu)
  CHECK(same(at_relu(tl::take_from(fc1)), ref[fc1].activation()));
  // add_delta_from: + donor[fc1] - this run's fc1
  const tl::ModelLog donor = tl::log_forward_pass(model, torch::randn({2, 4}), replayable());
  CHECK(torch::allclose(at_relu(tl::add_delta_from(donor, fc1)),
                        v + donor[fc1].activation() - ref[fc1].activation()));
  // a region: one feature of every example
  const at::Tensor one =
      tl::replay(ref,
                 tl::Interventions().at(tl::Site(label(relu)).at_index(1, 2), tl::scale(0.0)))[relu]
          .activation();
  at::Tensor hand = v.clone();
  hand.select(1, 2).zero_();
  CHECK(same(one, hand));
  // user code
  const auto doubled = tl::call([](const at::Tensor& t, const tl::HookContext&) { return t * 2; });
  CHECK(same(at_relu(doubled), v * 2));
}

TEST_CASE("a spec saves to JSON with .npy sidecars and loads back without running code") {
  torch::manual_seed(7);
  Residual model;
  const at::Tensor x = torch::randn({2, 4});
  const tl::ModelLog ref = tl::log_forward_pass(model, x, replayable());
  const std::string relu = first_of_type(ref, "relu");
  const std::string add = first_of_type(ref, "add");
  const fs::path dir = fs::temp_directory_path() / ("tl_spec_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  static bool registered = false;
  if (!registered) {
    tl::register_action("lab::negate", [](const auto&, const auto&) {
      return tl::Action("lab::negate", tl::Action::Fn([](const at::Tensor& t,
                                                         const tl::HookContext&) { return -t; }));
    });
    registered = true;
  }
  const auto spec =
      tl::Interventions()
          .at(label(relu), tl::steer(torch::tensor({1.0f, 0.0f, -1.0f, 2.0f}), 3.0, 1))
          .at(tl::Site(func("addmm") & in_module("fc3")).at_index(1, 0),
              tl::clamp(tl::ClampOptions().set_min(-0.25).set_max(0.25)))
          .at(edge(relu, add), tl::make_action("lab::negate", {}, {}))
          .at(label(relu), tl::take_from(first_of_type(ref, "addmm")));
  const std::string path = (dir / "spec.json").string();
  spec.save(path);
  CHECK(fs::exists(dir / "spec.1.direction.npy"));
  const auto loaded = tl::Interventions::load(path);
  CHECK(loaded.describe() == spec.describe());
  check_same_log(tl::replay(ref, loaded), tl::replay(ref, spec));
  // parameters print as the shortest text that reads back exactly, and load back exactly
  CHECK(tl::noise(0.1, 3).describe() == "noise(seed=3, std=0.1)");
  CHECK(tl::scale(1e-300).describe() == "scale(factor=1e-300)");
  CHECK(tl::clamp(tl::ClampOptions().set_min(-0.25)).describe() == "clamp(min=-0.25)");
  const auto thirds = tl::Interventions().at(label(relu), tl::noise(1.0 / 3.0, 5));
  CHECK(thirds.describe().find("std=0.3333333333333333)") != std::string::npos);
  thirds.save((dir / "thirds.json").string());
  const auto thirds_loaded = tl::Interventions::load((dir / "thirds.json").string());
  CHECK(thirds_loaded.describe() == thirds.describe());
  check_same_log(tl::replay(ref, thirds_loaded), tl::replay(ref, thirds)); // bit for bit

  SUBCASE("paths that leave the spec's folder are refused") {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    std::string json = text.str();
    const auto pos = json.find("spec.1.direction.npy");
    json.replace(pos, std::string("spec.1.direction.npy").size(), "../direction.npy");
    std::ofstream(path) << json;
    CHECK(error_of([&] { tl::Interventions::load(path); }).find("not a plain file name") !=
          std::string::npos);
    fs::create_symlink("/etc/hostname", dir / "link.npy");
    json.replace(json.find("../direction.npy"), std::string("../direction.npy").size(), "link.npy");
    std::ofstream(path) << json;
    CHECK(error_of([&] { tl::Interventions::load(path); }).find("not a regular file") !=
          std::string::npos);
  }
  SUBCASE("code and donor logs are not portable") {
    const auto code = tl::Interventions().at(
        label(relu), tl::call([](const at::Tensor& t, const tl::HookContext&) { return t; }));
    CHECK_FALSE(code.portable());
    CHECK(error_of([&] { code.save(path); }).find("not portable") != std::string::npos);
    const auto pred = tl::Interventions().at(
        where([](const tl::OpView& op) { return op.dim() == 2; }), tl::zero_ablate());
    CHECK(error_of([&] { pred.save(path); }).find("predicate") != std::string::npos);
    CHECK_FALSE(tl::Interventions().at(label(relu), tl::patch_from(ref)).portable());
  }
  SUBCASE("unknown actions are refused by name") {
    std::ofstream(path)
        << R"({"torchlens_interventions": 1, "entries": [{"site": {"live": {"kind": "any"}},
      "action": {"name": "os::system", "params": {"cmd": "rm -rf /"}, "tensors": {}}}]})";
    CHECK(error_of([&] { tl::Interventions::load(path); }).find("unknown action 'os::system'") !=
          std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("activation patching: effects from replays equal the hand computation") {
  torch::manual_seed(8);
  Residual model;
  const at::Tensor clean_x = torch::randn({1, 4}), corrupt_x = torch::randn({1, 4});
  const auto metric = [](const at::Tensor& y) { return (y[0][0] - y[0][1]).item<double>(); };
  const auto options = tl::patching::PatchOptions()
                           .site(label("input.0"))
                           .site(func("relu"))
                           .metric(metric)
                           .grid_dim(1)
                           .seed(3);
  const auto result = tl::patching::activation_patch(model, clean_x, corrupt_x, options);
  torch::NoGradGuard no_grad;
  auto forward_from_relu = [&](const at::Tensor& a) { return model->fc3(a + model->fc2(a)); };
  CHECK(result.clean_metric == doctest::Approx(metric(model->forward(clean_x))));
  CHECK(result.corrupted_metric == doctest::Approx(metric(model->forward(corrupt_x))));
  REQUIRE(result.rows.size() == 8); // 4 input features, 4 relu features
  const at::Tensor a_clean = torch::relu(model->fc1(clean_x));
  const at::Tensor a_corrupt = torch::relu(model->fc1(corrupt_x));
  for (int j = 0; j < 4; ++j) {
    at::Tensor in = corrupt_x.clone();
    in[0][j] = clean_x[0][j];
    CHECK(result.rows[j].index == j);
    CHECK(result.rows[j].metric == doctest::Approx(metric(model->forward(in))));
    at::Tensor a = a_corrupt.clone();
    a[0][j] = a_clean[0][j];
    CHECK(result.rows[4 + j].metric == doctest::Approx(metric(forward_from_relu(a))));
    CHECK(result.rows[4 + j].engine == tl::Engine::replay);
    const double span = result.clean_metric - result.corrupted_metric;
    CHECK(result.rows[4 + j].effect ==
          doctest::Approx((result.rows[4 + j].metric - result.corrupted_metric) / span));
  }
  // the whole input patched at once carries the whole difference
  const auto whole = tl::patching::activation_patch(
      model, clean_x, corrupt_x,
      tl::patching::PatchOptions().site(label("input.0")).metric(metric));
  REQUIRE(whole.rows.size() == 1);
  CHECK(whole.rows[0].effect == doctest::Approx(1.0));
  // progress: once per patch, in order, with the number of patches known up front
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  std::vector<std::string> labels;
  const auto counted = tl::patching::activation_patch(
      model, clean_x, corrupt_x,
      tl::patching::PatchOptions(options).progress(
          [&](std::size_t done, std::size_t total, const tl::patching::PatchRow& row) {
            calls.emplace_back(done, total);
            labels.push_back(row.label + "/" + std::to_string(row.index));
          }));
  REQUIRE(calls.size() == 8);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    CHECK(calls[i] == std::make_pair(i + 1, std::size_t{8}));
    CHECK(labels[i] == counted.rows[i].label + "/" + std::to_string(counted.rows[i].index));
    CHECK(counted.rows[i].metric == result.rows[i].metric);
  }
  // the table as JSON, read back
  const fs::path json =
      fs::temp_directory_path() / ("tl_patch_" + std::to_string(::getpid()) + ".json");
  result.to_json(json.string());
  boost::property_tree::ptree tree;
  boost::property_tree::read_json(json.string(), tree);
  CHECK(tree.get_child("rows").size() == 8);
  CHECK(tree.get<double>("clean_metric") == doctest::Approx(result.clean_metric));
  fs::remove(json);
  std::ostringstream table;
  table << result;
  CHECK(table.str().find(result.rows[5].label) != std::string::npos);

  // the table as CSV (RFC 4180): a site with a comma, quotes and a line break
  // stays one field; numbers read back exactly
  tl::patching::PatchResult odd = result;
  odd.rows[1].site = "where(\"a, b\")\nand \"c\"";
  const fs::path csv =
      fs::temp_directory_path() / ("tl_patch_" + std::to_string(::getpid()) + ".csv");
  odd.to_csv(csv.string());
  std::ifstream in(csv);
  std::stringstream text;
  text << in.rdbuf();
  fs::remove(csv);
  const auto records = parse_csv(text.str());
  REQUIRE(records.size() == 9);
  CHECK(records[0] ==
        std::vector<std::string>{"site", "label", "index", "metric", "effect", "engine"});
  for (std::size_t i = 0; i < 8; ++i) {
    const auto& r = records[i + 1];
    REQUIRE(r.size() == 6);
    CHECK(r[0] == odd.rows[i].site);
    CHECK(r[1] == odd.rows[i].label);
    CHECK(std::stoll(r[2]) == odd.rows[i].index);
    CHECK(std::stod(r[3]) == odd.rows[i].metric);
    CHECK(std::stod(r[4]) == odd.rows[i].effect);
    CHECK(r[5] == "replay");
  }
  CHECK(records[1][0] == "label(input.0)");
}
