// The TorchLens-semantics conformance suite: every model of
// tests/conformance/models.py, exported to TorchScript, is logged and its
// structure compared line by line with tests/conformance/expected/NAME.txt,
// the structure the Python TorchLens gives for the eager model (derived by
// scripts/derive_conformance.py; see tests/conformance/README.md):
//
//   flags recurrent=R loops=N branching=B conditional=C
//   modules ADDRESS:PASSES ...                      (sorted; modules called)
//   layer LABEL <- PARENTS @ CONTAINMENT > EXITS     (one line per layer pass)
//   if PARENT -> CHILD                               (IF edges)
//
// PARENTS are sorted labels, CONTAINMENT the module passes outer → inner,
// EXITS the module passes the layer is returned from (sorted).
//
// $TORCHLENS_CONFORMANCE_DIR holds the exports and $TORCHLENS_CONFORMANCE_EXPECTED
// the expected files (set by tests/conformance/meson.build). With
// $TORCHLENS_CONFORMANCE_ACTUAL set, the structure torchlens gives is written
// there too (NAME.txt), for diffing by hand.

#include <torchlens/io/model_file.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace tl = torchlens;
namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string frame_text(const tl::ModuleFrame& f) {
  return f.address + ":" + std::to_string(f.pass);
}

/// The structure of a log in the expected files' format.
std::vector<std::string> describe(const tl::ModelLog& log) {
  const auto& info = log.info();
  const tl::ModelGraph& g = log.graph();
  std::vector<std::string> lines;
  std::ostringstream flags;
  flags << "flags recurrent=" << info.is_recurrent << " loops=" << info.max_recurrent_loops
        << " branching=" << info.is_branching << " conditional=" << info.has_conditional;
  lines.push_back(flags.str());
  std::vector<std::string> modules;
  for (const auto& m : info.modules)
    modules.push_back(m.address + ":" + std::to_string(m.num_passes));
  std::sort(modules.begin(), modules.end());
  lines.push_back("modules " + join(modules, " "));
  std::vector<std::string> if_edges;
  for (auto layer : log) {
    std::set<std::string> parents;
    for (const auto& p : layer.parents()) parents.insert(p);
    std::vector<std::string> nesting;
    for (const auto& f : layer->modules) {
      if (!f.address.empty()) nesting.push_back(frame_text(f));
    }
    std::vector<std::string> exits;
    if (layer->kind != tl::NodeKind::output) {
      for (const auto& f : tl::modules_exited(layer.node())) exits.push_back(frame_text(f));
      std::sort(exits.begin(), exits.end());
    }
    lines.push_back("layer " + layer.label() + " <- " +
                    join(std::vector<std::string>(parents.begin(), parents.end()), ",") + " @ " +
                    join(nesting, ",") + " > " + join(exits, ","));
    for (auto e : boost::make_iterator_range(boost::out_edges(layer.vertex(), g))) {
      if (g[e].is_cond_branch_start) {
        if_edges.push_back("if " + layer.label() + " -> " + g[boost::target(e, g)].label());
      }
    }
  }
  std::sort(if_edges.begin(), if_edges.end());
  lines.insert(lines.end(), if_edges.begin(), if_edges.end());
  for (auto& line : lines) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
  }
  return lines;
}

std::vector<std::string> read_expected(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  }
  return lines;
}

/// The first differences of two line lists, for the failure message.
std::string diff(const std::vector<std::string>& expected, const std::vector<std::string>& actual) {
  std::ostringstream os;
  int shown = 0;
  const std::size_t n = std::max(expected.size(), actual.size());
  for (std::size_t i = 0; i < n && shown < 6; ++i) {
    const std::string e = i < expected.size() ? expected[i] : "(none)";
    const std::string a = i < actual.size() ? actual[i] : "(none)";
    if (e == a) continue;
    os << "\n  line " << i + 1 << "\n    TorchLens: " << e << "\n    torchlens: " << a;
    ++shown;
  }
  return os.str();
}

/// Module addresses in the log that named_modules() does not return.
std::vector<std::string> foreign_addresses(const tl::ModelLog& log,
                                           const torch::jit::Module& model) {
  std::set<std::string> known;
  for (const auto& m : model.named_modules()) known.insert(m.name);
  std::vector<std::string> bad;
  for (const auto& m : log.info().modules) {
    if (known.count(m.address) == 0) bad.push_back(m.address);
  }
  for (auto layer : log) {
    for (const auto& f : layer->modules) {
      if (known.count(f.address) == 0) bad.push_back(layer.label() + " in " + f.address);
    }
  }
  return bad;
}

tl::ModelLog log_model(const torch::jit::Module& model, const std::string& dir,
                       const std::string& name) {
  torch::jit::Module holder = torchlens::io::load_torchscript(dir + "/" + name + ".in.pt");
  const auto tensors = holder.attr("inputs").toTensorVector();
  const std::string kind = holder.attr("kind").toStringRef();
  std::vector<c10::IValue> inputs;
  if (kind == "list") {
    inputs.emplace_back(c10::List<at::Tensor>(tensors));
  } else {
    inputs.assign(tensors.begin(), tensors.end());
  }
  auto m = model;
  return tl::log_forward_pass(m, inputs, tl::LogOptions().seed(0).save(tl::SaveSpec::none()));
}

} // namespace

TEST_CASE("conformance: every model has the structure TorchLens gives") {
  const std::string dir = env("TORCHLENS_CONFORMANCE_DIR");
  const std::string expected_dir = env("TORCHLENS_CONFORMANCE_EXPECTED");
  const std::string actual_dir = env("TORCHLENS_CONFORMANCE_ACTUAL");
  REQUIRE_MESSAGE(!dir.empty(), "TORCHLENS_CONFORMANCE_DIR is not set (run through meson test)");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(expected_dir)) {
    if (entry.path().extension() == ".txt") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 60);
  at::set_num_threads(1);
  int conforming = 0;
  for (const auto& path : files) {
    const std::string name = path.stem().string();
    CAPTURE(name);
    std::vector<std::string> actual;
    try {
      const torch::jit::Module model = torchlens::io::load_torchscript(dir + "/" + name + ".pt");
      const auto log = log_model(model, dir, name);
      actual = describe(log);
      // every module address is one named_modules() returns
      const auto bad = foreign_addresses(log, model);
      CHECK_MESSAGE(bad.empty(), name << ": addresses named_modules() does not know: "
                                      << (bad.empty() ? "" : bad.front()));
    } catch (const c10::Error& e) {
      actual = {std::string("error: ") + e.what_without_backtrace()};
    }
    if (!actual_dir.empty()) {
      fs::create_directories(actual_dir);
      std::ofstream(fs::path(actual_dir) / (name + ".txt")) << join(actual, "\n") << "\n";
    }
    const auto expected = read_expected(path);
    const bool same = expected == actual;
    conforming += same;
    CHECK_MESSAGE(same, name << diff(expected, actual));
  }
  MESSAGE(conforming << " of " << files.size() << " models conform");
}
