// Model-level tests on TorchScript toy models (exact module nesting from the
// interpreter: addresses, types, pass numbers; setitem/getitem semantics) and
// on log options (SaveSpec, postfunc, output_device, detach) and the "leaves no
// trace" guarantees.

#include "model_test_helpers.hpp"

#include <support/toy_models.hpp>

#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

using tlt::labels;
using tlt::strs;
using torchlens::log_forward_pass;
using torchlens::LogOptions;
using torchlens::ModuleFrame;
using torchlens::NodeKind;
using torchlens::SaveSpec;

namespace {

torchlens::ModelLog log_ts(torch::jit::Module& m, const at::Tensor& x, const LogOptions& o = {}) {
  return log_forward_pass(m, std::vector<c10::IValue>{x}, o);
}

at::Tensor run_ts(torch::jit::Module& m, const at::Tensor& x) {
  return m.forward({x}).toTensor();
}

/// Addresses of a layer's module frames, outer → inner, root ("") excluded.
std::vector<std::string> frame_addresses(const torchlens::LayerView& l) {
  std::vector<std::string> out;
  for (const auto& f : l->modules) {
    if (!f.address.empty()) {
      out.push_back(f.address);
    }
  }
  return out;
}

const ModuleFrame* frame(const torchlens::LayerView& l, const std::string& address) {
  for (const auto& f : l->modules) {
    if (f.address == address) {
      return &f;
    }
  }
  return nullptr;
}

} // namespace

TEST_SUITE("toy models: TorchScript") {
  TEST_CASE("TS SimpleFF: same labels as the C++ frontend; module frames") {
    auto m = toy::ts::simple_ff();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "linear_1_1", "relu_1_2", "linear_2_3", "output_1"}));
    CHECK(log["linear_1_1"].module() == "fc1");
    CHECK(log["relu_1_2"].module() == "");
    CHECK(log["linear_2_3"].module() == "fc2");
    const auto* f = frame(log["linear_1_1"], "fc1");
    REQUIRE(f != nullptr);
    CHECK(f->type == "Fc");
    CHECK(f->pass == 1);
    REQUIRE(log["linear_1_1"]->params.size() == 2);
    CHECK(log["linear_1_1"]->params[0].address == "fc1.weight");
    CHECK(log["linear_1_1"]->params[1].address == "fc1.bias");
    CHECK(log["fc2"].label() == "linear_2_3");
    CHECK(torch::allclose(log["output_1"].activation(), run_ts(m, x)));
  }

  TEST_CASE("TS nested modules: addresses, types, nesting order") {
    auto m = toy::ts::nested();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "matmul_1_1", "relu_1_2", "matmul_2_3", "relu_2_4",
                               "matmul_3_5", "relu_3_6", "output_1"}));
    CHECK(frame_addresses(log["matmul_1_1"]) == strs({"mid", "mid.leaf1"}));
    CHECK(frame_addresses(log["relu_2_4"]) == strs({"mid", "mid.leaf2"}));
    CHECK(frame_addresses(log["matmul_3_5"]) == strs({"out"}));
    CHECK(log["matmul_1_1"].module() == "mid.leaf1");
    CHECK(frame(log["matmul_1_1"], "mid")->type == "Mid");
    CHECK(frame(log["matmul_1_1"], "mid.leaf1")->type == "Leaf");
    CHECK(log["matmul_1_1"]->params.at(0).address == "mid.leaf1.w");
    // module outputs: the last op of each module pass
    CHECK(log["mid.leaf1"].label() == "relu_1_2");
    CHECK(log["mid"].label() == "relu_2_4");
    CHECK(log["out:1"].label() == "relu_3_6");
    // modules seen, with types and pass counts
    std::set<std::string> seen;
    for (const auto& mi : log.info().modules) {
      seen.insert(mi.address + ":" + mi.type + ":" + std::to_string(mi.num_passes));
    }
    CHECK(seen.count("mid:Mid:1") == 1);
    CHECK(seen.count("mid.leaf2:Leaf:1") == 1);
    CHECK(seen.count("out:Leaf:1") == 1);
    // independent computation of a submodule
    auto mid = m.attr("mid").toModule();
    CHECK(torch::allclose(log["mid"].activation(), mid.forward({x}).toTensor()));
    CHECK(torch::allclose(log["output_1"].activation(), run_ts(m, x)));
  }

  TEST_CASE("TS RepeatedModule: one module, three passes") {
    auto m = toy::ts::repeated_module();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    auto relus = tlt::of_type(log, "relu");
    REQUIRE(relus.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      const auto* f = frame(relus[static_cast<std::size_t>(i)], "act");
      REQUIRE(f != nullptr);
      CHECK(f->pass == i + 1);
      CHECK(f->type == "Act");
    }
    CHECK(log["act:1"].label() == relus[0].label());
    CHECK(log["act:2"].label() == relus[1].label());
    CHECK(log["act:3"].label() == relus[2].label());
    CHECK_THROWS_AS(log.at("act"), c10::Error); // three passes: address alone is ambiguous
    CHECK(relus[1].parents() == strs({"linear_1_2"}));
    for (const auto& mi : log.info().modules) {
      if (mi.address == "act") {
        CHECK(mi.num_passes == 3);
      }
    }
    CHECK(torch::allclose(log["output_1"].activation(), run_ts(m, x)));
  }

  TEST_CASE("TS LinearLoop: module passes 1..5 and recurrence") {
    auto m = toy::ts::linear_loop();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    auto linears = tlt::of_type(log, "linear");
    REQUIRE(linears.size() == 5);
    for (int i = 0; i < 5; ++i) {
      const auto* f = frame(linears[static_cast<std::size_t>(i)], "fc");
      REQUIRE(f != nullptr);
      CHECK(f->pass == i + 1);
    }
    CHECK(log["fc:4"].label() == linears[3].label());
    // recurrence (group-recurrences pass)
    CHECK(labels(log) == strs({"input_1", "mul_1_1", "linear_1_2:1", "linear_1_2:2", "linear_1_2:3",
                               "linear_1_2:4", "linear_1_2:5", "output_1"}));
    CHECK(log.info().max_recurrent_loops == 5);
  }

  TEST_CASE("TS Conditional: sum > 0 read as a bool decides the branch") {
    auto m = toy::ts::conditional();
    for (float sign : {1.0F, -1.0F}) {
      CAPTURE(sign);
      const auto x = toy::ts::input().abs() * sign;
      auto log = log_ts(m, x);
      INFO(tlt::dump(log));
      std::vector<torchlens::LayerView> reads;
      for (auto l : log) {
        if (l->scalar_use != torchlens::ScalarUse::none) {
          reads.push_back(l);
        }
      }
      // `bool(gt)` decides an `if` (the IR says so): gt is the terminal bool
      REQUIRE(reads.size() == 1);
      CHECK(reads[0].label() == "gt_1_2");
      CHECK(reads[0]->scalar_use == torchlens::ScalarUse::condition);
      CHECK(reads[0]->is_terminal_bool);
      REQUIRE(reads[0]->scalar_bool_value.has_value());
      CHECK(*reads[0]->scalar_bool_value == (sign > 0));
      CHECK(log["sum_1_1"]->in_cond_branch);
      CHECK_FALSE(log["gt_1_2"]->in_cond_branch); // the terminal bool, as in TorchLens
      CHECK(log.info().has_conditional);
      CHECK(tlt::of_type(log, sign > 0 ? "relu" : "tanh").size() == 1);
      CHECK(tlt::of_type(log, sign > 0 ? "tanh" : "relu").empty());
      CHECK(torch::allclose(log["output_1"].activation(), run_ts(m, x)));
    }
  }

  TEST_CASE("TS bool reads: `if c: break` is a condition; assert and while are not") {
    // as TorchLens 2.x classifies the source: `if c: break` is an `if` test
    // (TorchScript lowers it into a loop flag; `if c: raise`, which a module
    // defined from C++ cannot name an exception for, is in python/tests)
    torch::jit::Module m("BoolReads");
    m.define(R"(
def forward(self, x):
    assert bool(x.sum() > -100.0)
    n = 0
    while bool(x.norm() < 20.0) and n < 3:
        x = x * 2.0
        n += 1
    for i in range(3):
        x = x + 1.0
        if bool(x.mean() > 1000.0):
            break
    return x
)");
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    // each read's uses, by the op that computed the compared value
    std::map<std::string, std::set<std::string>> uses;
    for (auto l : log) {
      if (l->scalar_use == torchlens::ScalarUse::none) continue;
      const auto parents = l.parents();
      REQUIRE_FALSE(parents.empty());
      uses[std::string(log[parents[0]]->layer_type)].insert(to_string(l->scalar_use));
    }
    using Set = std::set<std::string>;
    CHECK(uses["sum"] == Set{"assertion"});
    CHECK(uses["norm"] == Set{"loop"});
    CHECK(uses["mean"] == Set{"condition"});
    CHECK(log.info().has_conditional);
    CHECK(torch::allclose(log["output_1"].activation(), run_ts(m, x)));
  }

  TEST_CASE("TS AssignTensor: x[1, 1] = 5 is select, select, copy_, then the base's update") {
    auto m = toy::ts::assign_tensor();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    auto copies = tlt::of_type(log, "copy");
    REQUIRE(copies.size() == 1);
    CHECK(copies[0]->is_inplace);
    CHECK(copies[0]->op_name == "aten::copy_");
    CHECK(tlt::of_type(log, "select").size() == 2);
    auto muls = tlt::of_type(log, "mul");
    REQUIRE(muls.size() == 1);
    // the mul's saved value predates the assignment
    CHECK(torch::allclose(muls[0].activation(), x));
    CHECK(muls[0].activation()[1][1].item<float>() != 5.0F);
    // the returned tensor carries it
    auto expected = x.clone();
    expected[1][1] = 5.0F;
    CHECK(torch::allclose(log["output_1"].activation(), expected));
    CHECK(torch::allclose(run_ts(m, x), expected));
  }

  TEST_CASE("TS GetAndSetItem: y[0] = x[1]") {
    auto m = toy::ts::get_and_set_item();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    auto selects = tlt::of_type(log, "select");
    REQUIRE(selects.size() == 2);
    CHECK(torch::allclose(selects[0].activation(), x[1]));
    auto copies = tlt::of_type(log, "copy");
    REQUIRE(copies.size() == 1);
    // copy_(y[0], x[1]): x[1]'s node is one of its parents
    const auto parents = copies[0].parents();
    CHECK(std::find(parents.begin(), parents.end(), selects[0].label()) != parents.end());
    auto clones = tlt::of_type(log, "clone");
    REQUIRE(clones.size() == 1);
    CHECK(torch::allclose(clones[0].activation(), x)); // pre-mutation value
    auto expected = x.clone();
    expected[0] = x[1];
    CHECK(torch::allclose(log["output_1"].activation(), expected));
  }

  TEST_CASE("TS GetItemTracking: mutate a slice, then use the whole") {
    auto m = toy::ts::get_item_tracking();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "clone_1_1", "select_1_2", "mul_1_3", "baseupdate_1_4",
                               "mean_1_5", "add_1_6", "output_1"}));
    // the in-place write into the view y[0] gives y a new value: a base-update node
    CHECK(log["baseupdate_1_4"].parents() == strs({"clone_1_1", "mul_1_3"}));
    CHECK(log["mean_1_5"].parents() == strs({"baseupdate_1_4"}));
    CHECK(log["mul_1_3"]->is_inplace);
    CHECK(log["select_1_2"]->is_view);
    CHECK(torch::allclose(log["clone_1_1"].activation(), x));     // before the slice mutation
    CHECK(torch::allclose(log["select_1_2"].activation(), x[0])); // before mul_
    CHECK(torch::allclose(log["mul_1_3"].activation(), x[0] * 2));
    auto a = x.clone();
    a[0] *= 2;
    CHECK(torch::allclose(log["baseupdate_1_4"].activation(), a));
    CHECK(torch::allclose(log["mean_1_5"].activation(), a.mean(0)));
    CHECK(torch::allclose(log["output_1"].activation(), a.mean(0) + a[0]));
  }

  TEST_CASE("TS InPlaceZeroTensor: zeros_like internally generated, add_ in place") {
    auto m = toy::ts::inplace_zero_tensor();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "zeroslike_1_1", "add_1_2", "mul_1_3", "output_1"}));
    CHECK(log["add_1_2"]->is_inplace);
    CHECK(log["add_1_2"].parents() == strs({"zeroslike_1_1", "input_1"}));
    CHECK(torch::equal(log["zeroslike_1_1"].activation(), torch::zeros_like(x)));
    CHECK(torch::allclose(log["add_1_2"].activation(), x));
    CHECK(torch::allclose(log["output_1"].activation(), x * 3));
  }

  TEST_CASE("TS BufferRewrite: buffer read, then reassigned") {
    auto m = toy::ts::buffer_rewrite();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    auto buf = tlt::by_io_address(log, "buf");
    REQUIRE(buf.has_value());
    CHECK((*buf)->kind == NodeKind::buffer);
    CHECK(torch::equal(buf->activation(), torch::ones({3, 3})));
    auto adds = tlt::of_type(log, "add");
    REQUIRE(adds.size() == 1);
    CHECK(adds[0].parents() == std::vector<std::string>{buf->label(), "input_1"});
    CHECK(torch::allclose(log["output_1"].activation(), (x + 1) * 2));
    // the model really ran once: the buffer was reassigned once
    CHECK(torch::allclose(m.attr("buf").toTensor(), x + 1));
  }

  TEST_CASE("TS MultiOutputs: tuple of outputs") {
    auto m = toy::ts::multi_outputs();
    const auto x = toy::ts::input();
    auto log = log_ts(m, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "sin_1_1", "cos_1_2", "output_1", "output_2"}));
    CHECK(log["output_2"]->io_address == "output.1");
    CHECK(torch::allclose(log["output.1"].activation(), torch::cos(x)));
  }

} // TEST_SUITE

// ============================================================================

TEST_SUITE("log options") {
  TEST_CASE("SaveSpec: keys save exactly the selected layers") {
    torch::manual_seed(0);
    toy::ConvNet net;
    const auto x = toy::input_for<toy::ConvNetImpl>();
    auto full = log_forward_pass(net, x);
    INFO(tlt::dump(full));

    SUBCASE("label and module address") {
      auto log = log_forward_pass(net, x, LogOptions().save({"conv2d_1", "features.3"}));
      CHECK(labels(log) == labels(full)); // metadata for every layer
      std::vector<std::string> saved;
      for (auto v : log.saved_layers()) {
        saved.push_back(log.graph()[v].label());
      }
      CHECK(saved == strs({"conv2d_1_1", "conv2d_2_4"}));
      CHECK(log["conv2d_1_1"].has_activation());
      CHECK(log["conv2d_1_1"]->has_saved_activation);
      CHECK_FALSE(log["relu_1_2"].has_activation());
      CHECK_FALSE(log["relu_1_2"]->has_saved_activation);
      CHECK_THROWS_AS(log["relu_1_2"].activation(), c10::Error);
      CHECK(torch::equal(log["conv2d_2_4"].activation(), full["conv2d_2_4"].activation()));
      CHECK(log.totals().num_saved == 2);
    }
    SUBCASE("substring selects every match") {
      auto log = log_forward_pass(net, x, LogOptions().save({"conv2d"}));
      std::vector<std::string> saved;
      for (auto v : log.saved_layers()) {
        saved.push_back(log.graph()[v].label());
      }
      CHECK(saved == strs({"conv2d_1_1", "conv2d_2_4"}));
    }
    SUBCASE("ordinals") {
      auto log = log_forward_pass(net, x, LogOptions().save({"2", "-2"}));
      std::vector<std::string> saved;
      for (auto v : log.saved_layers()) {
        saved.push_back(log.graph()[v].label());
      }
      // exactly the selection: the output node is not saved with its producer
      CHECK(saved == strs({"relu_1_2", "addmm_1_7"}));
      CHECK_FALSE(log["output_1"].has_activation());
      auto with_output = log_forward_pass(net, x, LogOptions().save({"output_1"}));
      std::vector<std::string> saved_out;
      for (auto v : with_output.saved_layers()) saved_out.push_back(with_output.graph()[v].label());
      CHECK(saved_out == strs({"addmm_1_7", "output_1"})); // one tensor, shared
      CHECK(with_output["output_1"].activation().is_same(with_output["addmm_1_7"].activation()));
      CHECK(torch::allclose(log["relu_1_2"].activation(), full["relu_1_2"].activation()));
    }
    SUBCASE("none: metadata only") {
      auto log = log_forward_pass(net, x, LogOptions().save(SaveSpec::none()));
      CHECK(labels(log) == labels(full));
      CHECK(log.saved_layers().empty());
      CHECK(log.totals().num_saved == 0);
      CHECK(log["conv2d_1_1"]->shape == full["conv2d_1_1"]->shape);
    }
    SUBCASE("unknown key throws") {
      CHECK_THROWS_AS(log_forward_pass(net, x, LogOptions().save({"conv9d_7"})), c10::Error);
    }
  }

  TEST_CASE("postfunc is applied to each saved activation and its ops are not logged") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto plain = log_forward_pass(net, x);
    auto log = log_forward_pass(net, x, LogOptions().postfunc([](const at::Tensor& t) {
      return t.mean().reshape({1}) * 10;
    }));
    CHECK(labels(log) == labels(plain));
    CHECK(log.size() == plain.size());
    for (const char* key : {"t_1_1", "addmm_1_2", "relu_1_3", "addmm_2_5"}) {
      CAPTURE(key);
      CHECK(
          torch::allclose(log[key].activation(), plain[key].activation().mean().reshape({1}) * 10));
    }
    CHECK(log["addmm_1_2"]->shape == std::vector<std::int64_t>{2, 4}); // metadata: real tensor
  }

  TEST_CASE("output_device(cpu) and detach") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(
        net, x, LogOptions().output_device(torchlens::OutputDevice::cpu).detach(true));
    for (auto l : log) {
      if (l.has_activation()) {
        CAPTURE(l.label());
        CHECK(l.activation().device().is_cpu());
        CHECK_FALSE(l.activation().requires_grad());
      }
    }
    auto attached = log_forward_pass(net, x);
    CHECK(attached["addmm_1_2"].activation().requires_grad());
    CHECK(attached["addmm_1_2"]->requires_grad);
    CHECK(torch::allclose(log["addmm_1_2"].activation(), attached["addmm_1_2"].activation()));
  }

  TEST_CASE("the log leaves no trace; logging twice gives the same graph") {
    torch::manual_seed(0);
    toy::ConvNet net;
    const auto x = toy::input_for<toy::ConvNetImpl>();
    const auto before = net(x);
    auto params_before = std::vector<at::Tensor>{};
    for (const auto& p : net->parameters()) {
      params_before.push_back(p.detach().clone());
    }
    auto log1 = log_forward_pass(net, x);
    auto log2 = log_forward_pass(net, x, LogOptions().save({"conv2d_1"}));
    const auto after = net(x);
    CHECK(torch::equal(before, after));
    std::size_t i = 0;
    for (const auto& p : net->parameters()) {
      CHECK(torch::equal(p, params_before.at(i++)));
    }
    CHECK(torch::equal(log1["output_1"].activation(), before));
    // a plain forward after logging records nothing into the old logs
    CHECK(log1.size() == log2.size());
    CHECK(labels(log1) == labels(log2));
    const auto& g1 = log1.graph();
    const auto& g2 = log2.graph();
    REQUIRE(boost::num_edges(g1) == boost::num_edges(g2));
    for (std::size_t v = 0; v < log1.size(); ++v) {
      CHECK(log1[static_cast<std::int64_t>(v)].parents() ==
            log2[static_cast<std::int64_t>(v)].parents());
      CHECK(g1[v].shape == g2[v].shape);
      CHECK(g1[v].op_name == g2[v].op_name);
    }
    // TorchScript too
    auto m = toy::ts::nested();
    const auto xt = toy::ts::input();
    const auto ts_before = run_ts(m, xt);
    auto tlog = log_ts(m, xt);
    CHECK(torch::equal(run_ts(m, xt), ts_before));
    CHECK(labels(log_ts(m, xt)) == labels(tlog));
  }

  TEST_CASE("an exception inside a TorchScript forward propagates and leaves no trace") {
    torch::jit::Module m("Broken");
    m.define(R"(
def forward(self, x):
    y = torch.sin(x)
    return torch.matmul(y, torch.ones(7, 2))
)");
    const auto x = toy::ts::input();
    CHECK_THROWS(log_ts(m, x));
    auto ok = toy::ts::simple_ff();
    auto log = log_ts(ok, x);
    CHECK(labels(log) == strs({"input_1", "linear_1_1", "relu_1_2", "linear_2_3", "output_1"}));
  }

} // TEST_SUITE
