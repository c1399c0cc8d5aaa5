// Validation by re-execution (src/validate): planted faults are found at
// exactly the layer they were planted in, and the toy models (in-place ops,
// views written later, random ops, dummy ops, batch norm in training, buffers,
// recurrent layers, conditionals) validate.

#include "../../src/capture/recorder.hpp"

#include <support/toy_models.hpp>

#include <torchlens/passes/all.hpp>
#include <torchlens/torchlens.hpp>
#include <torchlens/validate/validate.hpp>
#include <torchlens/validate/validate_pass.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using torchlens::FailureKind;
using torchlens::log_forward_pass;
using torchlens::LogOptions;
using torchlens::ModelLog;
using torchlens::validate_log;
using torchlens::validate_saved_activations;
using torchlens::ValidateOptions;
using torchlens::ValidationReport;
using torchlens::Vertex;

namespace {

std::string text(const ValidationReport& r) {
  std::ostringstream os;
  os << r;
  return os.str();
}

/// The log's activations with the one of `label` replaced by `f(old)`.
template <class F>
void corrupt(ModelLog& log, const std::string& label, F f) {
  auto acts = log.activations_by_id();
  const auto id = log[label].node().id;
  REQUIRE(acts[id].defined());
  acts[id] = f(acts[id].clone());
  log.set_activations(std::move(acts));
}

/// Swaps the argument positions of the two in-edges of `label`.
void swap_parents(ModelLog& log, const std::string& label) {
  auto& g = log.mutable_graph();
  const Vertex v = log[label].vertex();
  std::vector<torchlens::ModelGraph::edge_descriptor> edges;
  for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) edges.push_back(e);
  REQUIRE(edges.size() == 2);
  std::swap(g[edges[0]].arg_pos, g[edges[1]].arg_pos);
  std::swap(g[edges[0]].arg_name, g[edges[1]].arg_name);
}

/// A random op drawing from a generator made inside forward, seeded there.
struct ExplicitGeneratorImpl : torch::nn::Module {
  torch::Tensor forward(const torch::Tensor& x) {
    auto gen = at::detail::createCPUGenerator(3);
    const auto noise = torch::rand(x.sizes(), gen);
    return x * 2.0 + noise;
  }
};
TORCH_MODULE(ExplicitGenerator);

/// A sparse adjacency times a linear layer (a graph convolution).
struct SparseAdjacencyImpl : torch::nn::Module {
  torch::nn::Linear lin{nullptr};
  SparseAdjacencyImpl() { lin = register_module("lin", torch::nn::Linear(4, 4)); }
  torch::Tensor forward(const torch::Tensor& adj, const torch::Tensor& x) {
    return torch::mm(adj, lin->forward(x));
  }
};
TORCH_MODULE(SparseAdjacency);

/// Forward changes its own parameters: nn.Embedding with max_norm renormalises
/// the rows it looks up (in place, inside forward), then a weight is scaled
/// through `.data()` between two reads (a write its version counter misses).
struct SelfChangingImpl : torch::nn::Module {
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear fc{nullptr};
  SelfChangingImpl() {
    emb = register_module("emb",
                          torch::nn::Embedding(torch::nn::EmbeddingOptions(10, 4).max_norm(1.0)));
    fc = register_module("fc", torch::nn::Linear(4, 4));
  }
  torch::Tensor forward(const torch::Tensor& idx) {
    const auto e = emb->forward(idx);
    const auto a = fc->forward(e);
    fc->weight.data().mul_(0.5);
    return a + fc->forward(e);
  }
};
TORCH_MODULE(SelfChanging);

/// MoCo's key encoder: forward gives its parameters new data (`p.data = ...`).
struct MomentumEncoderImpl : torch::nn::Module {
  torch::nn::Linear q{nullptr}, k{nullptr};
  MomentumEncoderImpl() {
    q = register_module("q", torch::nn::Linear(4, 3));
    k = register_module("k", torch::nn::Linear(4, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    {
      torch::NoGradGuard no_grad;
      const auto pq = q->parameters(), pk = k->parameters();
      for (std::size_t i = 0; i < pk.size(); ++i) {
        pk[i].set_data(pk[i].data() * 0.9 + pq[i].data() * 0.1);
      }
    }
    return (q->forward(x) * k->forward(x)).sum(-1);
  }
};
TORCH_MODULE(MomentumEncoder);

/// Rows routed by a mask with one true in each row of two (a top-1-of-2
/// router): nonzero reports every row for that mask and for its negation.
struct RowsOfMaskImpl : torch::nn::Module {
  torch::Tensor forward(const torch::Tensor& x) {
    const auto rows = at::nonzero_numpy(x.gt(0))[0];
    return x.index_select(0, rows) * 2.0;
  }
};
TORCH_MODULE(RowsOfMask);

void require_one_failure(const ValidationReport& r, const std::string& label, FailureKind kind) {
  INFO(text(r));
  CHECK_FALSE(r.valid);
  REQUIRE(r.failures.size() == 1);
  CHECK(r.failures[0].label == label);
  CHECK(r.failures[0].kind == kind);
}

/// How many exemptions the report gives for each reason.
std::map<std::string, int> reasons_of(const ValidationReport& r) {
  std::map<std::string, int> reasons;
  for (const auto& e : r.exemptions) ++reasons[e.reason];
  return reasons;
}

LogOptions replay_options() {
  return LogOptions().keep_replay(true).seed(0);
}

/// Validates a C++-frontend toy and checks the counts.
template <class Model>
ValidationReport check_valid(Model& model, const at::Tensor& x, int checked) {
  const auto r = validate_saved_activations(model, x, LogOptions().seed(0));
  INFO(text(r));
  CHECK(r.valid);
  CHECK(r.failures.empty());
  CHECK(r.layers_checked == checked);
  return r;
}

ValidationReport check_valid_ts(torch::jit::Module& m, const at::Tensor& x, int checked) {
  const auto r = validate_saved_activations(m, {x}, LogOptions().seed(0));
  INFO(text(r));
  CHECK(r.valid);
  CHECK(r.failures.empty());
  CHECK(r.layers_checked == checked);
  return r;
}

torch::jit::Module scripted(const std::string& name, const std::string& source) {
  torch::jit::Module m(name);
  m.define(source);
  return m;
}

} // namespace

TEST_SUITE("validate: planted faults") {
  TEST_CASE("a changed value in one activation fails exactly that layer") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(net, x, replay_options());
    const auto truth = net->forward(x);
    REQUIRE(validate_log(log, {truth}).valid);

    corrupt(log, "relu_1_3", [](at::Tensor t) {
      t.view(-1)[0] += 0.5;
      return t;
    });
    const auto r = validate_log(log, {truth});
    require_one_failure(r, "relu_1_3", FailureKind::mismatch);
    CHECK(r.failures[0].max_error == doctest::Approx(0.5).epsilon(1e-6));
    // the child re-executed from the corrupted value differs too, but its parent
    // failed first: the mismatch is reported where it starts
  }

  TEST_CASE("a sign flip in a conv activation fails exactly that layer") {
    torch::manual_seed(0);
    toy::ConvNet net;
    const auto x = toy::input_for<toy::ConvNetImpl>();
    auto log = log_forward_pass(net, x, replay_options());
    const auto truth = net->forward(x);
    REQUIRE(validate_log(log, {truth}).valid);
    corrupt(log, "conv2d_1_1", [](const at::Tensor& t) { return -t; });
    require_one_failure(validate_log(log, {truth}), "conv2d_1_1", FailureKind::mismatch);
  }

  TEST_CASE("a corrupted TorchScript activation deep in a model") {
    auto m = toy::ts::nested();
    const auto x = toy::ts::input();
    auto log = log_forward_pass(m, {x}, replay_options());
    const auto truth = m.forward({x}).toTensor();
    REQUIRE(validate_log(log, {truth}).valid);
    corrupt(log, "matmul_2_3", [](at::Tensor t) { return t * 1.0001 + 1e-3; });
    require_one_failure(validate_log(log, {truth}), "matmul_2_3", FailureKind::mismatch);
  }

  TEST_CASE("swapped parents of a sub fail at the sub") {
    toy::ListInput net;
    const std::vector<at::Tensor> v{toy::seeded_input({2, 3}, 1), toy::seeded_input({2, 3}, 2)};
    auto log = log_forward_pass(net, v, replay_options());
    const auto truth = net->forward(v);
    REQUIRE(validate_log(log, {truth}).valid);
    swap_parents(log, "sub_1_1");
    const auto r = validate_log(log, {truth});
    require_one_failure(r, "sub_1_1", FailureKind::mismatch);
    // v0 - v1 against v1 - v0: the error is twice the largest difference
    CHECK(r.failures[0].max_error ==
          doctest::Approx(2 * (v[0] - v[1]).abs().max().item<double>()).epsilon(1e-5));
  }

  TEST_CASE("swapped parents of a div fail at the div") {
    auto m = scripted("Div", R"(
def forward(self, x):
    a = torch.sin(x) + 2.0
    b = torch.cos(x) + 3.0
    return torch.tanh(a / b)
)");
    const auto x = toy::ts::input();
    auto log = log_forward_pass(m, {x}, replay_options());
    const auto truth = m.forward({x}).toTensor();
    REQUIRE(validate_log(log, {truth}).valid);
    swap_parents(log, "div_1_5");
    require_one_failure(validate_log(log, {truth}), "div_1_5", FailureKind::mismatch);
  }

  TEST_CASE("an output that differs from the plain forward pass") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(net, x, replay_options());
    const auto wrong = net->forward(x) + 1e-4;
    const auto r = validate_log(log, {wrong});
    require_one_failure(r, "output_1", FailureKind::output_mismatch);
    CHECK(r.failures[0].max_error == doctest::Approx(1e-4).epsilon(1e-2));
  }

  TEST_CASE("replaying a random op without its generator state fails at that op") {
    torch::manual_seed(0);
    toy::DropoutModel net(0.5);
    net->train();
    const auto x = toy::input_for<toy::DropoutModelImpl>();
    at::manual_seed(0);
    const auto truth = net->forward(x);
    auto log = log_forward_pass(net, x, replay_options());
    REQUIRE(validate_log(log, {truth}).valid);
    // drop the recorded generator state of the dropout
    auto records = std::make_shared<torchlens::detail::ReplayRecords>(*log.replay());
    const auto id = log["dropout_1_1"].node().id;
    REQUIRE(records->by_id[id].rng.cpu.defined());
    records->by_id[id].rng.cpu = at::Tensor();
    log.set_replay(records);
    at::manual_seed(12345);
    require_one_failure(validate_log(log, {truth}), "dropout_1_1", FailureKind::mismatch);
  }

  TEST_CASE("a write into a view re-executes as as_strided_scatter (base update)") {
    // regression: base-update nodes had no replay record and went unchecked
    auto m = toy::ts::assign_tensor();
    const auto x = toy::ts::input();
    auto log = log_forward_pass(m, {x}, replay_options());
    std::string label;
    for (const auto& layer : log) {
      if (layer->op_name == "torchlens::base_update") label = layer.label();
    }
    REQUIRE_FALSE(label.empty());
    const auto& rec = log.replay()->by_id[log[label].node().id];
    REQUIRE(rec.op.has_value());
    CHECK(rec.op->schema().name() == "aten::as_strided_scatter");
    // its scalar arguments say where the view lies: the replay's size, stride, offset
    const auto& args = log[label].node().scalar_args;
    REQUIRE(args.size() == 3);
    const char* names[] = {"size", "stride", "storage_offset"};
    for (std::size_t i = 0; i < 3; ++i) {
      std::ostringstream printed;
      printed << rec.args[i + 2];
      CHECK(args[i].name.str() == names[i]);
      CHECK(args[i].value == printed.str());
    }
    const auto truth = m.forward({x}).toTensor();
    REQUIRE(validate_log(log, {truth}).valid);
    corrupt(log, label, [](at::Tensor t) {
      t[0][0] = 42.0; // outside the written element [1, 1]
      return t;
    });
    const auto r = validate_log(log, {truth});
    // the base update feeds the output: both report, the update where it starts
    INFO(text(r));
    REQUIRE(r.failures.size() == 2);
    CHECK(r.failures[0].label == "output_1");
    CHECK(r.failures[0].kind == FailureKind::output_mismatch);
    CHECK(r.failures[1].label == label);
    CHECK(r.failures[1].kind == FailureKind::mismatch);
  }

  TEST_CASE("a parent with no effect: a saturated clamp is proven by its bound") {
    // clamp(x, 5, 6) of x in [-1, 1) is 5 everywhere and stays 5 for nearly any
    // perturbation of x: every element is below the minimum (a proof on the
    // actual arguments, not a special value), so the edge is exempted, named
    auto m = scripted("Saturated", R"(
def forward(self, x):
    y = torch.sin(x)
    return torch.clamp(y, 5.0, 6.0)
)");
    const auto r = validate_saved_activations(m, {toy::ts::input()}, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    REQUIRE(r.exemptions.size() == 1);
    CHECK(r.exemptions[0].label == "clamp_1_2");
    CHECK(r.exemptions[0].parent == "sin_1_1");
    CHECK(r.exemptions[0].reason == "clamped to its minimum");
    // an unsaturated clamp (ReLU6-like) validates
    auto relu6 = scripted("Relu6", R"(
def forward(self, x):
    return torch.clamp(torch.sin(x), 0.0, 6.0)
)");
    CHECK(validate_saved_activations(relu6, {toy::ts::input()}, LogOptions().seed(0)).valid);
  }

  TEST_CASE("a log without replay records is refused") {
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(net, x, LogOptions().seed(0));
    CHECK_THROWS_AS(validate_log(log, {net->forward(x)}), c10::Error);
  }

  TEST_CASE("perturbation can be switched off") {
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    const auto r =
        validate_saved_activations(net, x, LogOptions().seed(0), ValidateOptions().perturb(false));
    CHECK(r.valid);
    CHECK(r.layers_checked == 5); // t, addmm, relu, t, addmm
    CHECK(r.perturbations == 0);
  }

} // TEST_SUITE

TEST_SUITE("validate: toy models") {
  TEST_CASE("SimpleFF: every op re-executed, every parent perturbed") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto r = check_valid(net, toy::input_for<toy::SimpleFFImpl>(), 5);
    // addmm_1_2 (input), relu (addmm_1_2), addmm_2_5 (relu); t has no tensor
    // parents (its weight is a parameter)
    CHECK(r.perturbations >= 3);
    CHECK(r.exempted == 0);
  }

  TEST_CASE("in-place ops: relu_ on a product, ReLU(inplace)") {
    toy::InPlaceFuncs a;
    check_valid(a, toy::input_for<toy::InPlaceFuncsImpl>(), 6);
    torch::manual_seed(0);
    toy::ReluModules b;
    check_valid(b, toy::input_for<toy::ReluModulesImpl>(), 4);
  }

  TEST_CASE("getitem then gelu; ones; cat; split; x + x") {
    toy::GeluModel a;
    check_valid(a, toy::input_for<toy::GeluModelImpl>(), 2);
    toy::SimpleInternallyGenerated b;
    check_valid(b, toy::input_for<toy::SimpleInternallyGeneratedImpl>(), 2);
    toy::ConcatTensors c;
    check_valid(c, toy::input_for<toy::ConcatTensorsImpl>(), 2);
    toy::SplitTensor d;
    check_valid(d, toy::input_for<toy::SplitTensorImpl>(), 3); // split (2 outputs), mul
    toy::SameTensorArg e;
    const auto r = check_valid(e, toy::input_for<toy::SameTensorArgImpl>(), 1);
    CHECK(r.perturbations == 1); // one parent, both its edges perturbed together
  }

  TEST_CASE("random ops replay with their generator state") {
    toy::SimpleRandom a;
    check_valid(a, toy::input_for<toy::SimpleRandomImpl>(), 2);

    toy::DropoutModel drop(0.5);
    drop->train();
    const auto x = toy::input_for<toy::DropoutModelImpl>();
    const auto r = check_valid(drop, x, 1);
    auto log = log_forward_pass(drop, x, LogOptions().seed(0));
    CHECK(log["dropout_1_1"].activation().eq(0).any().item<bool>()); // really dropped

    auto m = scripted("RandLike", R"(
def forward(self, x):
    noise = torch.rand_like(x)
    y = torch.dropout(x, 0.5, True)
    return y * noise + torch.randn_like(x)
)");
    check_valid_ts(m, toy::ts::input(), 5);
  }

  TEST_CASE("dummy operations: x*0, x+0, x*1 are exempted, not failed") {
    toy::DummyOperations net;
    const auto r = check_valid(net, toy::input_for<toy::DummyOperationsImpl>(), 5);
    // perturbed parents: x of x*0, x+0, x*1; a and b of a+b; ab and c of ab*c.
    // Only x*0 ignores its parent, excused by the special scalar 0.
    CHECK(r.perturbations == 7);
    CHECK(r.exempted == 1);

    toy::DropoutModel zero(0.0);
    zero->train();
    check_valid(zero, toy::input_for<toy::DropoutModelImpl>(), 1);
  }

  TEST_CASE("instance norm tracking running statistics, in training: they are written, not read") {
    // use_input_stats: the input's own statistics normalize, the running ones
    // are only updated (this was a false INVALID: "perturbing buffer_1 left it
    // unchanged"); in eval they are read, and perturbing them must change it
    torch::manual_seed(0);
    torch::nn::InstanceNorm2d norm(
        torch::nn::InstanceNorm2dOptions(3).track_running_stats(true).affine(true));
    norm->train();
    const auto x = torch::randn({2, 3, 4, 4});
    const auto mean = norm->running_mean.clone();
    const auto r = validate_saved_activations(norm, x, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    REQUIRE(r.exemptions.size() == 2);
    CHECK(r.exemptions[0].reason == "not read in training");
    CHECK(r.exemptions[1].reason == "not read in training");
    CHECK(torch::equal(norm->running_mean, mean)); // validation put them back
    norm->eval();
    const auto e = validate_saved_activations(norm, x, LogOptions().seed(0));
    INFO(text(e));
    CHECK(e.valid);
    CHECK(e.exempted == 0);
  }

  TEST_CASE("batch norm in training: validation leaves the running statistics as they were") {
    torch::manual_seed(0);
    toy::BatchNormModel net;
    net->train();
    const auto x = toy::input_for<toy::BatchNormModelImpl>();
    const auto mean = net->bn->running_mean.clone();
    const auto var = net->bn->running_var.clone();
    const auto batches = net->bn->num_batches_tracked.clone();
    const auto r = validate_saved_activations(net, x, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    // batch_norm (num_batches_tracked += 1 reads no input: trimmed as an orphan);
    // its parents input, running_mean, running_var: the running statistics are
    // not read in training
    CHECK(r.layers_checked == 1);
    CHECK(r.perturbations == 3);
    REQUIRE(r.exemptions.size() == 2);
    CHECK(r.exemptions[0].reason == "not read in training");
    CHECK(r.exemptions[1].reason == "not read in training");
    // ... whatever the weight: not excused by a special (all-ones) weight
    {
      torch::NoGradGuard no_grad;
      net->bn->weight.fill_(2.0);
      net->bn->bias.fill_(0.5);
    }
    const auto r2 = validate_saved_activations(net, x, LogOptions().seed(0));
    INFO(text(r2));
    CHECK(r2.valid);
    CHECK(r2.exempted == 2);
    CHECK(torch::equal(net->bn->running_mean, mean));
    CHECK(torch::equal(net->bn->running_var, var));
    CHECK(torch::equal(net->bn->num_batches_tracked, batches));

    net->eval();
    check_valid(net, x, 1);
  }

  TEST_CASE("buffers, branching, conditionals, multiple inputs and outputs") {
    toy::BufferModel a;
    check_valid(a, toy::input_for<toy::BufferModelImpl>(), 2);
    toy::SimpleBranching b;
    check_valid(b, toy::input_for<toy::SimpleBranchingImpl>(), 4);
    toy::ConditionalBranching c;
    check_valid(c, toy::input_for<toy::ConditionalBranchingImpl>(), 2); // mean, relu|tanh
    toy::ConditionalBool d;
    check_valid(d, toy::input_for<toy::ConditionalBoolImpl>(), 3); // sum, gt, sin|cos
    toy::MultiOutputs e;
    check_valid(e, toy::input_for<toy::MultiOutputsImpl>(), 3);
    toy::ListOutput f;
    check_valid(f, toy::input_for<toy::ListOutputImpl>(), 2);
    toy::MultiInputs g;
    const auto r = validate_saved_activations(
        g,
        std::make_tuple(toy::seeded_input({2, 3}, 1), toy::seeded_input({2, 3}, 2),
                        toy::seeded_input({2, 3}, 3)),
        LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    CHECK(r.layers_checked == 2);
    CHECK(r.perturbations == 4); // mul (x, y), add (mul, z)
  }

  TEST_CASE("modules: repeated, nested, loops, orphans, Sequential") {
    torch::manual_seed(0);
    toy::RepeatedModule a;
    check_valid(a, toy::input_for<toy::RepeatedModuleImpl>(), 5);
    toy::NestedModules b;
    check_valid(b, toy::input_for<toy::NestedModulesImpl>(), 7);
    toy::SimpleLoopNoParam c;
    check_valid(c, toy::input_for<toy::SimpleLoopNoParamImpl>(), 6);
    toy::SameOpRepeat d;
    check_valid(d, toy::input_for<toy::SameOpRepeatImpl>(), 10);
    toy::LinearLoop e;
    check_valid(e, toy::input_for<toy::LinearLoopImpl>(), 11);
    toy::OrphanTensors f;
    check_valid(f, toy::input_for<toy::OrphanTensorsImpl>(), 2);
    toy::ConvNet g;
    check_valid(g, toy::input_for<toy::ConvNetImpl>(), 7);
    auto seq = toy::simple_sequential();
    check_valid(seq, toy::seeded_input(toy::simple_sequential_input_shape()), 5);
  }

  TEST_CASE("recurrent layers: LSTM, RNN, GRU") {
    torch::manual_seed(0);
    toy::LSTMModel a;
    check_valid(a, toy::input_for<toy::LSTMModelImpl>(), 5); // zeros ×2, lstm ×3 outputs
    toy::RNNModel b;
    check_valid(b, toy::input_for<toy::RNNModelImpl>(), 3); // zeros, rnn_tanh ×2 outputs
    torch::nn::GRU gru(torch::nn::GRUOptions(5, 4).num_layers(2));
    const auto x = toy::seeded_input({3, 2, 5});
    const auto r = validate_saved_activations(gru, x, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    CHECK(r.layers_checked >= 2);
  }

  TEST_CASE("TorchScript toys") {
    auto x = toy::ts::input();
    auto leaf = toy::ts::leaf();
    check_valid_ts(leaf, x, 2);
    auto ff = toy::ts::simple_ff();
    check_valid_ts(ff, x, 3);
    auto nested = toy::ts::nested();
    check_valid_ts(nested, x, 6);
    auto rep = toy::ts::repeated_module();
    check_valid_ts(rep, x, 4);
    auto cond = toy::ts::conditional();
    check_valid_ts(cond, x, 3); // sum, gt, relu|tanh (bool reads are no ops)
    auto loop = toy::ts::linear_loop();
    check_valid_ts(loop, x, 6);
    auto multi = toy::ts::multi_outputs();
    check_valid_ts(multi, x, 2);
    auto same = scripted("SameArg", R"(
def forward(self, x):
    return x + x
)");
    check_valid_ts(same, x, 1);
  }

  TEST_CASE("TorchScript: writes into views and slices mutated later") {
    auto x = toy::ts::input();
    auto assign = toy::ts::assign_tensor();
    check_valid_ts(assign, x, 5);
    auto get_set = toy::ts::get_and_set_item();
    check_valid_ts(get_set, x, 5);
    auto tracking = toy::ts::get_item_tracking();
    check_valid_ts(tracking, x, 6);
    auto zero = toy::ts::inplace_zero_tensor();
    check_valid_ts(zero, x, 3);
    // forward writing into its input: restored before the logged run and after
    auto into_input = scripted("IntoInput", R"(
def forward(self, x):
    x.mul_(2.0)
    return x + 1.0
)");
    const auto xin = toy::ts::input();
    const auto xin_before = xin.clone();
    check_valid_ts(into_input, xin, 2);
    CHECK(torch::equal(xin, xin_before));

    auto buffer = toy::ts::buffer_rewrite();
    const auto before = buffer.attr("buf").toTensor().clone();
    check_valid_ts(buffer, x, 2);
    CHECK(torch::equal(buffer.attr("buf").toTensor(), before));
  }

  TEST_CASE("a random op on an explicit generator re-executes from the generator's state then") {
    // the generator has advanced when validation re-executes the op (twice:
    // plain and perturbed); the record keeps a copy of its state from before
    ExplicitGenerator net;
    const auto x = torch::randn({3, 4});
    check_valid(net, x, 3); // rand, mul, add
    auto log = log_forward_pass(net, x, replay_options());
    const auto expected = torch::rand({3, 4}, at::detail::createCPUGenerator(3));
    CHECK(torch::equal(log["rand_1_1"].activation(), expected));
    const auto r = validate_log(log, {net->forward(x)});
    INFO(text(r));
    CHECK(r.valid);
    CHECK(validate_log(log, {net->forward(x)}).valid); // the record's copy is unchanged
  }

  TEST_CASE("a sparse COO input: logged with its bytes, summarised, validated") {
    torch::manual_seed(0);
    SparseAdjacency net;
    const auto adj =
        torch::sparse_coo_tensor(torch::tensor({{0, 1, 2}, {1, 2, 0}}), torch::ones({3}), {3, 3});
    const auto x = torch::randn({3, 4});
    const auto r = validate_saved_activations(net, std::make_tuple(adj, x), LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    CHECK(r.layers_checked == 3); // t, addmm (the Linear), mm
    auto log = log_forward_pass(net, std::make_tuple(adj, x), LogOptions().seed(0));
    CHECK(log["input_1"]->bytes == 2 * 3 * 8 + 3 * 4); // indices and values (no nbytes())
    CHECK(log["input_1"].activation().is_sparse());
    const auto out = log["mm_1_3"];
    CHECK(out.parents() == std::vector<std::string>{"input_1", "addmm_1_2"});
    CHECK(torch::allclose(out.activation(), adj.to_dense().mm(net->lin->forward(x))));
    std::ostringstream summary;
    summary << log; // totals read every saved activation's bytes
    CHECK(summary.str().find("mm_1_3") != std::string::npos);
  }

} // TEST_SUITE

TEST_CASE("validate-activations is a pass: it runs inside a pipeline and catches a planted fault") {
  torch::manual_seed(0);
  torch::nn::Sequential seq(torch::nn::Linear(4, 6), torch::nn::ReLU(), torch::nn::Linear(6, 3));
  const auto x = torch::randn({2, 4});
  const std::vector<at::Tensor> truth{seq->forward(x)};
  // the raw capture (no passes), with what re-execution needs
  auto raw = log_forward_pass(seq, x, LogOptions().postprocess(false).keep_replay(true).seed(0));
  auto pipeline = torchlens::passes::default_pipeline().append(
      torchlens::passes::ValidateActivationsPass(raw, truth));
  CHECK(pipeline.to_string().find("validate-activations") != std::string::npos);

  torchlens::ModelGraph g = raw.graph();
  torchlens::PassContext ctx;
  pipeline.run(g, ctx);
  const auto& stats = ctx.record("validate-activations").result;
  CHECK(stats.get("ops re-executed") == 5); // t, addmm, relu, t, addmm
  CHECK(stats.get("failing layers") == 0);

  // corrupt the relu's saved value: the pass throws and names that layer
  auto acts = raw.activations_by_id();
  acts[3] = acts[3] + 1;
  raw.set_activations(acts);
  torchlens::ModelGraph g2 = raw.graph();
  CHECK_THROWS_WITH_AS(pipeline.run(g2), doctest::Contains("relu_1_3"), std::logic_error);
}

TEST_SUITE("validate: an exemption is a proof") {
  TEST_CASE("products with zero, powers of 0 and never-selected values are excused, by name") {
    auto m = scripted("Blind", R"(
def forward(self, x):
    a = torch.sin(x) * 0.0
    b = torch.cos(x) ** 0
    c = torch.where(x > 100.0, torch.tanh(x), x)
    return a + b + c
)");
    const auto r = check_valid_ts(m, toy::ts::input() + 1.0, 9);
    auto reasons = reasons_of(r);
    CHECK(reasons["multiplied by zero (other = 0)"] == 1);
    CHECK(reasons["raised to the power 0"] == 1);
    CHECK(reasons["never selected"] == 1);
    CHECK(reasons.size() == 3);
    CHECK(r.exempted == 3);
    // the report lists them by reason
    CHECK(text(r).find("1 × raised to the power 0: pow_1_4 ← cos_1_3") != std::string::npos);
  }

  TEST_CASE("a softmax over a dimension of size 1 is excused") {
    // a constant function of its input (all ones; log_softmax all zeros): a
    // generation loop's first attention step is a softmax over one key. A
    // softmax over three values is checked
    auto m = scripted("Single", R"(
def forward(self, x):
    a = torch.softmax(x.unsqueeze(-1), -1)
    b = torch.log_softmax(torch.sin(x).unsqueeze(1), 1)
    d = torch.softmax(x, -1)
    return a.squeeze(-1) + b.squeeze(1) + d
)");
    const auto r = check_valid_ts(m, toy::ts::input(), 10);
    auto reasons = reasons_of(r);
    CHECK(reasons["normalised over a dimension of size 1"] == 2);
    CHECK(reasons.size() == 1);
    CHECK(r.exempted == 2);
    // the softmax over x (three values per row) is perturbed and changes
    CHECK(text(r).find("2 × normalised over a dimension of size 1: softmax_1_2 ← unsqueeze_1_1, "
                       "logsoftmax_1_5 ← unsqueeze_2_4") != std::string::npos);
  }

  TEST_CASE("a scatter that writes every element of its destination is excused") {
    // the inverse permutation pack_padded_sequence computes: scattered into a
    // fresh tensor, every element written; a scatter into column 0 only is
    // checked (the other columns are the destination's)
    auto m = scripted("Scatter", R"(
def forward(self, x):
    perm = torch.argsort(torch.sin(torch.select(x, 0, 0)))
    inv = torch.zeros_like(perm).scatter(0, perm, torch.arange(3))
    part = torch.cos(x).scatter(1, torch.zeros_like(perm).view(3, 1), x)
    return torch.index_select(x, 1, inv) + part
)");
    const auto r = check_valid_ts(m, toy::ts::input(), 12);
    auto reasons = reasons_of(r);
    CHECK(reasons["every element overwritten"] == 1);
    CHECK(reasons["structural argument"] == 3); // the indices
    CHECK(reasons.size() == 2);                 // the cos under the partial scatter is checked
    CHECK(text(r).find("1 × every element overwritten: scatter_1_6 ← zeroslike_1_4") !=
          std::string::npos);
  }

  TEST_CASE("a scatter_reduce without self reaching every element is excused; with self, not") {
    // a top-k router's amax (include_self=False) into zeros: the zeros are never
    // read; with include_self=True the destination is part of the result
    auto m = scripted("ScatterReduce", R"(
def forward(self, x):
    idx = torch.argsort(x, 0)
    full = torch.zeros_like(x).scatter_reduce(0, idx, torch.exp(x), "amax", include_self=False)
    kept = torch.cos(x).scatter_reduce(0, idx, x, "sum", include_self=True)
    return full + kept
)");
    const auto x = toy::ts::input();
    const auto r = check_valid_ts(m, x, 7);
    auto reasons = reasons_of(r);
    INFO(text(r));
    CHECK(reasons["every element overwritten"] == 1);
    CHECK(text(r).find("every element overwritten: scatterreduce_1_4 ← zeroslike_1_2") !=
          std::string::npos);
    auto log = log_forward_pass(m, {x}, LogOptions().seed(0));
    const auto idx = torch::argsort(x, 0, false);
    const auto expected = torch::zeros_like(x).scatter_reduce(0, idx, x.exp(), "amax", false) +
                          x.cos().scatter_reduce(0, idx, x, "sum", true);
    CHECK(torch::allclose(log["output_1"].activation(), expected));
  }

  TEST_CASE("an index_copy listing every row is excused; one listing some rows is checked") {
    auto m = scripted("IndexCopy", R"(
def forward(self, x):
    order = torch.argsort(torch.select(x, 1, 0))
    full = torch.zeros_like(x).index_copy(0, order, torch.exp(x))
    part = torch.cos(x).index_copy(0, torch.narrow(order, 0, 0, 1), torch.narrow(x, 0, 0, 1))
    return full + part
)");
    const auto x = toy::ts::input();
    const auto r = check_valid_ts(m, x, 10);
    auto reasons = reasons_of(r);
    INFO(text(r));
    CHECK(reasons["every element overwritten"] == 1);
    CHECK(text(r).find("every element overwritten: indexcopy_1_5 ← zeroslike_1_3") !=
          std::string::npos);
    auto log = log_forward_pass(m, {x}, LogOptions().seed(0));
    const auto order = torch::argsort(x.select(1, 0), -1, false);
    const auto expected = torch::zeros_like(x).index_copy(0, order, x.exp()) +
                          x.cos().index_copy(0, order.narrow(0, 0, 1), x.narrow(0, 0, 1));
    CHECK(torch::allclose(log["output_1"].activation(), expected));
  }

  TEST_CASE("an index_put reaching every element, and meshgrid's other tensors, are excused") {
    // torchvision's FasterRCNN (eager) was INVALID for both: its anchor grid
    // (meshgrid's output 0 holds tensors[0]'s values; tensors[1] gives only its
    // size) and a zeros tensor filled through index lists. A fill of two of
    // three elements is checked (the third is the destination's).
    auto m = scripted("Grid", R"(
def forward(self, x):
    grid = torch.meshgrid([torch.sin(x[0]), torch.cos(x[1])], indexing="ij")
    z = torch.zeros(3)
    z[torch.argsort(x[2])] = torch.tanh(x[2])
    w = torch.ones(3)
    w[torch.argsort(x[2])[:2]] = torch.exp(x[1][:2])
    return grid[0] + grid[1] + z + w
)");
    const auto r = check_valid_ts(m, toy::ts::input(), 23);
    auto reasons = reasons_of(r);
    CHECK(reasons["every element overwritten"] == 1);
    CHECK(reasons["only its size is read (output 0)"] == 1);
    CHECK(reasons["only its size is read (output 1)"] == 1);
    CHECK(text(r).find("every element overwritten: indexput_1_") != std::string::npos);
    CHECK(text(r).find("← zeros_1_") != std::string::npos);
    CHECK(text(r).find("← ones_1_") == std::string::npos); // the partial fill is checked
  }

  TEST_CASE("a relu of negatives and add with alpha = 1 are checked, not excused") {
    // perturbing the relu's all-negative input with new values may leave it at
    // zero; shifting the values up changes it: no exemption is needed
    auto m = scripted("Neg", R"(
def forward(self, x):
    y = torch.relu(x - 100.0)
    return torch.add(y, x, alpha=1)
)");
    const auto r = check_valid_ts(m, toy::ts::input(), 3);
    CHECK(r.exempted == 0);
  }

  TEST_CASE("a parent without effect and no rule proving it is a failure") {
    // x cancels itself; no rule proves it (the old rules excused any op with a
    // 0 or 1 scalar argument, alpha = 1 of every add, or with an all-zero or
    // all-one operand)
    auto m = scripted("Hidden", R"(
def forward(self, x):
    y = x * 2.0
    return torch.sub(y, y) + x
)");
    const auto x = toy::ts::input();
    auto log = log_forward_pass(m, {x}, replay_options());
    const auto r = validate_log(log, {m.forward({x}).toTensor()});
    INFO(text(r));
    CHECK_FALSE(r.valid);
    REQUIRE(r.failures.size() == 1);
    CHECK(r.failures[0].label == "sub_1_2");
    CHECK(r.failures[0].detail == "perturbing parent mul_1_1 left it unchanged");
    CHECK(r.failures[0].kind == FailureKind::no_effect);
    CHECK(r.exempted == 0);
  }

  TEST_CASE("a saturated maximum or clamp is proven, not excused") {
    // the other operand (the bound) wins at every element: the argument is
    // compared, never taken; once one element is taken, perturbing must show
    auto m = scripted("Saturated", R"(
def forward(self, x):
    a = torch.maximum(x, torch.full_like(x, 1.0e9))
    b = torch.clamp(x, min=1.0e9)
    c = torch.minimum(torch.full_like(x, -1.0e9), x)
    return a + b + c
)");
    const auto x = toy::ts::input();
    const auto r = validate_saved_activations(m, {x}, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    int never_selected = 0, clamped = 0;
    for (const auto& e : r.exemptions) {
      never_selected += e.reason.rfind("never selected", 0) == 0;
      clamped += e.reason == "clamped to its minimum";
    }
    CHECK(never_selected == 2);
    CHECK(clamped == 1);
    auto half = scripted("HalfSaturated", R"(
def forward(self, x):
    return torch.maximum(x, torch.full_like(x, 1.0e9).index_fill(0, torch.tensor([0]), -1.0e9))
)");
    auto log = log_forward_pass(half, {x}, replay_options());
    CHECK(
        validate_log(log, {half.forward({x}).toTensor()}).valid); // row 0 is x's: perturbing shows
  }

  TEST_CASE("an edge that feeds no argument of the recorded call is an inconsistent structure") {
    torch::manual_seed(0);
    toy::SimpleFF net;
    const auto x = toy::input_for<toy::SimpleFFImpl>();
    auto log = log_forward_pass(net, x, replay_options());
    REQUIRE(validate_log(log, {net->forward(x)}).valid);
    auto& g = log.mutable_graph();
    const Vertex relu = log["relu_1_3"].vertex();
    for (auto e : boost::make_iterator_range(boost::in_edges(relu, g))) g[e].arg_pos = 5;
    const auto r = validate_log(log, {net->forward(x)});
    INFO(text(r));
    CHECK_FALSE(r.valid);
    bool found = false;
    for (const auto& f : r.failures)
      found = found || (f.kind == FailureKind::invariant && f.label == "relu_1_3");
    CHECK(found);
  }

  TEST_CASE("a duplicated label and a module pass beyond its calls are invariant failures") {
    auto m = toy::ts::repeated_module();
    const auto x = toy::ts::input();
    auto log = log_forward_pass(m, {x}, replay_options());
    const auto truth = m.forward({x}).toTensor();
    REQUIRE(validate_log(log, {truth}).valid);
    auto& g = log.mutable_graph();
    REQUIRE(g[1].kind == g[2].kind);
    g[1].layer_type = g[2].layer_type; // the fields the label is written from
    g[1].type_num = g[2].type_num;
    g[1].total_num = g[2].total_num;
    g[1].pass_num = g[2].pass_num;
    g[1].num_passes = g[2].num_passes;
    REQUIRE(g[1].label() == g[2].label());
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      std::vector<torchlens::ModuleFrame> frames = g[v].modules.vec();
      for (auto& f : frames) f.pass += 3;
      g[v].modules = frames;
    }
    const auto r = validate_log(log, {truth});
    INFO(text(r));
    int invariants = 0;
    for (const auto& f : r.failures) invariants += f.kind == FailureKind::invariant;
    CHECK(invariants >= 2);
  }

  TEST_CASE("a view read after an in-place write, and a tensor literal, validate") {
    auto m = scripted("StaleLiteral", R"(
def forward(self, x):
    x = x * 1.0
    y = x.t()
    x.add_(1.0)
    return torch.sin(y) * torch.tensor([1.0, 2.0, 3.0]).view(3, 1)
)");
    const auto x = toy::ts::input();
    // mul, t, add_, viewupdate, sin, view, mul (the literal is a source)
    check_valid_ts(m, x, 7);
    auto log = log_forward_pass(m, {x}, LogOptions().seed(0));
    CHECK(log["sin_1_5"].parents() == std::vector<std::string>{"viewupdate_1_4"});
    CHECK(torch::equal(log["viewupdate_1_4"].activation(), (x * 1.0 + 1.0).t()));
    CHECK(log["tensor_1_6"]->op_name == "aten::tensor");
    CHECK(torch::equal(log["tensor_1_6"].activation(), torch::tensor({1.0F, 2.0F, 3.0F})));
  }

  TEST_CASE("parameters that forward changes: each op re-executes on what it read") {
    torch::manual_seed(0);
    SelfChanging net;
    const auto idx = torch::tensor({1, 2, 3, 3, 4, 1}, torch::kLong).view({2, 3});
    const auto emb0 = net->emb->weight.detach().clone();
    const auto fc0 = net->fc->weight.detach().clone();
    // the renormalisation's own input (the weight) and the lookup
    const auto r = validate_saved_activations(net, idx, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    CHECK(r.failures.empty());
    // validation puts the model back as it found it, `.data()` write included
    CHECK(torch::equal(net->emb->weight, emb0));
    CHECK(torch::equal(net->fc->weight, fc0));

    auto log = log_forward_pass(net, idx, LogOptions().seed(0));
    // every row looked up has norm at most 1 (rows 1..4 of the weight renormalised)
    std::vector<std::string> lookups;
    for (auto v : boost::make_iterator_range(boost::vertices(log.graph()))) {
      if (log.graph()[v].layer_type == "embedding") lookups.push_back(log.graph()[v].label());
    }
    REQUIRE(lookups.size() == 1);
    const auto e = log[lookups[0]].activation();
    CHECK((e.norm(2, -1) <= 1.0 + 1e-5).all().item<bool>());
    const auto norms = emb0.norm(2, -1, true);
    const auto renormed = torch::where(norms > 1.0, emb0 / (norms + 1e-7), emb0);
    CHECK(torch::allclose(e, torch::embedding(renormed, idx), 1e-5, 1e-6));
    // the two reads of fc.weight: before and after the halving
    CHECK(torch::allclose(
        log["output_1"].activation(),
        torch::linear(e, fc0, net->fc->bias) + torch::linear(e, fc0 * 0.5, net->fc->bias), 1e-5,
        1e-6));

    MomentumEncoder moco;
    const auto x = torch::randn({2, 4});
    const auto k0 = moco->k->weight.detach().clone();
    const auto r2 = validate_saved_activations(moco, x, LogOptions().seed(0));
    INFO(text(r2));
    CHECK(r2.valid);
    CHECK(torch::equal(moco->k->weight, k0));
  }

  TEST_CASE("a bool parent is perturbed by new bits, not only by its negation") {
    RowsOfMask net;
    const auto x = torch::tensor({{-1.0, 1.0}, {1.0, -1.0}, {2.0, -2.0}, {-3.0, 3.0}, {1.0, -1.0}});
    const auto r = validate_saved_activations(net, x, LogOptions().seed(0));
    INFO(text(r));
    CHECK(r.valid);
    CHECK(r.failures.empty());
    auto log = log_forward_pass(net, x, LogOptions().seed(0));
    CHECK(torch::equal(log["nonzeronumpy_1_2"].activation(), torch::arange(5)));
    CHECK(log["nonzeronumpy_1_2"].parents() == std::vector<std::string>{"gt_1_1"});
    CHECK(torch::equal(log["output_1"].activation(), x * 2.0));
  }

  TEST_CASE("an order-only output (sort's indices) sees its parent's values mirrored") {
    // the indices that sort a batch of two lengths keep their order under half
    // of all random redraws and under every shift; mirrored values reverse it
    auto m = scripted("SortByLength", R"(
def forward(self, x, lengths):
    sorted_lengths, order = torch.sort(lengths, descending=True)
    return torch.index_select(x, 0, order) * 2.0
)");
    for (const auto& lengths : {torch::tensor({3, 2}), torch::tensor({2, 3}), torch::tensor({5, 1}),
                                torch::tensor({1, 4})}) {
      const auto x = torch::randn({2, 3});
      const auto r = validate_saved_activations(m, {x, lengths}, LogOptions().seed(0));
      INFO(text(r));
      CHECK(r.valid);
      auto log = log_forward_pass(m, {x, lengths}, LogOptions().seed(0));
      CHECK(torch::equal(log["output_1"].activation(),
                         x.index_select(0, std::get<1>(lengths.sort(0, true))) * 2.0));
    }
  }

  TEST_CASE("an out= buffer is written, not read: no in-edge, and its op validates") {
    auto m = scripted("OutBuffer", R"(
def forward(self, x):
    buf = torch.empty([3, 3])
    y = x * 2.0
    torch.add(x, y, out=buf)
    torch.mul(buf, x, out=buf)
    return torch.relu(buf) + x
)");
    const auto x = torch::randn({3, 3});
    // mul, add (out=), mul (out=), relu, add: the empty buffer feeds nothing and
    // is trimmed; an edge from it would fail validation (perturbing it changes
    // nothing) and make it a parent TorchLens does not have
    check_valid_ts(m, x, 5);
    auto log = log_forward_pass(m, {x}, LogOptions().seed(0));
    for (auto v : boost::make_iterator_range(boost::vertices(log.graph()))) {
      CHECK(log.graph()[v].layer_type != "empty");
    }
    CHECK(log["add_1_2"].parents() == std::vector<std::string>{"input_1", "mul_1_1"});
    CHECK(log["mul_2_3"].parents() == std::vector<std::string>{"add_1_2", "input_1"});
    CHECK(log["relu_1_4"].parents() == std::vector<std::string>{"mul_2_3"}); // the latest write
    CHECK(torch::allclose(log["add_1_2"].activation(), x * 3.0));
    CHECK(torch::allclose(log["mul_2_3"].activation(), x * 3.0 * x));
    CHECK(torch::allclose(log["add_2_5"].activation(), torch::relu(x * 3.0 * x) + x));
  }
}
