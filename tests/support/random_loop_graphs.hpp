#pragma once
/// \file
/// Random loop graphs (no model run, no LibTorch): a few ops, then one random
/// loop body of 1-8 ops (relu, add, mul, linear, tanh, sigmoid, cat, a
/// two-output split, a parentless `ones`) run 1..max_iterations times. Each
/// body op reads values of its own iteration, the previous iteration's result,
/// or values kept from earlier iterations; linears read a shared weight, one of
/// two alternating weights, or one per iteration; ops sit in no module, in `m`,
/// or in one of three modules by iteration; some iterations return their value.
/// With `buffers`, some body ops also read a buffer: `bn.running_mean` (a fresh
/// read each time) or `state`, whose value is the iteration's latest result (a
/// buffer rewritten every iteration). The same seed gives the same graph
/// everywhere (std::mt19937); `buffers` changes it.

#include <support/graph_builders.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace torchlens::testing {

/// The random loop graph of `seed`.
inline ModelGraph random_loop_graph(unsigned seed, int max_iterations, bool buffers = false) {
  std::mt19937 rng(seed);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  GraphBuilder b;
  std::vector<Vertex> kept{b.input({2, 3})};
  if (pick(2) != 0) kept.push_back(b.input({2, 3}));
  const char* types[] = {"relu", "add", "mul", "linear", "tanh", "sigmoid", "cat", "split", "ones"};
  const auto shape = [](bool narrow) { return std::vector<std::int64_t>{2, narrow ? 3 : 4}; };
  for (std::size_t i = pick(4); i > 0; --i) {
    kept.push_back(
        b.op(types[pick(6)], {kept[pick(kept.size())]}, {.observed = false, .shape = shape(true)}));
  }
  struct Step {
    std::size_t type, a, b, param, module;
    bool narrow;
    std::size_t buffer = 0; ///< 1: reads bn.running_mean, 2: reads state
  };
  std::vector<Step> body(1 + pick(8));
  for (auto& s : body) {
    s = {pick(9), pick(4), pick(4), pick(3), pick(3), pick(2) == 1};
    if (buffers) s.buffer = pick(6) < 2 ? 1 + pick(2) : 0;
  }
  const int iterations = 1 + static_cast<int>(pick(static_cast<std::size_t>(max_iterations)));
  Vertex h = kept.back();
  for (int it = 0; it < iterations; ++it) {
    std::vector<Vertex> local{h};
    const auto operand = [&](std::size_t k) {
      if (k < 2) return local[k % local.size()];
      if (k == 2) return local.back();
      return kept[pick(kept.size())];
    };
    for (const Step& s : body) {
      const std::string type = types[s.type];
      std::vector<Vertex> parents;
      if (type != "ones") parents.push_back(operand(s.a));
      if (type == "add" || type == "mul" || type == "cat") parents.push_back(operand(s.b));
      if (s.buffer == 1) parents.push_back(b.buffer("bn.running_mean"));
      if (s.buffer == 2) parents.push_back(b.buffer("state", {local.back()}));
      OpSpec spec{.shape = shape(s.narrow)};
      if (type == "linear") {
        // appended piece by piece: GCC 12 warns (-Wrestrict, wrongly) on
        // `"l" + std::to_string(...)` once this is inlined into a large test
        std::string weight = "w.weight";
        if (s.param != 0) {
          weight = "l";
          weight += std::to_string(s.param == 1 ? it % 2 : it);
          weight += ".weight";
        }
        spec.params = {weight};
      }
      if (s.module == 0) {
        spec.observed = false;
      } else {
        std::string module = "m"; // (appended: GCC 12 warns falsely on `"m" + ...`, -Wrestrict)
        if (s.module != 1) module += std::to_string(it % 3);
        spec.modules = {{module, "Module", 1}};
      }
      if (type == "split") {
        for (int out = 0; out < 2; ++out) {
          spec.output_index = out;
          const Vertex v = b.op(type, parents, spec);
          b.graph()[v].num_outputs = 2;
          local.push_back(v);
        }
      } else {
        local.push_back(b.op(type, parents, spec));
      }
    }
    h = local.back();
    if (pick(3) == 0) kept.push_back(local[pick(local.size())]);
    if (pick(5) == 0) b.returns(local.back());
  }
  b.returns(h);
  if (pick(3) == 0) b.returns(kept.back());
  return b.build();
}

} // namespace torchlens::testing
