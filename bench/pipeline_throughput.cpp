// Throughput of the default pass pipeline on synthetic graphs (no LibTorch):
// chains, wide branching, and long loops with shared parameters, from 10^3 to
// 10^6 vertices. Prints a Markdown table of vertices/s for the whole pipeline
// (its first run at each size, and again on fresh copies of the graph) and for
// each pass. Usage: pipeline_throughput [max_vertices=1000000] [chain|loop|wide]
#include <torchlens/passes/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

using torchlens::ModelGraph;
using torchlens::NodeKind;
using torchlens::OpNode;
using torchlens::Vertex;

/// Minimal builder (the test builders live under tests/; benchmarks stay standalone).
struct Builder {
  ModelGraph g;
  Vertex add(const std::string& type, NodeKind kind, const std::vector<Vertex>& parents,
             const std::string& param = "", const std::string& module = "") {
    OpNode n;
    n.kind = kind;
    n.layer_type = type;
    n.op_name = "aten::" + type;
    n.shape = {8, 64};
    n.dtype = "float32";
    n.bytes = 2048;
    n.module_observed = !module.empty() || kind != NodeKind::op;
    if (!module.empty()) n.modules = {{module, "Module", 1}};
    if (!param.empty()) n.params = {{param, {64, 64}, 4096, 16384, true}};
    if (kind == NodeKind::input) n.io_address = "input.0";
    n.id = g[boost::graph_bundle].next_id++;
    Vertex v = boost::add_vertex(std::move(n), g);
    int pos = 0;
    for (Vertex p : parents) {
      torchlens::TensorEdge e;
      e.arg_pos = pos++;
      boost::add_edge(p, v, e, g);
    }
    return v;
  }
  void returns(Vertex v) { g[boost::graph_bundle].returned.push_back({g[v].id, "output.0"}); }
};

/// conv(i) -> relu -> conv(i+1) -> ...: no recurrence, distinct parameters.
ModelGraph chain(std::size_t n) {
  Builder b;
  Vertex cur = b.add("input", NodeKind::input, {});
  for (std::size_t i = 1; i < n; ++i) {
    std::string module = "c";
    module += std::to_string(i);
    cur = i % 2 ? b.add("conv2d", NodeKind::op, {cur}, module + ".weight", module)
                : b.add("relu", NodeKind::op, {cur});
  }
  b.returns(cur);
  return std::move(b.g);
}

/// 64 parallel branches of distinct convs, re-joined by adds every 8 levels.
ModelGraph wide(std::size_t n) {
  Builder b;
  Vertex x = b.add("input", NodeKind::input, {});
  const std::size_t width = 64;
  std::vector<Vertex> front(width, x);
  std::size_t count = 1, level = 0;
  while (count + width + 1 < n) {
    ++level;
    for (std::size_t w = 0; w < width; ++w) {
      std::string param = "b";
      param += std::to_string(w);
      param += '_';
      param += std::to_string(level);
      param += ".weight";
      front[w] = b.add("conv2d", NodeKind::op, {front[w]}, param);
    }
    count += width;
    if (level % 8 == 0) {
      Vertex s = b.add("add", NodeKind::op, {front[0], front[width - 1]});
      for (auto& f : front) f = s;
      ++count;
    }
  }
  Vertex s = b.add("cat", NodeKind::op, front);
  b.returns(s);
  return std::move(b.g);
}

/// A 10-op recurrent cell (one shared linear + 9 parameter-free ops) unrolled n/10 times,
/// with a side-input read at every step.
ModelGraph loop(std::size_t n) {
  Builder b;
  Vertex x = b.add("input", NodeKind::input, {});
  Vertex h = b.add("zeros", NodeKind::op, {});
  const char* cell[] = {"mul", "sigmoid", "sub", "tanh", "mul", "add", "relu", "div", "neg"};
  for (std::size_t count = 2; count + 11 < n; count += 10) {
    Vertex l = b.add("linear", NodeKind::op, {h}, "rnn.weight", "rnn");
    Vertex cur = b.add("add", NodeKind::op, {l, x});
    for (int i = 1; i < 9; ++i) cur = b.add(cell[i], NodeKind::op, {cur});
    h = cur;
  }
  b.returns(h);
  return std::move(b.g);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  const std::size_t max_n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  const std::map<std::string, std::function<ModelGraph(std::size_t)>> shapes{
      {"chain", chain}, {"loop", loop}, {"wide", wide}};
  std::cout
      << "| graph | vertices | edges | pipeline ms | vertices/s | CPU vertices/s | again, CPU "
         "vertices/s |";
  const auto names = [] {
    std::vector<std::string> out;
    boost::hana::for_each(torchlens::passes::default_pipeline().passes(),
                          [&](const auto& p) { out.emplace_back(p.name); });
    return out;
  }();
  for (const auto& name : names) std::cout << " " << name << " |";
  std::cout << "\n|---|---:|---:|---:|---:|---:|---:|";
  for (std::size_t i = 0; i < names.size(); ++i) std::cout << "---:|";
  std::cout << "\n";
  const std::string only = argc > 2 ? argv[2] : "";
  for (const auto& [shape, make] : shapes) {
    if (!only.empty() && shape != only) continue;
    for (std::size_t n = 1000; n <= max_n; n *= 10) {
      ModelGraph g = make(n);
      const ModelGraph original = g; // what the later runs copy
      const auto v = boost::num_vertices(g), e = boost::num_edges(g);
      const std::clock_t c0 = std::clock();
      const auto t0 = std::chrono::steady_clock::now();
      auto records = torchlens::run_default_pipeline(g);
      const double s = seconds_since(t0);
      const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      // again, on fresh copies of the graph: the pipeline's scratch now comes from pages the
      // first run faulted in (the median of three; one at 10^6). A copy is exactly as large as
      // its graph; room is reserved first, as capture does, so that add-output-nodes does not
      // move every vertex to add one
      std::vector<double> again;
      for (int rep = 0; rep < (n >= 1000000 ? 1 : 3); ++rep) {
        ModelGraph copy;
        copy.reserve(v + 16, e + 16);
        copy = original;
        const std::clock_t a0 = std::clock();
        (void)torchlens::run_default_pipeline(copy);
        again.push_back(static_cast<double>(std::clock() - a0) / CLOCKS_PER_SEC);
      }
      std::sort(again.begin(), again.end());
      const double again_cpu = again[again.size() / 2];
      char buf[192];
      std::snprintf(buf, sizeof buf, "| %s | %zu | %zu | %.1f | %.2e | %.2e | %.2e |",
                    shape.c_str(), v, e, s * 1e3, static_cast<double>(v) / s,
                    static_cast<double>(v) / cpu, static_cast<double>(v) / again_cpu);
      std::cout << buf;
      for (const auto& r : records) {
        std::snprintf(buf, sizeof buf, " %.1e |",
                      static_cast<double>(r.vertices_before) / (r.ms * 1e-3));
        std::cout << buf;
      }
      std::cout << "\n" << std::flush;
    }
  }
  std::cout << "\nFirst columns: the first run at each size (its scratch faulted in afresh). "
               "Again: the pipeline run\nagain on fresh copies of the graph, CPU time, median. "
               "Per-pass columns: vertices/s of that pass\nalone in the first run (vertices "
               "before the pass / its time).\n";
}
