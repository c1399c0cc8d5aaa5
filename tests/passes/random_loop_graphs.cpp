// Random loop graphs for checking group-recurrences against TorchLens's own
// grouping code (scripts/compare_grouping_with_torchlens.py runs both). Not a
// test by itself: it prints, one JSON object per line, each graph as the pass
// saw it (TorchLens's raw label, the equivalence type, op, parameters,
// parents, whether it is in a module or a buffer) and the layer and pass the
// default pipeline gave every vertex.
//
// Usage: random_loop_graphs [first_seed=0] [count=1000] [max_iterations=40] [buffers=0]
// (buffers=1: some ops also read buffers, one rewritten every iteration)
//
// The graphs: tests/support/random_loop_graphs.hpp.
#include <support/random_loop_graphs.hpp>
#include <torchlens/passes/all.hpp>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

namespace {

using namespace torchlens;

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
  const bool buffers = argc > 4 && std::atoi(argv[4]) != 0;
  if (max_iterations < 1) {
    std::fprintf(stderr, "random_loop_graphs: max_iterations must be at least 1\n");
    return 2;
  }
  for (unsigned seed = first; seed < first + count; ++seed) {
    ModelGraph g = testing::random_loop_graph(seed, max_iterations, buffers);
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
      // TorchLens's recurrence_anchored: computed in a module, or a buffer
      const bool anchored = node.kind == NodeKind::buffer || !node.modules.empty();
      std::printf("],\"anchored\":%s", anchored ? "true" : "false");
      std::printf(",\"layer\":%zu,\"pass\":%d,\"passes\":%d}", static_cast<std::size_t>(node.layer),
                  node.pass_num, node.num_passes);
    }
    std::printf("]}\n");
  }
}
