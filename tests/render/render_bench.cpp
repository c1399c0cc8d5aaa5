// Layout-engine timings on a synthetic 5,000-op graph (torch-free TU; run by
// hand: `build/tests/render/render_bench [ops] [engines...]`). Numbers are in
// docs/render.md.
//
// The graph: input → S stages (module `stages.s`, type Stage) of residual
// blocks (`stages.s.b`, Block): conv (leaf Conv2d) → batchnorm (leaf) → relu
// → conv (leaf) → add(block input) — 5 ops per block, 3 nesting levels.

#include <torchlens/io/dot.hpp>
#include <torchlens/io/render.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace torchlens;

ModelGraph residual_graph(int ops) {
  ModelGraph g;
  const int blocks_per_stage = 50;
  const int blocks = ops / 5;
  auto add = [&](NodeKind kind, const std::string& type, std::vector<Vertex> parents,
                 std::vector<ModuleFrame> modules, bool params) {
    OpNode n;
    n.id = boost::num_vertices(g);
    n.kind = kind;
    n.layer_type = type;
    n.shape = {1, 64, 56, 56};
    n.bytes = 4 * 64 * 56 * 56;
    n.has_input_ancestor = true;
    n.layer = n.id;
    n.modules = std::move(modules);
    if (params) {
      std::string address = "p"; // not "p" + to_string(): GCC 12 misreports -Wrestrict on it
      address += std::to_string(n.id);
      n.params = {ParamRef{address, {64, 64, 3, 3}, 36864, 147456, true}};
    }
    n.type_num = static_cast<int>(n.id) + 1; // labels `{type}_{id + 1}_{id + 1}`
    n.total_num = n.type_num;
    const Vertex v = boost::add_vertex(n, g);
    int pos = 0;
    for (Vertex p : parents) {
      const int arg = pos++;
      boost::add_edge(p, v, TensorEdge{arg, -1, arg == 0 ? "input" : "other", false}, g);
    }
    return v;
  };
  Vertex x = add(NodeKind::input, "input", {}, {}, false);
  g[x].io_address = "input.0";
  for (int b = 0; b < blocks; ++b) {
    const std::string stage = "stages." + std::to_string(b / blocks_per_stage);
    const std::string block = stage + "." + std::to_string(b % blocks_per_stage);
    const ModuleFrame fs{stage, "Stage", 1}, fb{block, "Block", 1};
    const Vertex c1 =
        add(NodeKind::op, "conv2d", {x}, {fs, fb, {block + ".conv1", "Conv2d", 1}}, true);
    const Vertex bn =
        add(NodeKind::op, "batchnorm", {c1}, {fs, fb, {block + ".bn", "BatchNorm2d", 1}}, true);
    const Vertex r = add(NodeKind::op, "relu", {bn}, {fs, fb}, false);
    const Vertex c2 =
        add(NodeKind::op, "conv2d", {r}, {fs, fb, {block + ".conv2", "Conv2d", 1}}, true);
    x = add(NodeKind::op, "add", {c2, x}, {fs, fb}, false);
  }
  g[x].feeds_output = true;
  const Vertex out = add(NodeKind::output, "output", {x}, {}, false);
  g[out].io_address = "output.0";
  g[boost::graph_bundle].model_name = "Residual" + std::to_string(ops);
  return g;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  const int ops = argc > 1 ? std::atoi(argv[1]) : 5000;
  std::vector<std::string> engines;
  for (int i = 2; i < argc; ++i) engines.emplace_back(argv[i]);
  if (engines.empty()) engines = {"dot", "sfdp"};
  const ModelGraph g = residual_graph(ops);
  for (int depth : {io::DotOptions::kUnlimitedDepth, 2, 1}) {
    auto t0 = std::chrono::steady_clock::now();
    const io::DotGraph dg = io::build_dot_graph(g, io::DotOptions().nesting_depth(depth));
    std::ostringstream dot;
    io::write_dot(dot, dg);
    const double t_dot = seconds_since(t0);
    std::cout << "ops " << boost::num_vertices(g) << " depth "
              << (depth == io::DotOptions::kUnlimitedDepth ? std::string("all")
                                                           : std::to_string(depth))
              << ": " << boost::num_vertices(dg) << " nodes, "
              << dg[boost::graph_bundle].clusters.size() << " clusters; DOT in " << t_dot << " s"
              << std::endl;
    for (const auto& engine : engines) {
      t0 = std::chrono::steady_clock::now();
      const std::string svg = io::render_dot_to_string(dot.str(), "svg", engine);
      std::cout << "  " << engine << " -> svg: " << seconds_since(t0) << " s (" << svg.size() / 1024
                << " KiB)" << std::endl;
    }
  }
  return 0;
}
