// Random loop graphs for checking group-recurrences against TorchLens's own
// grouping code (scripts/compare_grouping_with_torchlens.py runs both). Not a
// test by itself: it prints, one JSON object per line, each graph as the pass
// saw it (TorchLens's raw label, the equivalence type, op, parameters,
// parents) and the layer and pass the default pipeline gave every vertex.
//
// Usage: random_loop_graphs [first_seed=0] [count=1000] [max_iterations=40]
//
// A graph is a few ops, then one random loop body of 1-8 ops (relu, add, mul,
// linear, tanh, sigmoid, cat, a two-output split) run 1..max_iterations times.
// Each body op reads values of its own iteration, the previous iteration's
// result, or values kept from earlier iterations; linears read a shared weight,
// one of two alternating weights, or one per iteration; ops sit in no module,
// in `m`, or in one of three modules by iteration.
#include <support/graph_builders.hpp>
#include <torchlens/passes/all.hpp>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace torchlens;
using torchlens::testing::GraphBuilder;
using torchlens::testing::OpSpec;

ModelGraph random_graph(unsigned seed, int max_iterations) {
  std::mt19937 rng(seed);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  GraphBuilder b;
  std::vector<Vertex> kept{b.input({2, 3})};
  if (pick(2) != 0) kept.push_back(b.input({2, 3}));
  const char* types[] = {"relu", "add", "mul", "linear", "tanh", "sigmoid", "cat", "split"};
  const auto shape = [](bool narrow) { return std::vector<std::int64_t>{2, narrow ? 3 : 4}; };
  for (std::size_t i = pick(4); i > 0; --i) {
    kept.push_back(
        b.op(types[pick(6)], {kept[pick(kept.size())]}, {.observed = false, .shape = shape(true)}));
  }
  struct Step {
    std::size_t type, a, b, param, module;
    bool narrow;
  };
  std::vector<Step> body(1 + pick(8));
  for (auto& s : body) {
    s = {pick(8), pick(4), pick(4), pick(3), pick(3), pick(2) == 1};
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
      std::vector<Vertex> parents{operand(s.a)};
      if (type == "add" || type == "mul" || type == "cat") parents.push_back(operand(s.b));
      OpSpec spec{.shape = shape(s.narrow)};
      if (type == "linear") {
        spec.params = {s.param == 0   ? std::string("w.weight")
                       : s.param == 1 ? "l" + std::to_string(it % 2) + ".weight"
                                      : "l" + std::to_string(it) + ".weight"};
      }
      if (s.module == 0) {
        spec.observed = false;
      } else {
        spec.modules = {{s.module == 1 ? "m" : "m" + std::to_string(it % 3), "Module", 1}};
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
  }
  b.returns(h);
  if (pick(3) == 0) b.returns(kept.back());
  return b.build();
}

void print_json_string(const std::string& s) {
  std::putchar('"');
  for (char c : s) {
    if (c == '"' || c == '\\') std::putchar('\\');
    std::putchar(c);
  }
  std::putchar('"');
}

} // namespace

int main(int argc, char** argv) {
  const unsigned first = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 0;
  const unsigned count =
      argc > 2 ? static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)) : 1000;
  const int max_iterations = argc > 3 ? std::atoi(argv[3]) : 40;
  if (max_iterations < 1) {
    std::fprintf(stderr, "random_loop_graphs: max_iterations must be at least 1\n");
    return 2;
  }
  for (unsigned seed = first; seed < first + count; ++seed) {
    ModelGraph g = random_graph(seed, max_iterations);
    run_default_pipeline(g);
    // TorchLens's raw labels: {type}_{type_num}[_{creation}]_raw, outputs numbered apart
    std::map<std::string, int> per_type;
    int outputs = 0;
    std::printf("{\"seed\":%u,\"nodes\":[", seed);
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      const OpNode& node = g[v];
      std::string label = node.kind == NodeKind::output ? "output" : node.layer_type.str();
      label += '_';
      label +=
          std::to_string(node.kind == NodeKind::output ? ++outputs : ++per_type[node.layer_type]);
      if (node.kind == NodeKind::op) label += '_' + std::to_string(node.id + 1);
      label += "_raw";
      std::printf("%s{\"label\":", v ? "," : "");
      print_json_string(label);
      std::printf(",\"equivalence\":");
      print_json_string(node.equivalence_type);
      std::printf(",\"op\":");
      print_json_string(node.op_name);
      std::printf(",\"params\":[");
      for (std::size_t i = 0; i < node.params.size(); ++i) {
        if (i) std::putchar(',');
        print_json_string(node.params[i].address);
      }
      std::printf("],\"parents\":[");
      std::set<Vertex> parents;
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        parents.insert(boost::source(e, g));
      }
      bool first_parent = true;
      for (Vertex p : parents) {
        std::printf("%s%zu", first_parent ? "" : ",", p);
        first_parent = false;
      }
      std::printf("],\"layer\":%zu,\"pass\":%d,\"passes\":%d}", node.layer, node.pass_num,
                  node.num_passes);
    }
    std::printf("]}\n");
  }
}
