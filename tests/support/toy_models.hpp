#pragma once
/// \file
/// Ports of TorchLens's toy models (tests/example_models.py, behaviour report
/// §6.1) for the model-level tests: C++-frontend modules (TORCH_MODULE style)
/// and TorchScript modules built from C++ with Module::define. Each model is as
/// small as it can be and says which ATen top-level ops its forward calls.
///
/// Every C++-frontend `FooImpl` has `static std::vector<std::int64_t> input_shape()`;
/// `toy::input_for<FooImpl>()` draws a seeded input of that shape (values in
/// [-1, 1), so relu/tanh branches both matter). TorchScript builders are
/// `toy::ts::foo()`, with `toy::ts::foo_input()` where the shape is not [3, 3].

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace toy {

/// Seeded input in [-1, 1) of the given shape (independent of the global RNG).
inline at::Tensor seeded_input(const std::vector<std::int64_t>& shape, std::uint64_t seed = 7) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::rand(shape, gen) * 2 - 1;
}

template <class Impl>
at::Tensor input_for(std::uint64_t seed = 7) {
  return seeded_input(Impl::input_shape(), seed);
}

// ============================================================================
// C++-frontend models
// ============================================================================

/// fc1 → relu → fc2. Ops: linear, relu, linear.
struct SimpleFFImpl : torch::nn::Module {
  SimpleFFImpl()
      : fc1(register_module("fc1", torch::nn::Linear(5, 4))),
        fc2(register_module("fc2", torch::nn::Linear(4, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  static std::vector<std::int64_t> input_shape() { return {2, 5}; }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(SimpleFF);

/// In-place vs out-of-place relu. Ops: mul, relu_ (in place on the mul output),
/// sum, relu (out of place, on a different shape so it is not a second pass
/// of the first relu), add.
struct InPlaceFuncsImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto y = x * 2;
    y.relu_();
    auto z = torch::relu(y.sum(0) - 1); // sum, sub, relu
    return z + y;
  }
  static std::vector<std::int64_t> input_shape() { return {3, 4}; }
};
TORCH_MODULE(InPlaceFuncs);

/// ReLU module with inplace(true) vs a plain one. Ops: mul, relu_, relu.
struct ReluModulesImpl : torch::nn::Module {
  ReluModulesImpl()
      : inplace(
            register_module("inplace", torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)))),
        plain(register_module("plain", torch::nn::ReLU())) {}
  at::Tensor forward(const at::Tensor& x) {
    auto y = x * 3;
    inplace(y);
    return plain(y - 1);
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::ReLU inplace, plain;
};
TORCH_MODULE(ReluModules);

/// getitem then gelu. Ops: select (x[0]), gelu.
struct GeluModelImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return torch::gelu(x[0]); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(GeluModel);

/// x + torch.ones. Ops: ones (internally generated), add.
struct SimpleInternallyGeneratedImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return x + torch::ones(x.sizes()); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(SimpleInternallyGenerated);

/// x + torch.rand. Ops: rand (internally generated), add.
struct SimpleRandomImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return x + torch::rand(x.sizes()); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(SimpleRandom);

/// Dropout with the given p; call .train()/.eval(). Ops: dropout.
struct DropoutModelImpl : torch::nn::Module {
  explicit DropoutModelImpl(double p = 0.0)
      : drop(register_module("drop", torch::nn::Dropout(p))) {}
  at::Tensor forward(const at::Tensor& x) { return drop(x); }
  static std::vector<std::int64_t> input_shape() { return {4, 5}; }
  torch::nn::Dropout drop;
};
TORCH_MODULE(DropoutModel);

/// BatchNorm1d(3); train() adds `num_batches_tracked += 1` (add_ on a buffer).
/// Ops (eval): batch_norm reading buffers bn.running_mean, bn.running_var.
struct BatchNormModelImpl : torch::nn::Module {
  BatchNormModelImpl() : bn(register_module("bn", torch::nn::BatchNorm1d(3))) {}
  at::Tensor forward(const at::Tensor& x) { return bn(x); }
  static std::vector<std::int64_t> input_shape() { return {4, 3}; }
  torch::nn::BatchNorm1d bn;
};
TORCH_MODULE(BatchNormModel);

/// Ops: mul, cat([x, x*2], 1).
struct ConcatTensorsImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return torch::cat({x, x * 2}, 1); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ConcatTensors);

/// Ops: split (two outputs), mul of the halves.
struct SplitTensorImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto parts = x.split(2, 1);
    return parts[0] * parts[1];
  }
  static std::vector<std::int64_t> input_shape() { return {2, 4}; }
};
TORCH_MODULE(SplitTensor);

/// torch::nn::Identity returns its input: no op at all.
struct IdentityModelImpl : torch::nn::Module {
  IdentityModelImpl() : id(register_module("id", torch::nn::Identity())) {}
  at::Tensor forward(const at::Tensor& x) { return id(x); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::Identity id;
};
TORCH_MODULE(IdentityModel);

/// x + x: one op with two edges from the same parent. Ops: add.
struct SameTensorArgImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return x + x; }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(SameTensorArg);

/// Three tensor arguments. Ops: mul(x, y), add(_, z).
struct MultiInputsImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& z) {
    return x * y + z;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(MultiInputs);

/// A list argument. Ops: sub(v[0], v[1]).
struct ListInputImpl : torch::nn::Module {
  at::Tensor forward(const std::vector<at::Tensor>& v) { return v[0] - v[1]; }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ListInput);

/// Three returned tensors. Ops: add, mul, relu.
struct MultiOutputsImpl : torch::nn::Module {
  std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x) {
    return {x + 1, x * 2, torch::relu(x)};
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(MultiOutputs);

/// A returned list. Ops: sin, cos.
struct ListOutputImpl : torch::nn::Module {
  std::vector<at::Tensor> forward(const at::Tensor& x) { return {torch::sin(x), torch::cos(x)}; }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ListOutput);

/// A registered buffer used in forward. Ops: add(x, buf), mul.
struct BufferModelImpl : torch::nn::Module {
  BufferModelImpl()
      : buf(register_buffer("buf", torch::arange(6, torch::kFloat).reshape({2, 3}))) {}
  at::Tensor forward(const at::Tensor& x) { return (x + buf) * 2; }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  at::Tensor buf;
};
TORCH_MODULE(BufferModel);

/// sin feeds two branches that merge. Ops: sin, cos, tanh, add.
struct SimpleBranchingImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto y = torch::sin(x);
    auto a = torch::cos(y); // sequenced: operands of + have no evaluation order
    auto b = torch::tanh(y);
    return a + b;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(SimpleBranching);

/// `if (x.mean().item<float>() > 0)`: ops mean, item (scalar read), then relu
/// or tanh.
struct ConditionalBranchingImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    if (x.mean().item<float>() > 0) {
      return torch::relu(x);
    }
    return torch::tanh(x);
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ConditionalBranching);

/// `if ((x.sum() > 0).item<bool>())`: ops sum, gt, item (a 0-dim bool read),
/// then sin or cos.
struct ConditionalBoolImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    if ((x.sum() > 0).item<bool>()) {
      return torch::sin(x);
    }
    return torch::cos(x);
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ConditionalBool);

/// One ReLU module called three times around a Linear.
/// Ops: relu, linear, relu, relu.
struct RepeatedModuleImpl : torch::nn::Module {
  RepeatedModuleImpl()
      : act(register_module("act", torch::nn::ReLU())),
        fc(register_module("fc", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return act(act(fc(act(x)))); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::ReLU act;
  torch::nn::Linear fc;
};
TORCH_MODULE(RepeatedModule);

/// Nested modules three levels deep (TorchLens Level01/11/12/21/22): the
/// Linear in `outer.inner.fc` is reached through two custom modules.
struct Level2Impl : torch::nn::Module {
  Level2Impl() : fc(register_module("fc", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return torch::tanh(fc(x)); }
  torch::nn::Linear fc;
};
TORCH_MODULE(Level2);
struct Level1Impl : torch::nn::Module {
  Level1Impl()
      : inner(register_module("inner", Level2())),
        fc(register_module("fc", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc(inner(x)); }
  Level2 inner;
  torch::nn::Linear fc;
};
TORCH_MODULE(Level1);
/// Ops: linear (outer.inner.fc), tanh, linear (outer.fc), linear (head).
struct NestedModulesImpl : torch::nn::Module {
  NestedModulesImpl()
      : outer(register_module("outer", Level1())),
        head(register_module("head", torch::nn::Linear(3, 2))) {}
  at::Tensor forward(const at::Tensor& x) { return head(outer(x)); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  Level1 outer;
  torch::nn::Linear head;
};
TORCH_MODULE(NestedModules);

/// Orphans: an internally generated chain connected to nothing (ones, mul:
/// dropped from the log) and an input-derived dead end (exp: kept, no
/// children). Ops: ones, mul, exp, relu.
struct OrphanTensorsImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto orphan = torch::ones({2, 2}) * 3;
    auto dead_end = torch::exp(x);
    (void)orphan;
    (void)dead_end;
    return torch::relu(x);
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(OrphanTensors);

/// A loop without parameters: three times sin then add 1.
struct SimpleLoopNoParamImpl : torch::nn::Module {
  at::Tensor forward(at::Tensor x) {
    for (int i = 0; i < 3; ++i) {
      x = torch::sin(x) + 1;
    }
    return x;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(SimpleLoopNoParam);

/// `x += 1` several times, then one fc applied several times (paper:
/// SameOpRepeat). Ops: add_ ×3, linear ×3.
struct SameOpRepeatImpl : torch::nn::Module {
  SameOpRepeatImpl() : fc(register_module("fc", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(const at::Tensor& in) {
    auto x = in * 1;
    for (int i = 0; i < 3; ++i) {
      x += 1;
    }
    for (int i = 0; i < 3; ++i) {
      x = fc(x);
    }
    return x;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::Linear fc;
};
TORCH_MODULE(SameOpRepeat);

/// mul then one Linear applied five times in a loop.
/// Labels: mul_1_1, linear_1_2:1 … linear_1_2:5.
struct LinearLoopImpl : torch::nn::Module {
  LinearLoopImpl() : fc(register_module("fc", torch::nn::Linear(4, 4))) {}
  at::Tensor forward(const at::Tensor& in) {
    auto x = in * 2;
    for (int i = 0; i < 5; ++i) {
      x = fc(x);
    }
    return x;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 4}; }
  torch::nn::Linear fc;
};
TORCH_MODULE(LinearLoop);

/// fc reused non-adjacently: fc, relu, fc, tanh.
struct RecurrentParamsSimpleImpl : torch::nn::Module {
  RecurrentParamsSimpleImpl() : fc(register_module("fc", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return torch::tanh(fc(torch::relu(fc(x)))); }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::Linear fc;
};
TORCH_MODULE(RecurrentParamsSimple);

/// Two loops nested: outer ×2 { fc1; inner ×2 { fc2 } }. fc1: 2 passes, fc2: 4.
struct LoopingParamsDoubleNestedImpl : torch::nn::Module {
  LoopingParamsDoubleNestedImpl()
      : fc1(register_module("fc1", torch::nn::Linear(3, 3))),
        fc2(register_module("fc2", torch::nn::Linear(3, 3))) {}
  at::Tensor forward(at::Tensor x) {
    for (int i = 0; i < 2; ++i) {
      x = fc1(x);
      for (int j = 0; j < 2; ++j) {
        x = fc2(x);
      }
    }
    return x;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(LoopingParamsDoubleNested);

/// LSTM(5 → 4) on [seq 3, batch 2, 5]. Ops: zeros ×2 (h0, c0), lstm (three
/// outputs); the model returns the sequence output.
struct LSTMModelImpl : torch::nn::Module {
  LSTMModelImpl() : lstm(register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(5, 4)))) {}
  at::Tensor forward(const at::Tensor& x) { return std::get<0>(lstm(x)); }
  static std::vector<std::int64_t> input_shape() { return {3, 2, 5}; }
  torch::nn::LSTM lstm;
};
TORCH_MODULE(LSTMModel);

/// RNN(5 → 4). Ops: zeros (h0), rnn_tanh (two outputs).
struct RNNModelImpl : torch::nn::Module {
  RNNModelImpl() : rnn(register_module("rnn", torch::nn::RNN(torch::nn::RNNOptions(5, 4)))) {}
  at::Tensor forward(const at::Tensor& x) { return std::get<0>(rnn(x)); }
  static std::vector<std::int64_t> input_shape() { return {3, 2, 5}; }
  torch::nn::RNN rnn;
};
TORCH_MODULE(RNNModel);

/// ×0, +0, ×1 combined. Ops: mul, add, mul, add (a + b), mul (by c).
struct DummyOperationsImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto a = x * 0;
    auto b = x + 0;
    auto c = x * 1;
    auto ab = a + b;
    return ab * c;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(DummyOperations);

/// Small CNN with a `features` Sequential (not driven: modules from parameter
/// ownership). Ops: conv2d, relu, maxpool2d, conv2d, flatten, linear.
struct ConvNetImpl : torch::nn::Module {
  ConvNetImpl()
      : features(register_module(
            "features", torch::nn::Sequential(
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)), torch::nn::ReLU(),
                            torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3))))),
        fc(register_module("fc", torch::nn::Linear(4, 3))) {} // 8 → 6 → 3 → 1
  at::Tensor forward(const at::Tensor& x) { return fc(features->forward(x).flatten(1)); }
  static std::vector<std::int64_t> input_shape() { return {2, 1, 8, 8}; }
  torch::nn::Sequential features;
  torch::nn::Linear fc;
};
TORCH_MODULE(ConvNet);

/// The same ReLU and Linear in a Sequential (driven by log_forward_pass:
/// addresses "0", "1", "2").
inline torch::nn::Sequential simple_sequential() {
  return torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::Linear(3, 2));
}
inline std::vector<std::int64_t> simple_sequential_input_shape() {
  return {2, 4};
}

/// Throws from forward after some ops ran. Ops: mul, then a shape error in
/// matmul (c10::Error).
struct ThrowingModelImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto y = x * 2;
    return torch::matmul(y, torch::ones({y.size(1) + 1, 2}));
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(ThrowingModel);

/// Throws a std::runtime_error from user code between ops.
struct StdThrowingModelImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    auto y = torch::sin(x);
    if (y.numel() > 0) {
      throw std::runtime_error("user error in forward");
    }
    return y;
  }
  static std::vector<std::int64_t> input_shape() { return {2, 3}; }
};
TORCH_MODULE(StdThrowingModel);

// ============================================================================
// TorchScript models (Module::define; submodule calls as self.sub.forward(x))
// ============================================================================
namespace ts {

/// Default TorchScript toy input: [3, 3] in [-1, 1).
inline at::Tensor input(std::uint64_t seed = 7) {
  return seeded_input({3, 3}, seed);
}

/// `Leaf`: relu(x @ w) with parameter w [3, 3].
inline torch::jit::Module leaf(std::uint64_t seed = 1) {
  torch::jit::Module m("Leaf");
  m.register_parameter("w", seeded_input({3, 3}, seed), false);
  m.define(R"(
def forward(self, x):
    return torch.relu(torch.matmul(x, self.w))
)");
  return m;
}

/// `Linear`-like leaf: torch.linear(x, weight, bias), weight [3, 3], bias [3].
inline torch::jit::Module fc(std::uint64_t seed = 2) {
  torch::jit::Module m("Fc");
  m.register_parameter("weight", seeded_input({3, 3}, seed), false);
  m.register_parameter("bias", seeded_input({3}, seed + 100), false);
  m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  return m;
}

/// SimpleFF: fc1 → relu → fc2. Ops: linear, relu, linear.
inline torch::jit::Module simple_ff() {
  torch::jit::Module m("SimpleFF");
  m.register_module("fc1", fc(11));
  m.register_module("fc2", fc(12));
  m.define(R"(
def forward(self, x):
    return self.fc2.forward(torch.relu(self.fc1.forward(x)))
)");
  return m;
}

/// Nested: Top{mid: Mid{leaf1, leaf2}, out: Leaf}. Ops: matmul, relu ×3 pairs.
/// Modules: mid.leaf1, mid.leaf2, out.
inline torch::jit::Module nested() {
  torch::jit::Module mid("Mid");
  mid.register_module("leaf1", leaf(21));
  mid.register_module("leaf2", leaf(22));
  mid.define(R"(
def forward(self, x):
    return self.leaf2.forward(self.leaf1.forward(x))
)");
  torch::jit::Module top("Top");
  top.register_module("mid", mid);
  top.register_module("out", leaf(23));
  top.define(R"(
def forward(self, x):
    return self.out.forward(self.mid.forward(x))
)");
  return top;
}

/// One `Act` module (relu) called three times around `lin`.
/// Ops: relu (act:1), linear (lin), relu (act:2), relu (act:3).
inline torch::jit::Module repeated_module() {
  torch::jit::Module act("Act");
  act.define(R"(
def forward(self, x):
    return torch.relu(x)
)");
  torch::jit::Module m("RepeatedModule");
  m.register_module("act", act);
  m.register_module("lin", fc(31));
  m.define(R"(
def forward(self, x):
    x = self.act.forward(x)
    x = self.lin.forward(x)
    x = self.act.forward(x)
    return self.act.forward(x)
)");
  return m;
}

/// `if bool(x.sum() > 0)`: ops sum, gt, a scalar read (is_nonzero/item), then
/// relu (taken when the sum is positive) or tanh.
inline torch::jit::Module conditional() {
  torch::jit::Module m("Conditional");
  m.define(R"(
def forward(self, x):
    if bool(x.sum() > 0):
        return torch.relu(x)
    return torch.tanh(x)
)");
  return m;
}

/// AssignTensor: `y = x * 1.0; y[1, 1] = 5.0`. Ops: mul, select, select, copy_.
inline torch::jit::Module assign_tensor() {
  torch::jit::Module m("AssignTensor");
  m.define(R"(
def forward(self, x):
    y = x * 1.0
    y[1, 1] = 5.0
    return y
)");
  return m;
}

/// GetAndSetItem: `y = x.clone(); y[0] = x[1]`. Ops: clone, select (x[1]),
/// select (y[0]), copy_.
inline torch::jit::Module get_and_set_item() {
  torch::jit::Module m("GetAndSetItem");
  m.define(R"(
def forward(self, x):
    y = x.clone()
    y[0] = x[1]
    return y
)");
  return m;
}

/// GetItemTracking: slice, mutate the slice in place, then use the whole.
/// Ops: clone, select, mul_, mean, add.
inline torch::jit::Module get_item_tracking() {
  torch::jit::Module m("GetItemTracking");
  m.define(R"(
def forward(self, x):
    a = x.clone()
    b = a[0]
    b.mul_(2.0)
    return a.mean(0) + b
)");
  return m;
}

/// BufferRewrite: the buffer is reassigned in forward.
/// Ops: add(buf, x), mul. Reads buffer `buf` once.
inline torch::jit::Module buffer_rewrite() {
  torch::jit::Module m("BufferRewrite");
  m.register_buffer("buf", torch::ones({3, 3}));
  m.define(R"(
def forward(self, x):
    self.buf = self.buf + x
    return self.buf * 2.0
)");
  return m;
}

/// A `Fc` applied five times in a TorchScript loop after a mul.
/// Labels: mul_1_1, linear_1_2:1 … linear_1_2:5; module `fc` passes 1…5.
inline torch::jit::Module linear_loop() {
  torch::jit::Module m("LinearLoop");
  m.register_module("fc", fc(41));
  m.define(R"(
def forward(self, x):
    x = x * 2.0
    for _ in range(5):
        x = self.fc.forward(x)
    return x
)");
  return m;
}

/// In-place ops on a zero tensor made inside: zeros_like (internally
/// generated), add_ (in place), mul.
inline torch::jit::Module inplace_zero_tensor() {
  torch::jit::Module m("InPlaceZeroTensor");
  m.define(R"(
def forward(self, x):
    z = torch.zeros_like(x)
    z.add_(x)
    return z * 3.0
)");
  return m;
}

/// Two outputs in a tuple. Ops: sin, cos.
inline torch::jit::Module multi_outputs() {
  torch::jit::Module m("MultiOutputs");
  m.define(R"(
def forward(self, x):
    return torch.sin(x), torch.cos(x)
)");
  return m;
}

} // namespace ts
} // namespace toy
