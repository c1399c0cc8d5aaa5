#pragma once
/// \file
/// Tiny hand-built model graphs for pass tests: no model run, no LibTorch.

#include <torchlens/graph/model_graph.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace torchlens::testing {

/// How to build one op vertex (designated-initializer friendly).
struct OpSpec {
  std::vector<std::string> params = {};     ///< parameter addresses read
  std::vector<ModuleFrame> modules = {};    ///< containment, outer → inner
  bool observed = true;                     ///< module_observed
  std::vector<std::int64_t> shape = {1, 4}; ///< output shape
  std::string dtype = "float32";
  std::vector<ScalarArg> scalar_args = {};
  ScalarUse read = ScalarUse::none; ///< read into a host scalar (`item`), and how used
  int output_index = 0;
};

/// Builds a ModelGraph the way capture does: vertices in creation order, ids = index.
class GraphBuilder {
 public:
  /// An `input` vertex with io_address `input.N`.
  Vertex input(std::vector<std::int64_t> shape = {1, 4}) {
    OpNode n = base(NodeKind::input, "input", std::move(shape));
    n.io_address = "input." + std::to_string(inputs_++);
    n.module_observed = true;
    return add(std::move(n), {});
  }
  /// A `buffer` vertex; `writer` is the op that produced its current value, if any.
  Vertex buffer(const std::string& address, std::vector<Vertex> writer = {}, int buffer_pass = 0) {
    OpNode n = base(NodeKind::buffer, "buffer", {4});
    n.io_address = address;
    n.buffer_pass = buffer_pass;
    n.module_observed = true;
    return add(std::move(n), writer);
  }
  /// An op of TorchLens type `type` reading `parents` in argument order.
  Vertex op(const std::string& type, std::vector<Vertex> parents, OpSpec spec = {}) {
    OpNode n = base(NodeKind::op, type, spec.shape);
    n.op_name = "aten::" + type;
    n.dtype = spec.dtype;
    std::vector<ParamRef> params;
    for (const auto& p : spec.params) params.push_back(ParamRef{p, {4, 4}, 16, 64, true});
    n.params = params;
    n.modules = spec.modules;
    n.module_observed = spec.observed;
    n.scalar_args = spec.scalar_args;
    n.scalar_use = spec.read;
    n.output_index = spec.output_index;
    n.is_internally_generated = parents.empty();
    return add(std::move(n), parents);
  }
  /// Records v as returned by forward() at `output.N`.
  GraphBuilder& returns(Vertex v) {
    auto& info = g_[boost::graph_bundle];
    info.returned.push_back({g_[v].id, "output." + std::to_string(info.returned.size())});
    return *this;
  }
  /// The graph built so far.
  ModelGraph& graph() { return g_; }
  /// Moves the graph out.
  ModelGraph build() { return std::move(g_); }

 private:
  static OpNode base(NodeKind kind, const std::string& type, std::vector<std::int64_t> shape) {
    OpNode n;
    n.kind = kind;
    n.op_name = type;
    n.layer_type = type;
    n.shape = std::move(shape);
    n.dtype = "float32";
    n.device = "cpu";
    n.bytes = 16;
    return n;
  }
  Vertex add(OpNode n, const std::vector<Vertex>& parents) {
    auto& info = g_[boost::graph_bundle];
    n.id = info.next_id++;
    Vertex v = boost::add_vertex(std::move(n), g_);
    int pos = 0;
    for (Vertex p : parents) {
      TensorEdge e;
      e.arg_pos = pos++;
      e.arg_name = pos == 1 ? "input" : "other";
      boost::add_edge(p, v, e, g_);
    }
    return v;
  }
  ModelGraph g_;
  int inputs_ = 0;
};

/// A module frame `{address, type, pass}`.
inline ModuleFrame frame(std::string address, std::string type = "Module", int pass = 1) {
  return ModuleFrame{std::move(address), std::move(type), pass};
}

// ---- canonical graphs -----------------------------------------------------------

/// input → relu → linear(fc) → output.
inline ModelGraph chain_graph() {
  GraphBuilder b;
  auto x = b.input();
  auto r = b.op("relu", {x});
  auto l = b.op("linear", {r}, {.params = {"fc.weight", "fc.bias"}});
  b.returns(l);
  return b.build();
}

/// Paper Fig. 4A: input → cos → linear(fc) → add → sin → cos → linear(fc) → add → output.
inline ModelGraph fig4a_graph() {
  GraphBuilder b;
  auto x = b.input();
  auto c1 = b.op("cos", {x});
  auto l1 = b.op("linear", {c1}, {.params = {"fc.weight", "fc.bias"}});
  auto a1 = b.op("add", {l1}, {.scalar_args = {{"other", "1"}}});
  auto s = b.op("sin", {a1});
  auto c2 = b.op("cos", {s});
  auto l2 = b.op("linear", {c2}, {.params = {"fc.bias", "fc.weight"}});
  auto a2 = b.op("add", {l2}, {.scalar_args = {{"other", "1"}}});
  b.returns(a2);
  return b.build();
}

/// A parameter-free chain built from `pattern` (one op per letter, type = the letter).
inline ModelGraph pattern_graph(const std::string& pattern) {
  GraphBuilder b;
  Vertex cur = b.input();
  for (char c : pattern) cur = b.op(std::string(1, c), {cur});
  b.returns(cur);
  return b.build();
}

/// One Linear applied `times` times in a loop: input → linear:1 → ... → linear:times → output.
inline ModelGraph linear_loop_graph(int times) {
  GraphBuilder b;
  Vertex cur = b.input();
  for (int i = 0; i < times; ++i) cur = b.op("linear", {cur}, {.params = {"fc.weight", "fc.bias"}});
  b.returns(cur);
  return b.build();
}

/// `if torch.mean(x - 5) > 3: x = relu(x)`: sub, mean, gt (terminal bool read as the
/// `if` condition), relu returned.
inline ModelGraph conditional_graph() {
  GraphBuilder b;
  auto x = b.input();
  auto sub = b.op("sub", {x}, {.scalar_args = {{"other", "5"}}});
  auto mean = b.op("mean", {sub}, {.shape = {}});
  b.op("gt", {mean},
       {.shape = {},
        .dtype = "bool",
        .scalar_args = {{"other", "3"}},
        .read = ScalarUse::condition});
  auto r = b.op("relu", {x});
  b.returns(r);
  return b.build();
}

/// A mix of everything: orphans, a dead-end, buffers (one duplicated), modules
/// partly unobserved, a shared-parameter layer, branching.
inline ModelGraph mixed_graph() {
  GraphBuilder b;
  auto x = b.input();
  auto noise = b.op("rand", {}, {.observed = false}); // orphan
  b.op("mul", {noise}, {.observed = false});          // orphan
  auto ones = b.op("ones", {}, {.observed = false});  // feeds the block
  auto c1 =
      b.op("conv2d", {x}, {.params = {"block.conv.weight"}, .modules = {frame("block", "Block")}});
  auto m1 = b.buffer("block.bn.running_mean");
  auto m1b = b.buffer("block.bn.running_mean"); // duplicate read
  auto bn = b.op("batchnorm", {c1, m1, m1b},
                 {.params = {"block.bn.weight"},
                  .modules = {frame("block", "Block"), frame("block.bn", "BatchNorm2d")}});
  auto add = b.op("add", {bn, ones}, {.modules = {frame("block", "Block")}, .observed = false});
  auto r = b.op("relu", {add}, {.modules = {frame("block", "Block")}});
  auto c2 = b.op("conv2d", {r},
                 {.params = {"block.conv.weight"}, .modules = {frame("block", "Block", 2)}});
  auto s = b.op("sum", {c2}, {.observed = false, .shape = {}});
  b.op("gt", {s},
       {.observed = false, .shape = {}, .dtype = "bool", .read = ScalarUse::condition}); // if
  auto out = b.op("relu", {c2}, {.modules = {frame("block", "Block", 2)}});
  b.returns(out).returns(r);
  return b.build();
}

} // namespace torchlens::testing
