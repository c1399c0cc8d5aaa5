// Model-level tests on the C++-frontend toy models (TorchLens example_models.py
// ports): exact labels, edges, in-place semantics, sources, outputs, modules,
// parameters, recurrence, conditionals.

#include "model_test_helpers.hpp"

#include <support/toy_models.hpp>

#include <torchlens/torchlens.hpp>

#include <torch/torch.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using tlt::labels;
using tlt::strs;
using torchlens::log_forward_pass;
using torchlens::LogOptions;
using torchlens::NodeKind;

namespace {

/// Message of a c10::Error without the backtrace.
std::string error_text(const c10::Error& e) {
  return e.what_without_backtrace();
}

/// Writes into views of one tensor (see the test "writes into different parts...").
struct WritesImpl : torch::nn::Module {
  explicit WritesImpl(int mode) : mode(mode), fc(register_module("fc", torch::nn::Linear(4, 4))) {}
  torch::Tensor forward(torch::Tensor x) {
    if (mode == 0) {
      auto y = torch::zeros({2, 8});
      y.slice(1, 0, 4).copy_(fc(x));
      y.slice(1, 4, 8).copy_(x);
      return y;
    }
    auto out = torch::zeros({2, 3, 4});
    auto h = x;
    for (int64_t t = 0; t < 3; ++t) {
      h = torch::tanh(fc(h));
      out.select(1, mode == 1 ? t : 0).copy_(h);
    }
    return out;
  }
  int mode;
  torch::nn::Linear fc;
};
TORCH_MODULE(Writes);

} // namespace

TEST_SUITE("toy models: C++ frontend") {
  // LibTorch 1.13's C++ torch::nn::Linear on 2-D input runs
  // `torch::addmm(bias, x, weight.t())` (torch/nn/functional/linear.h): two ops, t
  // and addmm, as it runs. TorchScript's torch.linear is one aten::linear.
  const std::vector<std::string> kSimpleFFLabels{"input_1", "t_1_1",     "addmm_1_2", "relu_1_3",
                                                 "t_2_4",   "addmm_2_5", "output_1"};

  TEST_CASE("SimpleFF: labels, edges, activations, params, modules") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));

    CHECK(labels(log) == kSimpleFFLabels);
    CHECK(log.size() == 7);

    // edges (parents in argument order: addmm(bias, x, weight.t()))
    CHECK(log["input_1"].children() == strs({"addmm_1_2"}));
    CHECK(log["t_1_1"].parents().empty());
    CHECK(log["t_1_1"].children() == strs({"addmm_1_2"}));
    CHECK(log["addmm_1_2"].parents() == strs({"input_1", "t_1_1"}));
    CHECK(log["addmm_1_2"].children() == strs({"relu_1_3"}));
    CHECK(log["relu_1_3"].children() == strs({"addmm_2_5"}));
    CHECK(log["addmm_2_5"].parents() == strs({"relu_1_3", "t_2_4"}));
    CHECK(log["addmm_2_5"].children() == strs({"output_1"}));
    CHECK(log["output_1"].parents() == strs({"addmm_2_5"}));
    CHECK(boost::num_edges(log.graph()) == 6);

    // node fields
    auto fc1 = log["addmm_1_2"];
    CHECK(fc1->op_name == "aten::addmm");
    CHECK(fc1->layer_type == "addmm");
    CHECK(fc1->kind == NodeKind::op);
    CHECK(fc1->shape == std::vector<std::int64_t>{2, 4});
    CHECK(fc1->type_num == 1);
    CHECK(fc1->total_num == 2);
    CHECK_FALSE(fc1->is_inplace);
    CHECK(log["t_1_1"]->is_view);
    CHECK(log["input_1"]->kind == NodeKind::input);
    CHECK(log["input_1"]->io_address == "input.0");
    CHECK(log["output_1"]->kind == NodeKind::output);
    CHECK(log["output_1"]->io_address == "output.0");
    CHECK(log["addmm_2_5"]->feeds_output);
    CHECK_FALSE(log["relu_1_3"]->feeds_output);

    // parameters: addresses and shapes
    REQUIRE(log["t_1_1"]->params.size() == 1);
    CHECK(log["t_1_1"]->params[0].address == "fc1.weight");
    CHECK(log["t_1_1"]->params[0].shape == std::vector<std::int64_t>{4, 5});
    CHECK(log["t_1_1"]->params[0].numel == 20);
    CHECK(log["t_1_1"]->params[0].requires_grad);
    REQUIRE(fc1->params.size() == 1);
    CHECK(fc1->params[0].address == "fc1.bias");
    CHECK(fc1->params[0].shape == std::vector<std::int64_t>{4});
    CHECK(log["relu_1_3"]->params.empty());
    CHECK(log["t_2_4"]->params.at(0).address == "fc2.weight");

    // module containment from parameter ownership
    CHECK(log["t_1_1"].module() == "fc1");
    CHECK(fc1.module() == "fc1");
    CHECK(log["addmm_2_5"].module() == "fc2");
    CHECK(log["relu_1_3"].module() == "");

    // activations against an independent computation
    torch::NoGradGuard ng;
    const auto h1 = net->fc1(x);
    CHECK(torch::allclose(log["t_1_1"].activation(), net->fc1->weight.t()));
    CHECK(torch::allclose(log["addmm_1_2"].activation(), h1));
    CHECK(torch::allclose(log["relu_1_3"].activation(), torch::relu(h1)));
    CHECK(torch::allclose(log["addmm_2_5"].activation(), net->fc2(torch::relu(h1))));
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
    CHECK(torch::equal(log["input_1"].activation(), x));
  }

  TEST_CASE("lookup: label, short label, pass, module address, ordinals, unknown keys") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    auto log = log_forward_pass(net, toy::input_for<toy::SimpleFFImpl>());
    INFO(tlt::dump(log));

    CHECK(log["addmm_2_5"].label() == "addmm_2_5");
    CHECK(log["addmm_2"].label() == "addmm_2_5");     // short label
    CHECK(log["addmm_2_5:1"].label() == "addmm_2_5"); // single pass, :1 form
    CHECK(log["addmm_2:1"].label() == "addmm_2_5");
    CHECK(log["relu_1"].label() == "relu_1_3");
    CHECK(log["fc2"].label() == "addmm_2_5");   // module address: its output
    CHECK(log["fc1:1"].label() == "addmm_1_2"); // module pass
    CHECK(log["input.0"].label() == "input_1"); // io address
    CHECK(log["output.0"].label() == "output_1");
    CHECK(log[0].label() == "input_1"); // ordinal
    CHECK(log[3].label() == "relu_1_3");
    CHECK(log[-1].label() == "output_1"); // negative ordinal
    CHECK(log[-2].label() == "addmm_2_5");
    CHECK(log["2"].label() == "addmm_1_2"); // ordinal as text
    CHECK(log["-1"].label() == "output_1");
    CHECK(log.contains("addmm_1_2"));
    CHECK_FALSE(log.contains("addmm_9_9"));
    const auto keys = log.keys_of(log["relu_1_3"].vertex());
    for (const char* k : {"relu_1_3", "relu_1", "relu_1_3:1", "3", "-4"}) {
      CAPTURE(k);
      CHECK(std::find(keys.begin(), keys.end(), std::string(k)) != keys.end());
    }

    // unknown keys: c10::Error naming a near match
    CHECK_THROWS_AS(log.at("addnm_1_2"), c10::Error);
    try {
      (void)log.at("addnm_1_2");
      FAIL("no exception for an unknown key");
    } catch (const c10::Error& e) {
      const auto msg = error_text(e);
      INFO(msg);
      CHECK(msg.find("addmm_1_2") != std::string::npos);
    }
    CHECK_THROWS_AS(log[7], c10::Error); // out of range
    CHECK_THROWS_AS(log[-8], c10::Error);
    CHECK_THROWS_AS(log.at("fc3"), c10::Error);
  }

  TEST_CASE("InPlaceFuncs: relu_ is a new node; the earlier node keeps its pre-mutation value") {
    toy::InPlaceFuncs net;
    const auto x = toy::input_for<toy::InPlaceFuncsImpl>();
    REQUIRE((x * 2).min().item<float>() < 0); // the relu_ really changes something
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));

    CHECK(labels(log) == strs({"input_1", "mul_1_1", "relu_1_2", "sum_1_3", "sub_1_4", "relu_2_5",
                               "add_1_6", "output_1"}));
    CHECK(log["relu_1_2"]->is_inplace);
    CHECK(log["relu_1_2"]->op_name == "aten::relu_");
    CHECK_FALSE(log["relu_2_5"]->is_inplace);
    CHECK(log["relu_2_5"]->op_name == "aten::relu");
    CHECK_FALSE(log["mul_1_1"]->is_inplace);

    // later uses of the mutated tensor link to the in-place node
    CHECK(log["relu_1_2"].parents() == strs({"mul_1_1"}));
    CHECK(log["mul_1_1"].children() == strs({"relu_1_2"}));
    CHECK(log["sum_1_3"].parents() == strs({"relu_1_2"}));
    CHECK(log["add_1_6"].parents() == strs({"relu_2_5", "relu_1_2"}));
    CHECK(log["relu_1_2"].children() == strs({"sum_1_3", "add_1_6"}));

    // saved values: before and after the mutation
    const auto y = x * 2;
    CHECK(torch::allclose(log["mul_1_1"].activation(), y));
    CHECK(torch::allclose(log["relu_1_2"].activation(), torch::relu(y)));
    CHECK(torch::allclose(log["sum_1_3"].activation(), torch::relu(y).sum(0)));
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
  }

  TEST_CASE("ReLU module inplace(true) vs plain") {
    toy::ReluModules net;
    const auto x = toy::input_for<toy::ReluModulesImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) ==
          strs({"input_1", "mul_1_1", "relu_1_2", "sub_1_3", "relu_2_4", "output_1"}));
    CHECK(log["relu_1_2"]->is_inplace);
    CHECK_FALSE(log["relu_2_4"]->is_inplace);
    CHECK(torch::allclose(log["mul_1_1"].activation(), x * 3));
    CHECK(torch::allclose(log["relu_1_2"].activation(), torch::relu(x * 3)));
    CHECK(torch::allclose(log["relu_2_4"].activation(), torch::relu(torch::relu(x * 3) - 1)));
  }

  TEST_CASE("GeluModel: getitem (select) then gelu") {
    toy::GeluModel net;
    const auto x = toy::input_for<toy::GeluModelImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "select_1_1", "gelu_1_2", "output_1"}));
    CHECK(log["select_1_1"]->shape == std::vector<std::int64_t>{3});
    CHECK(torch::allclose(log["select_1_1"].activation(), x[0]));
    CHECK(torch::allclose(log["gelu_1_2"].activation(), torch::gelu(x[0])));
  }

  TEST_CASE("SimpleInternallyGenerated: torch::ones is an internally generated source") {
    toy::SimpleInternallyGenerated net;
    const auto x = toy::input_for<toy::SimpleInternallyGeneratedImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "ones_1_1", "add_1_2", "output_1"}));
    CHECK(log["ones_1_1"]->is_internally_generated);
    CHECK(log["ones_1_1"].parents().empty());
    CHECK_FALSE(log["add_1_2"]->is_internally_generated);
    CHECK_FALSE(log["input_1"]->is_internally_generated);
    CHECK(log["add_1_2"].parents() == strs({"input_1", "ones_1_1"}));
    CHECK(torch::equal(log["ones_1_1"].activation(), torch::ones({2, 3})));
    CHECK(torch::allclose(log["add_1_2"].activation(), x + 1));
  }

  TEST_CASE("SimpleRandom: seeded logs are reproducible and match a seeded plain forward") {
    toy::SimpleRandom net;
    const auto x = toy::input_for<toy::SimpleRandomImpl>();
    auto log1 = log_forward_pass(net, x, LogOptions().seed(123));
    auto log2 = log_forward_pass(net, x, LogOptions().seed(123));
    INFO(tlt::dump(log1));
    CHECK(labels(log1) == strs({"input_1", "rand_1_1", "add_1_2", "output_1"}));
    CHECK(log1["rand_1_1"]->is_internally_generated);
    CHECK(torch::equal(log1["rand_1_1"].activation(), log2["rand_1_1"].activation()));
    CHECK(log1.info().random_seed == 123);
    torch::manual_seed(123);
    const auto plain = net(x);
    CHECK(torch::equal(log1["output_1"].activation(), plain));
    CHECK(torch::allclose(log1["add_1_2"].activation(), x + log1["rand_1_1"].activation()));
  }

  TEST_CASE("Dropout: p=0 in training, p=0.5 seeded, eval returns its input") {
    const auto x = toy::input_for<toy::DropoutModelImpl>();
    SUBCASE("p = 0, train") {
      toy::DropoutModel net(0.0);
      net->train();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK(labels(log) == strs({"input_1", "dropout_1_1", "output_1"}));
      CHECK(torch::allclose(log["dropout_1_1"].activation(), x));
    }
    SUBCASE("p = 0.5, train, seeded") {
      toy::DropoutModel net(0.5);
      net->train();
      auto log = log_forward_pass(net, x, LogOptions().seed(5));
      torch::manual_seed(5);
      const auto plain = net(x);
      CHECK(torch::equal(log["dropout_1_1"].activation(), plain));
      CHECK((plain == 0).any().item<bool>()); // dropout did drop something
    }
    SUBCASE("eval: dropout returns its input tensor") {
      toy::DropoutModel net(0.5);
      net->eval();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK(torch::equal(log["output_1"].activation(), x));
      CHECK(log["output_1"].parents().size() == 1);
    }
  }

  TEST_CASE("BatchNorm (eval): buffer nodes with addresses, params, value") {
    torch::manual_seed(0);
    toy::BatchNormModel net;
    {
      torch::NoGradGuard ng;
      net->bn->running_mean.copy_(torch::tensor({0.5F, -0.25F, 1.0F}));
      net->bn->running_var.copy_(torch::tensor({2.0F, 0.5F, 1.5F}));
      net->bn->weight.copy_(torch::tensor({1.5F, 0.5F, -1.0F}));
      net->bn->bias.copy_(torch::tensor({0.1F, 0.2F, 0.3F}));
    }
    net->eval();
    const auto x = toy::input_for<toy::BatchNormModelImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));

    auto mean = tlt::by_io_address(log, "bn.running_mean");
    auto var = tlt::by_io_address(log, "bn.running_var");
    REQUIRE(mean.has_value());
    REQUIRE(var.has_value());
    CHECK((*mean)->kind == NodeKind::buffer);
    CHECK((*var)->kind == NodeKind::buffer);
    CHECK((*mean)->layer_type == "buffer");
    CHECK(tlt::count_kind(log, NodeKind::buffer) == 2);
    CHECK(log["bn.running_mean"].label() == mean->label());
    CHECK(torch::equal(mean->activation(), net->bn->running_mean));

    auto bn = tlt::of_type(log, "batchnorm");
    REQUIRE(bn.size() == 1);
    CHECK(bn[0]->op_name == "aten::batch_norm");
    CHECK(bn[0].parents() == std::vector<std::string>{"input_1", mean->label(), var->label()});
    REQUIRE(bn[0]->params.size() == 2);
    CHECK(bn[0]->params[0].address == "bn.weight");
    CHECK(bn[0]->params[1].address == "bn.bias");
    CHECK(bn[0]->params[0].shape == std::vector<std::int64_t>{3});
    CHECK(bn[0].module() == "bn");

    const auto expected = (x - net->bn->running_mean) / torch::sqrt(net->bn->running_var + 1e-5) *
                              net->bn->weight.detach() +
                          net->bn->bias.detach();
    CHECK(torch::allclose(bn[0].activation(), expected, 1e-5, 1e-6));
    CHECK(torch::allclose(log["output_1"].activation(), expected, 1e-5, 1e-6));
  }

  TEST_CASE("BatchNorm (train): batch statistics; running stats updated exactly once") {
    torch::manual_seed(0);
    toy::BatchNormModel net;
    torch::manual_seed(0);
    toy::BatchNormModel twin; // same initial state, run plainly
    net->train();
    twin->train();
    const auto x = toy::input_for<toy::BatchNormModelImpl>();

    SUBCASE("save all (one pass)") {
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      auto bn = tlt::of_type(log, "batchnorm");
      REQUIRE(bn.size() == 1);
      const auto mu = x.mean(0);
      const auto var = x.var(0, /*unbiased=*/false);
      const auto expected =
          (x - mu) / torch::sqrt(var + 1e-5) * net->bn->weight.detach() + net->bn->bias.detach();
      CHECK(torch::allclose(bn[0].activation(), expected, 1e-4, 1e-5));
      twin(x);
      CHECK(torch::allclose(net->bn->running_mean, twin->bn->running_mean));
      CHECK(torch::equal(net->bn->num_batches_tracked, twin->bn->num_batches_tracked));
    }
    SUBCASE("save by key (two passes): the model still sees one forward") {
      auto log = log_forward_pass(net, x, LogOptions().save({"batchnorm_1"}));
      twin(x);
      CHECK(torch::allclose(net->bn->running_mean, twin->bn->running_mean));
      CHECK(torch::equal(net->bn->num_batches_tracked, twin->bn->num_batches_tracked));
    }
  }

  TEST_CASE("ConcatTensors: cat with two parents") {
    toy::ConcatTensors net;
    const auto x = toy::input_for<toy::ConcatTensorsImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "mul_1_1", "cat_1_2", "output_1"}));
    CHECK(log["cat_1_2"].parents() == strs({"input_1", "mul_1_1"}));
    CHECK(log["input_1"].children() == strs({"mul_1_1", "cat_1_2"}));
    CHECK(log["cat_1_2"]->shape == std::vector<std::int64_t>{2, 6});
    CHECK(torch::allclose(log["cat_1_2"].activation(), torch::cat({x, x * 2}, 1)));
    CHECK(log.info().is_branching);
  }

  TEST_CASE("SplitTensor: one node per returned tensor, with output indices") {
    toy::SplitTensor net;
    const auto x = toy::input_for<toy::SplitTensorImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    auto splits = tlt::of_type(log, "split");
    REQUIRE(splits.size() == 2);
    CHECK(splits[0]->output_index == 0);
    CHECK(splits[1]->output_index == 1);
    CHECK(splits[0]->num_outputs == 2);
    CHECK(splits[1]->num_outputs == 2);
    CHECK(splits[0].parents() == strs({"input_1"}));
    CHECK(splits[1].parents() == strs({"input_1"}));
    auto muls = tlt::of_type(log, "mul");
    REQUIRE(muls.size() == 1);
    CHECK(muls[0].parents() == std::vector<std::string>{splits[0].label(), splits[1].label()});
    const auto halves = x.split(2, 1);
    CHECK(torch::allclose(splits[0].activation(), halves[0]));
    CHECK(torch::allclose(splits[1].activation(), halves[1]));
    CHECK(torch::allclose(muls[0].activation(), halves[0] * halves[1]));
  }

  TEST_CASE("Identity module: no op, the output's parent is the input") {
    toy::IdentityModel net;
    const auto x = toy::input_for<toy::IdentityModelImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "output_1"}));
    CHECK(log["output_1"].parents() == strs({"input_1"}));
    CHECK(torch::equal(log["output_1"].activation(), x));
  }

  TEST_CASE("SameTensorArg: x + x has two edges from the same parent") {
    toy::SameTensorArg net;
    const auto x = toy::input_for<toy::SameTensorArgImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "add_1_1", "output_1"}));
    CHECK(log["add_1_1"].parents() == strs({"input_1", "input_1"}));
    CHECK(log["input_1"].children() == strs({"add_1_1", "add_1_1"}));
    const auto& g = log.graph();
    const auto add = log["add_1_1"].vertex();
    CHECK(boost::in_degree(add, g) == 2);
    std::vector<int> positions;
    for (auto [it, end] = boost::in_edges(add, g); it != end; ++it) {
      CHECK(boost::source(*it, g) == log["input_1"].vertex());
      positions.push_back(g[*it].arg_pos);
    }
    std::sort(positions.begin(), positions.end());
    CHECK(positions == std::vector<int>{0, 1});
    CHECK(torch::allclose(log["add_1_1"].activation(), x * 2));
  }

  TEST_CASE("MultiInputs: three inputs with io addresses") {
    toy::MultiInputs net;
    const auto x = toy::seeded_input({2, 3}, 1);
    const auto y = toy::seeded_input({2, 3}, 2);
    const auto z = toy::seeded_input({2, 3}, 3);
    auto log = log_forward_pass(net, std::make_tuple(x, y, z));
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "input_2", "input_3", "mul_1_1", "add_1_2", "output_1"}));
    CHECK(log["input_1"]->io_address == "input.0");
    CHECK(log["input_2"]->io_address == "input.1");
    CHECK(log["input_3"]->io_address == "input.2");
    CHECK(log["input.1"].label() == "input_2");
    CHECK(log["mul_1_1"].parents() == strs({"input_1", "input_2"}));
    CHECK(log["add_1_2"].parents() == strs({"mul_1_1", "input_3"}));
    CHECK(torch::equal(log["input_3"].activation(), z));
    CHECK(torch::allclose(log["output_1"].activation(), x * y + z));
  }

  TEST_CASE("ListInput: tensors inside a list argument") {
    toy::ListInput net;
    const std::vector<at::Tensor> v{toy::seeded_input({2, 3}, 1), toy::seeded_input({2, 3}, 2)};
    auto log = log_forward_pass(net, v);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "input_2", "sub_1_1", "output_1"}));
    CHECK(log["input_1"]->io_address == "input.0.0");
    CHECK(log["input_2"]->io_address == "input.0.1");
    CHECK(log["sub_1_1"].parents() == strs({"input_1", "input_2"}));
    CHECK(torch::allclose(log["sub_1_1"].activation(), v[0] - v[1]));
  }

  TEST_CASE("MultiOutputs and ListOutput: one output node per returned tensor") {
    SUBCASE("tuple") {
      toy::MultiOutputs net;
      const auto x = toy::input_for<toy::MultiOutputsImpl>();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK(labels(log) == strs({"input_1", "add_1_1", "mul_1_2", "relu_1_3", "output_1",
                                 "output_2", "output_3"}));
      CHECK(log["output_1"]->io_address == "output.0");
      CHECK(log["output_2"]->io_address == "output.1");
      CHECK(log["output_3"]->io_address == "output.2");
      CHECK(log["output_2"].parents() == strs({"mul_1_2"}));
      CHECK(log["output.2"].label() == "output_3");
      CHECK(torch::allclose(log["output_2"].activation(), x * 2));
      CHECK(torch::allclose(log["output_3"].activation(), torch::relu(x)));
      CHECK(log.info().returned.size() == 3);
      CHECK(log.info().is_branching);
    }
    SUBCASE("list") {
      toy::ListOutput net;
      const auto x = toy::input_for<toy::ListOutputImpl>();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK(labels(log) == strs({"input_1", "sin_1_1", "cos_1_2", "output_1", "output_2"}));
      CHECK(log["output_1"]->io_address == "output.0");
      CHECK(log["output_2"]->io_address == "output.1");
      CHECK(torch::allclose(log["output_2"].activation(), torch::cos(x)));
    }
  }

  TEST_CASE("BufferModel: a registered buffer read in forward") {
    toy::BufferModel net;
    const auto x = toy::input_for<toy::BufferModelImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "buffer_1", "add_1_1", "mul_1_2", "output_1"}));
    auto buf = log["buffer_1"];
    CHECK(buf->kind == NodeKind::buffer);
    CHECK(buf->io_address == "buf");
    CHECK(buf->buffer_pass == 1);
    CHECK(buf->total_num == 0);
    CHECK(log["buf"].label() == "buffer_1");
    CHECK(log["add_1_1"].parents() == strs({"input_1", "buffer_1"}));
    CHECK(torch::equal(buf.activation(), net->buf));
    CHECK(torch::allclose(log["output_1"].activation(), (x + net->buf) * 2));
  }

  TEST_CASE("SimpleBranching: a node with two children") {
    toy::SimpleBranching net;
    const auto x = toy::input_for<toy::SimpleBranchingImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) ==
          strs({"input_1", "sin_1_1", "cos_1_2", "tanh_1_3", "add_1_4", "output_1"}));
    CHECK(log["sin_1_1"].children() == strs({"cos_1_2", "tanh_1_3"}));
    CHECK(log["add_1_4"].parents() == strs({"cos_1_2", "tanh_1_3"}));
    CHECK(log.info().is_branching);
    CHECK_FALSE(log.info().is_recurrent);
    CHECK_FALSE(log.info().has_conditional);
  }

  TEST_CASE("ConditionalBranching: a float .item() compared in C++ decides the branch") {
    toy::ConditionalBranching net;
    for (float sign : {1.0F, -1.0F}) {
      CAPTURE(sign);
      const auto x = toy::input_for<toy::ConditionalBranchingImpl>().abs() * sign;
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      // a read is no tensor: no `item` layer; the mean records it was read as a number
      CHECK(tlt::of_type(log, "item").empty());
      CHECK(log["mean_1_1"]->scalar_use == torchlens::ScalarUse::value);
      CHECK(log["mean_1_1"].children().empty());
      // TorchLens marks a branch where a bool decides it: a float read is not one
      CHECK_FALSE(log.info().has_conditional);
      const std::string taken = sign > 0 ? "relu" : "tanh";
      const std::string other = sign > 0 ? "tanh" : "relu";
      CHECK(tlt::of_type(log, taken).size() == 1);
      CHECK(tlt::of_type(log, other).empty());
      CHECK(torch::allclose(log["output_1"].activation(), net(x)));
    }
  }

  TEST_CASE("ConditionalBool: a 0-dim bool read is a terminal bool; conditional flagged") {
    toy::ConditionalBool net;
    const auto x = toy::input_for<toy::ConditionalBoolImpl>().abs(); // sum > 0
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "sum_1_1", "gt_1_2", "sin_1_3", "output_1"}));
    auto read = log["gt_1_2"];
    CHECK(read->scalar_use == torchlens::ScalarUse::condition);
    CHECK(read->is_terminal_bool);
    REQUIRE(read->scalar_bool_value.has_value());
    CHECK(*read->scalar_bool_value);
    CHECK_FALSE(log["gt_1_2"]->in_cond_branch); // the terminal bool, as in TorchLens
    CHECK(log["sum_1_1"]->in_cond_branch);
    CHECK_FALSE(log["sin_1_3"]->in_cond_branch);
    CHECK_FALSE(log["sum_1_1"]->is_output_ancestor);
    CHECK(log["sin_1_3"]->is_output_ancestor);
    CHECK(log.info().has_conditional);
    // the IF edge: from the output ancestor (input_1) into the condition branch
    int cond_edges = 0;
    const auto& g = log.graph();
    for (auto [it, end] = boost::edges(g); it != end; ++it) {
      if (g[*it].is_cond_branch_start) {
        ++cond_edges;
        CHECK(g[boost::source(*it, g)].label() == "input_1");
        CHECK(g[boost::target(*it, g)].label() == "sum_1_1");
      }
    }
    CHECK(cond_edges == 1);
  }

  TEST_CASE("RepeatedModule (C++ frontend): a Linear between reused ReLUs") {
    torch::manual_seed(0);
    toy::RepeatedModule net;
    const auto x = toy::input_for<toy::RepeatedModuleImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    auto relus = tlt::of_type(log, "relu");
    REQUIRE(relus.size() == 3);
    CHECK(log["fc"].label() == tlt::of_type(log, "addmm").at(0).label());
    CHECK(relus[1].parents() == std::vector<std::string>{log["fc"].label()});
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
  }

  TEST_CASE("NestedModules: module addresses through custom modules") {
    torch::manual_seed(0);
    toy::NestedModules net;
    const auto x = toy::input_for<toy::NestedModulesImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "t_1_1", "addmm_1_2", "tanh_1_3", "t_2_4", "addmm_2_5",
                               "t_3_6", "addmm_3_7", "output_1"}));
    CHECK(log["addmm_1_2"].module() == "outer.inner.fc");
    CHECK(log["t_1_1"]->params.at(0).address == "outer.inner.fc.weight");
    CHECK(log["addmm_1_2"]->params.at(0).address == "outer.inner.fc.bias");
    CHECK(log["addmm_2_5"].module() == "outer.fc");
    CHECK(log["addmm_3_7"].module() == "head");
    CHECK(log["outer.inner.fc"].label() == "addmm_1_2");
    CHECK(log["head"].label() == "addmm_3_7");
    torch::NoGradGuard ng;
    CHECK(torch::allclose(log["tanh_1_3"].activation(), net->outer->inner(x)));
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
  }

  TEST_CASE("OrphanTensors: disconnected internal chains dropped, input dead ends kept") {
    toy::OrphanTensors net;
    const auto x = toy::input_for<toy::OrphanTensorsImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "exp_1_1", "relu_1_2", "output_1"}));
    CHECK(log["exp_1_1"].children().empty());
    CHECK_FALSE(log["exp_1_1"]->is_output_ancestor);
    CHECK(log["relu_1_2"]->is_output_ancestor);
    CHECK(tlt::of_type(log, "ones").empty());
    CHECK(tlt::of_type(log, "mul").empty());
    CHECK(torch::allclose(log["exp_1_1"].activation(), torch::exp(x)));
  }

  TEST_CASE("DummyOperations: x*0, x+0, x*1 are logged like any op") {
    toy::DummyOperations net;
    const auto x = toy::input_for<toy::DummyOperationsImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) ==
          strs({"input_1", "mul_1_1", "add_1_2", "mul_2_3", "add_2_4", "mul_3_5", "output_1"}));
    CHECK(log["input_1"].children() == strs({"mul_1_1", "add_1_2", "mul_2_3"}));
    CHECK(log["add_2_4"].parents() == strs({"mul_1_1", "add_1_2"}));
    CHECK(log["mul_3_5"].parents() == strs({"add_2_4", "mul_2_3"}));
    CHECK(torch::equal(log["mul_1_1"].activation(), torch::zeros_like(x)));
    CHECK(torch::allclose(log["add_2_4"].activation(), x));
    CHECK(torch::allclose(log["output_1"].activation(), x * x));
  }

  TEST_CASE("ConvNet: non-driven Sequential, modules from parameter ownership") {
    torch::manual_seed(0);
    toy::ConvNet net;
    const auto x = toy::input_for<toy::ConvNetImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "conv2d_1_1", "relu_1_2", "maxpool2d_1_3", "conv2d_2_4",
                               "flatten_1_5", "t_1_6", "addmm_1_7", "output_1"}));
    CHECK(log["conv2d_1_1"].module() == "features.0");
    CHECK(log["conv2d_2_4"].module() == "features.3");
    CHECK(log["features.3"].label() == "conv2d_2_4");
    CHECK(log["conv2d_1_1"]->params.at(0).shape == std::vector<std::int64_t>{4, 1, 3, 3});
    CHECK(log["maxpool2d_1_3"]->op_name == "aten::max_pool2d");
    torch::NoGradGuard ng;
    auto seq = net->features;
    const auto c1 = seq[0]->as<torch::nn::Conv2d>()->forward(x);
    CHECK(torch::allclose(log["conv2d_1_1"].activation(), c1));
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
    const auto totals = log.totals();
    CHECK(totals.num_param_tensors == 6);
    CHECK(totals.num_params == 4 * 9 + 4 + 4 * 4 * 9 + 4 + 4 * 3 + 3);
  }

  TEST_CASE("Sequential: driven children have module frames") {
    torch::manual_seed(0);
    auto seq = toy::simple_sequential();
    const auto x = toy::seeded_input(toy::simple_sequential_input_shape());
    auto log = log_forward_pass(seq, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == kSimpleFFLabels);
    CHECK(log["relu_1_3"].module() == "1");
    REQUIRE_FALSE(log["relu_1_3"]->modules.empty());
    CHECK(log["relu_1_3"]->modules.back().type == "ReLU");
    CHECK(log["relu_1_3"]->modules.back().pass == 1);
    CHECK(log["t_1_1"].module() == "0");
    CHECK(log["t_1_1"]->modules.back().type == "Linear");
    // a string names the module (as in TorchLens); an integer is the ordinal
    CHECK(log["1"].label() == "relu_1_3");
    CHECK(log[1].label() == "t_1_1");
    CHECK(log["1:1"].label() == "relu_1_3");
    CHECK(log["2:1"].label() == "addmm_2_5");
    CHECK(log["t_2_4"]->params.at(0).address == "2.weight");
    torch::NoGradGuard ng;
    CHECK(torch::allclose(log["output_1"].activation(), seq->forward(x)));
  }

  TEST_CASE("LSTM and RNN: recurrent ATen ops with their parameters") {
    torch::manual_seed(0);
    SUBCASE("LSTM") {
      toy::LSTMModel net;
      const auto x = toy::input_for<toy::LSTMModelImpl>();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      auto lstm = tlt::of_type(log, "lstm");
      REQUIRE_FALSE(lstm.empty());
      CHECK(lstm[0]->output_index == 0);
      CHECK(lstm[0]->num_outputs == 3);
      CHECK(lstm[0]->shape == std::vector<std::int64_t>{3, 2, 4});
      std::vector<std::string> addresses;
      for (const auto& p : lstm[0]->params) {
        addresses.push_back(p.address);
      }
      CHECK(addresses ==
            strs({"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"}));
      CHECK(lstm[0]->params.at(0).shape == std::vector<std::int64_t>{16, 5});
      auto zeros = tlt::of_type(log, "zeros");
      CHECK(zeros.size() == 2);
      for (auto& z : zeros) {
        CHECK(z->is_internally_generated);
      }
      CHECK(lstm[0].module() == "lstm");
      CHECK(torch::allclose(log["output_1"].activation(), net(x)));
      CHECK(log["output_1"].parents() == std::vector<std::string>{lstm[0].label()});
    }
    SUBCASE("RNN") {
      toy::RNNModel net;
      const auto x = toy::input_for<toy::RNNModelImpl>();
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      auto rnn = tlt::of_type(log, "rnntanh");
      REQUIRE_FALSE(rnn.empty());
      CHECK(rnn[0]->op_name == "aten::rnn_tanh");
      CHECK(rnn[0]->params.size() == 4);
      CHECK(torch::allclose(log["output_1"].activation(), net(x)));
    }
  }

  // ---- recurrence ---------------------------------------------------------------
  // These need the group-recurrences pass in the default pipeline.

  TEST_CASE("LinearLoop: one Linear applied 5 times is one layer (t, addmm) with 5 passes") {
    torch::manual_seed(0);
    toy::LinearLoop net;
    const auto x = toy::input_for<toy::LinearLoopImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    std::vector<std::string> expected{"input_1", "mul_1_1"};
    for (int pass = 1; pass <= 5; ++pass) {
      expected.push_back("t_1_2:" + std::to_string(pass));
      expected.push_back("addmm_1_3:" + std::to_string(pass));
    }
    expected.emplace_back("output_1");
    CHECK(labels(log) == expected);
    for (int pass = 1; pass <= 5; ++pass) {
      CAPTURE(pass);
      const auto p = std::to_string(pass);
      auto l = log["addmm_1_3:" + p];
      CHECK(l->pass_num == pass);
      CHECK(l->num_passes == 5);
      CHECK(l->label_no_pass() == "addmm_1_3");
      CHECK(l->label_short() == "addmm_1:" + p);
      CHECK(l.module() == "fc");
      CHECK(log["fc:" + p].label() == "addmm_1_3:" + p); // module pass → its output
    }
    CHECK(log["addmm_1_3:3"].parents() == strs({"addmm_1_3:2", "t_1_2:3"}));
    CHECK(log["addmm_1_3:1"].parents() == strs({"mul_1_1", "t_1_2:1"}));
    CHECK(log["addmm_1:5"].label() == "addmm_1_3:5");
    CHECK_THROWS_AS(log.at("addmm_1_3"), c10::Error); // 5 passes: needs :N
    CHECK_THROWS_AS(log.at("fc"), c10::Error);
    CHECK(log.select("addmm_1_3").size() == 5);
    CHECK(log.info().is_recurrent);
    CHECK(log.info().max_recurrent_loops == 5);
    // activations of each pass
    torch::NoGradGuard ng;
    auto h = x * 2;
    for (int pass = 1; pass <= 5; ++pass) {
      h = net->fc(h);
      CHECK(torch::allclose(log["addmm_1_3:" + std::to_string(pass)].activation(), h));
    }
    // parameters counted once
    CHECK(log.totals().num_param_tensors == 2);
    CHECK(log.totals().num_params == 4 * 4 + 4);
  }

  TEST_CASE("RecurrentParamsSimple: fc reused non-adjacently") {
    torch::manual_seed(0);
    toy::RecurrentParamsSimple net;
    auto log = log_forward_pass(net, toy::input_for<toy::RecurrentParamsSimpleImpl>());
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "t_1_1:1", "addmm_1_2:1", "relu_1_3", "t_1_1:2",
                               "addmm_1_2:2", "tanh_1_4", "output_1"}));
    CHECK(log["addmm_1_2:2"]->num_passes == 2);
    CHECK(log["addmm_1_2:2"].parents() == strs({"relu_1_3", "t_1_1:2"}));
    CHECK(log.info().is_recurrent);
    CHECK(log.info().max_recurrent_loops == 2);
  }

  TEST_CASE("LoopingParamsDoubleNested: fc1 has 2 passes, fc2 has 4") {
    torch::manual_seed(0);
    toy::LoopingParamsDoubleNested net;
    auto log = log_forward_pass(net, toy::input_for<toy::LoopingParamsDoubleNestedImpl>());
    INFO(tlt::dump(log));
    auto linears = tlt::of_type(log, "addmm");
    REQUIRE(linears.size() == 6);
    std::vector<int> fc1_passes, fc2_passes;
    for (auto& l : linears) {
      const auto& addr = l->params.at(0).address;
      (addr == "fc1.bias" ? fc1_passes : fc2_passes).push_back(l->pass_num);
      CHECK(l->num_passes == (addr == "fc1.bias" ? 2 : 4));
    }
    CHECK(fc1_passes == std::vector<int>{1, 2});
    CHECK(fc2_passes == std::vector<int>{1, 2, 3, 4});
    CHECK(labels(log) == strs({"input_1", "t_1_1:1", "addmm_1_2:1", "t_2_3:1", "addmm_2_4:1",
                               "t_2_3:2", "addmm_2_4:2", "t_1_1:2", "addmm_1_2:2", "t_2_3:3",
                               "addmm_2_4:3", "t_2_3:4", "addmm_2_4:4", "output_1"}));
    CHECK(log.info().max_recurrent_loops == 4);
  }

  TEST_CASE("SameOpRepeat: in-place add_ three times, then a shared fc three times") {
    torch::manual_seed(0);
    toy::SameOpRepeat net;
    const auto x = toy::input_for<toy::SameOpRepeatImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    auto adds = tlt::of_type(log, "add");
    REQUIRE(adds.size() == 3);
    for (auto& a : adds) {
      CHECK(a->is_inplace);
    }
    CHECK(adds[1].parents() == std::vector<std::string>{adds[0].label()});
    CHECK(torch::allclose(adds[2].activation(), x + 3));
    auto linears = tlt::of_type(log, "addmm");
    REQUIRE(linears.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(linears[static_cast<std::size_t>(i)]->pass_num == i + 1);
      CHECK(linears[static_cast<std::size_t>(i)]->num_passes == 3);
    }
    CHECK(torch::allclose(log["output_1"].activation(), net(x)));
    // three one-op repeats in forward, in no module: a chain (later TorchLens's guard)
    const auto add_labels = [](const torchlens::ModelLog& l) {
      std::vector<std::string> out;
      for (auto& a : tlt::of_type(l, "add")) out.push_back(a.label());
      return out;
    };
    CHECK(add_labels(log) == strs({"add_1_2", "add_2_3", "add_3_4"}));
    CHECK_FALSE(adds[0]->num_passes > 1);
    // TorchLens 1.0's rule: one layer of three passes
    auto v1 = log_forward_pass(net, x, LogOptions().min_param_free_loop_body(1));
    CHECK(add_labels(v1) == strs({"add_1_2:1", "add_1_2:2", "add_1_2:3"}));
    // no loop detection: only the shared fc's ops are passes of one layer
    auto off = log_forward_pass(net, x, LogOptions().detect_loops(false));
    CHECK(add_labels(off) == strs({"add_1_2", "add_2_3", "add_3_4"}));
    CHECK(tlt::of_type(off, "addmm")[2]->num_passes == 3);
    auto v1_off =
        log_forward_pass(net, x, LogOptions().detect_loops(false).min_param_free_loop_body(1));
    CHECK(add_labels(v1_off) == strs({"add_1_2", "add_2_3", "add_3_4"}));
    try {
      (void)log_forward_pass(net, x, LogOptions().min_param_free_loop_body(0));
      FAIL("min_param_free_loop_body(0) was accepted");
    } catch (const c10::Error& e) {
      CHECK(error_text(e).find("min_param_free_loop_body must be at least 1") != std::string::npos);
    }
  }

  TEST_CASE("SimpleLoopNoParam: adjacent param-free repeats become passes") {
    toy::SimpleLoopNoParam net;
    const auto x = toy::input_for<toy::SimpleLoopNoParamImpl>();
    auto log = log_forward_pass(net, x);
    INFO(tlt::dump(log));
    CHECK(labels(log) == strs({"input_1", "sin_1_1:1", "add_1_2:1", "sin_1_1:2", "add_1_2:2",
                               "sin_1_1:3", "add_1_2:3", "output_1"}));
    CHECK(log.info().is_recurrent);
    CHECK(log.info().max_recurrent_loops == 3);
    CHECK(torch::allclose(log["add_1_2:3"].activation(), net(x)));
  }

  // ---- writes into views ---------------------------------------------------------

  TEST_CASE(
      "writes into different parts of a tensor are different layers; one slot written "
      "in a loop is one layer") {
    // TorchLens hashes `__setitem__`'s index into the op's equivalence type: on
    // these models (Python, TorchLens 1.0) `y[:, :4] = fc(x); y[:, 4:] = x` gives
    // setitem_1_3 and setitem_2_4 and no recurrence; `out[:, t] = h` in a loop a
    // setitem layer per step; `buf[:, 0] = h` in a loop one layer, setitem_1_5:1..3.
    // Here a write is `copy_` into the view, then a `baseupdate` holding the whole
    // tensor; where the view lies is the baseupdate's scalar arguments.
    auto location = [](const torchlens::LayerView& layer) {
      std::string text;
      for (const auto& a : layer->scalar_args) {
        text += (text.empty() ? "" : " ") + a.name.str() + "=" + a.value;
      }
      return text;
    };
    const auto x = toy::seeded_input({2, 4});
    torch::manual_seed(0);
    Writes net(0);
    SUBCASE("two halves: no recurrence") {
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK_FALSE(log.info().is_recurrent);
      auto updates = tlt::of_type(log, "baseupdate");
      REQUIRE(updates.size() == 2);
      CHECK(updates[0]->label() == "baseupdate_1_6");
      CHECK(updates[1]->label() == "baseupdate_2_9");
      CHECK(location(updates[0]) == "size=[2, 4] stride=[8, 1] storage_offset=0");
      CHECK(location(updates[1]) == "size=[2, 4] stride=[8, 1] storage_offset=4");
      CHECK(tlt::labels_of_type(log, "copy") == strs({"copy_1_5", "copy_2_8"}));
      CHECK(torch::allclose(updates[1].activation(), net(x)));
    }
    SUBCASE("a slot per step: a layer per write, the Linear recurrent") {
      net->mode = 1;
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      CHECK(log.info().is_recurrent);
      CHECK(log["addmm_1_3:1"]->num_passes == 3);
      auto updates = tlt::of_type(log, "baseupdate");
      REQUIRE(updates.size() == 3);
      for (std::size_t t = 0; t < 3; ++t) {
        CHECK(updates[t]->num_passes == 1);
        CHECK(location(updates[t]) ==
              "size=[2, 4] stride=[12, 1] storage_offset=" + std::to_string(4 * t));
      }
      CHECK(updates[0]->label_no_pass() != updates[1]->label_no_pass());
      CHECK(torch::allclose(updates[2].activation(), net(x)));
    }
    SUBCASE("the same slot every step: one layer, a pass per step") {
      net->mode = 2;
      auto log = log_forward_pass(net, x);
      INFO(tlt::dump(log));
      auto updates = tlt::of_type(log, "baseupdate");
      REQUIRE(updates.size() == 3);
      for (std::size_t t = 0; t < 3; ++t) {
        CHECK(updates[t]->num_passes == 3);
        CHECK(updates[t]->pass_num == static_cast<int>(t) + 1);
        CHECK(location(updates[t]) == "size=[2, 4] stride=[12, 1] storage_offset=0");
      }
      CHECK(tlt::labels_of_type(log, "copy").size() == 3);
      CHECK(log[tlt::labels_of_type(log, "copy")[0]]->num_passes == 3);
      CHECK(torch::allclose(updates[2].activation(), net(x)));
    }
  }

  // ---- errors ------------------------------------------------------------------

  TEST_CASE("exceptions in the model propagate and leave no capture behind") {
    const auto x = toy::seeded_input({2, 3});
    SUBCASE("c10::Error from an op") {
      toy::ThrowingModel net;
      CHECK_THROWS_AS(log_forward_pass(net, x), c10::Error);
    }
    SUBCASE("std::runtime_error from user code") {
      toy::StdThrowingModel net;
      CHECK_THROWS_AS(log_forward_pass(net, x), std::runtime_error);
    }
    // capture is gone: a following log is complete and exact
    toy::SimpleFF ff;
    const auto xf = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(ff, xf);
    CHECK(labels(log) == kSimpleFFLabels);
    CHECK(torch::equal(ff(xf), ff(xf)));
  }

} // TEST_SUITE
