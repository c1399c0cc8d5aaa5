// Drawing real models: toy models (recurrent, conditional) and torchvision's
// GoogLeNet (exported by scripts/export_torchvision.py), rolled/unrolled node
// counts, collapsed-module counts per nesting depth, and rendering through
// libgvc (SVG parses as XML with an <svg> root; PNG has its signature).
//
// Pictures go to $TORCHLENS_RENDER_OUT (the build dir; docs/img/ holds copies).

#include <torchlens/io/dot.hpp>
#include <torchlens/io/render.hpp>
#include <torchlens/torchlens.hpp>

#include <support/toy_models.hpp>

#include <torch/script.h>
#include "support/doctest.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace io = torchlens::io;
using torchlens::ModelLog;

namespace {

std::string out_dir() {
  const char* dir = std::getenv("TORCHLENS_RENDER_OUT");
  return dir != nullptr ? dir : ".";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Minimal XML well-formedness check: balanced, properly nested tags; returns
/// the root element's name ("" when malformed).
std::string xml_root(const std::string& xml) {
  std::vector<std::string> stack;
  std::string root;
  std::size_t pos = 0;
  while ((pos = xml.find('<', pos)) != std::string::npos) {
    if (xml.compare(pos, 4, "<!--") == 0) {
      pos = xml.find("-->", pos);
      if (pos == std::string::npos) return "";
      continue;
    }
    const auto end = xml.find('>', pos);
    if (end == std::string::npos) return "";
    const std::string tag = xml.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1, tag.find_first_of(" \t\n") - 1);
      if (stack.empty() || stack.back() != name) return "";
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (stack.empty()) {
      if (!root.empty()) return ""; // two roots
      root = name;
    }
    if (tag.back() != '/') stack.push_back(name);
  }
  return stack.empty() ? root : "";
}

std::size_t box3d_nodes(const io::DotGraph& dg) {
  std::size_t n = 0;
  for (auto v : boost::make_iterator_range(boost::vertices(dg))) n += dg[v].is_module;
  return n;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Whether this build renders (Meson found libgvc). Without it, rendering must
/// fail with one clear error, and the cases check that instead of the images.
constexpr bool kGraphviz = TORCHLENS_TEST_GRAPHVIZ != 0;

/// True when a case's rendering half runs; without Graphviz, checks that
/// rendering fails with the build's reason.
bool renders() {
  if (kGraphviz) return true;
  CHECK_THROWS_WITH_AS(io::render_dot_to_string("digraph G { a }", "svg"),
                       doctest::Contains("built without Graphviz"), c10::Error);
  return false;
}

} // namespace

TEST_CASE("render: built with Graphviz where Meson found it") {
  CHECK(io::render_available() == kGraphviz);
  CHECK(io::auto_engine(100) == "dot");
  CHECK(io::auto_engine(io::kDotNodeLimit + 1) == "sfdp");
}

TEST_CASE("recurrent toy: unrolled one node per pass, rolled one per layer; SVG and PNG render") {
  auto model = toy::ts::linear_loop();
  const ModelLog log = torchlens::log_forward_pass(model, {toy::ts::input()});
  // input, mul, linear x5, output
  const io::DotGraph un = io::build_dot_graph(log.graph());
  CHECK(boost::num_vertices(un) == 8);
  CHECK(boost::num_edges(un) == 7);
  const io::DotGraph ro = io::build_dot_graph(log.graph(), io::DotOptions().rolled(true));
  CHECK(boost::num_vertices(ro) == 4);
  CHECK(boost::num_edges(ro) == 4); // input→mul, mul→linear, linear→linear, linear→output
  const std::string rolled_dot = io::to_dot(log.graph(), io::DotOptions().rolled(true));
  CHECK(count(rolled_dot, "<b>linear_1_2 (x5)</b>") == 1);
  CHECK(count(rolled_dot, "headlabel=\"In 1\"") == 1);
  CHECK(count(rolled_dot, "headlabel=\"In 2-5\"") == 1);
  CHECK(count(rolled_dot, "taillabel=\"Out 1-4\"") == 1);
  CHECK(count(rolled_dot, "taillabel=\"Out 5\"") == 1);
  if (!renders()) return;

  const std::string dir = out_dir();
  const std::string svg = io::render_dot_to_string(io::to_dot(log.graph()), "svg");
  CHECK(xml_root(svg) == "svg");
  CHECK(count(svg, "class=\"node\"") == 8);
  io::render(log, io::RenderOptions().path(dir + "/linear_loop_unrolled.png"));
  io::render(
      log,
      io::RenderOptions().path(dir + "/linear_loop_rolled.png").dot(io::DotOptions().rolled(true)));
  io::render(
      log,
      io::RenderOptions().path(dir + "/linear_loop_rolled.svg").dot(io::DotOptions().rolled(true)));
  const std::string png = read_file(dir + "/linear_loop_rolled.png");
  REQUIRE(png.size() > 8);
  CHECK(png.substr(1, 3) == "PNG");
  CHECK(xml_root(read_file(dir + "/linear_loop_rolled.svg")) == "svg");
  CHECK(std::filesystem::file_size(dir + "/linear_loop_unrolled.png") > 0);
}

TEST_CASE("C++-frontend recurrent toy: linear is t + addmm; rolled merges the five passes") {
  toy::LinearLoop model;
  const ModelLog log = torchlens::log_forward_pass(model, toy::input_for<toy::LinearLoopImpl>());
  // input, mul, (t, addmm) x5, output
  const io::DotGraph un = io::build_dot_graph(log.graph());
  CHECK(boost::num_vertices(un) == 13);
  CHECK(boost::num_edges(un) == 12);
  // input, mul, t (x5), addmm (x5), output; addmm feeds itself
  const io::DotGraph ro = io::build_dot_graph(log.graph(), io::DotOptions().rolled(true));
  CHECK(boost::num_vertices(ro) == 5);
  CHECK(boost::num_edges(ro) == 5);
  const std::string rolled_dot = io::to_dot(log.graph(), io::DotOptions().rolled(true));
  CHECK(count(rolled_dot, "headlabel=\"In 2-5\"") == 1);
  CHECK(count(rolled_dot, "taillabel=\"Out 1-4\"") == 1);
}

TEST_CASE("conditional toy: terminal bool in yellow, one IF edge") {
  toy::ConditionalBool model;
  const ModelLog log =
      torchlens::log_forward_pass(model, toy::input_for<toy::ConditionalBoolImpl>());
  const std::string dot = io::to_dot(log.graph());
  CHECK(count(dot, "<u>IF</u>") == 1);
  CHECK(count(dot, "fillcolor=\"#F7D460\"") == 1);
  if (!renders()) return;
  CHECK(xml_root(io::render_dot_to_string(dot, "svg")) == "svg");
  io::render(log, io::RenderOptions().path(out_dir() + "/conditional.png"));
}

TEST_CASE("render errors are c10::Error with a reason") {
  CHECK_THROWS_AS(io::render_dot_to_string("digraph G { a -> ", "svg"), c10::Error);
  CHECK_THROWS_AS(io::render_dot_to_string("digraph G { a -> b }", "svg", "no-such-engine"),
                  c10::Error);
  CHECK_THROWS_AS(io::render_dot("digraph G { a }", io::RenderOptions().path("no_extension")),
                  c10::Error);
  CHECK_THROWS_AS(io::render_dot("digraph G { a }", io::RenderOptions()), c10::Error);
}

TEST_CASE("googlenet: box3d nodes and clusters per nesting depth") {
  const char* dir = std::getenv("TORCHLENS_TORCHVISION_DIR");
  if (dir == nullptr || !std::filesystem::exists(std::string(dir) + "/googlenet.pt")) {
    MESSAGE("googlenet export not found: skipped (needs python_exe with torchvision)");
    return;
  }
  auto model = torch::jit::load(std::string(dir) + "/googlenet.pt");
  model.eval();
  auto ref = torch::jit::load(std::string(dir) + "/googlenet.ref.pt");
  const ModelLog log = torchlens::log_forward_pass(
      model, {ref.attr("x").toTensor()}, torchlens::LogOptions().save(torchlens::SaveSpec::none()));
  struct Expect {
    int depth;
    std::size_t box3d, clusters;
  };
  // depth 1: conv1-3 (BasicConv2d) and the nine Inception blocks collapse;
  // depth 2: conv1-3 and the Inceptions are clusters, their four branches collapse;
  // depth 4: nothing collapses; 3 BasicConv2d + 9 x (Inception, branch1-4,
  // branch2.0/1, branch3.0/1, branch4.1) clusters.
  for (const Expect& e : {Expect{1, 12, 0}, Expect{2, 36, 12}, Expect{4, 0, 93}}) {
    CAPTURE(e.depth);
    const io::DotGraph dg =
        io::build_dot_graph(log.graph(), io::DotOptions().nesting_depth(e.depth));
    CHECK(box3d_nodes(dg) == e.box3d);
    CHECK(dg[boost::graph_bundle].clusters.size() == e.clusters);
  }
  if (!renders()) return;
  for (int depth : {1, 2}) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string path = out_dir() + "/googlenet_depth" + std::to_string(depth) + ".png";
    io::render(log, io::RenderOptions().path(path).dot(io::DotOptions().nesting_depth(depth)));
    MESSAGE("googlenet depth " << depth << " rendered in " << seconds_since(t0) << " s");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string svg = io::render_dot_to_string(io::to_dot(log.graph()), "svg");
  MESSAGE("googlenet full depth (" << log.size() << " passes) rendered in " << seconds_since(t0)
                                   << " s");
  CHECK(xml_root(svg) == "svg");
}
