#pragma once
// Shared pieces of the torchlens CLI: argument parsing, inputs, errors, outputs.
// Each subcommand is a `int cmd_NAME(const Args&)` in its own file.

#include <torchlens/io/dot.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/io/model_file.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/io/render.hpp>
#include <torchlens/torch_error.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchlens::cli {

namespace fs = std::filesystem;
namespace tl = torchlens;

/// A failure the user can fix: printed as one line, exit status 2.
struct CommandLineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> flags;

  bool has(const std::string& f) const { return flags.count(f) != 0; }
  std::optional<std::string> get(const std::string& f) const {
    auto it = flags.find(f);
    if (it == flags.end()) return std::nullopt;
    return it->second;
  }
  std::vector<std::string> all(const std::string& f) const {
    std::vector<std::string> out;
    for (auto [it, end] = flags.equal_range(f); it != end; ++it) out.push_back(it->second);
    return out;
  }
};

/// Every option of every subcommand: flag -> takes a value.
inline const std::map<std::string, bool> kLogFlags = {{"--input-shape", true},
                                                      {"--input", true},
                                                      {"--seed", true},
                                                      {"--save", true},
                                                      {"--json", true},
                                                      {"--npz", true},
                                                      {"--quiet", false},
                                                      {"--help", false},
                                                      {"--out", true},
                                                      {"--graph", true},
                                                      {"--rolled", false},
                                                      {"--nesting-depth", true},
                                                      {"--direction", true},
                                                      {"--show-buffers", false},
                                                      {"--inputs", true},
                                                      {"--batch-size", true},
                                                      {"--resume", false},
                                                      {"--no-progress", false},
                                                      {"--shard", true},
                                                      {"--delete-shards", false},
                                                      {"--full-forward", false},
                                                      {"--resize", true},
                                                      {"--crop", true},
                                                      {"--mean", true},
                                                      {"--std", true},
                                                      {"--channels", true},
                                                      {"--dtype", true},
                                                      {"--flatten", false},
                                                      {"--statistics", false},
                                                      {"--save-gradients", true},
                                                      {"--backward", true},
                                                      {"--spec", true},
                                                      {"--at", true},
                                                      {"--action", true},
                                                      {"--engine", true},
                                                      {"--save-spec", true},
                                                      {"--clean", true},
                                                      {"--corrupt", true},
                                                      {"--sites", true},
                                                      {"--metric", true},
                                                      {"--grid", true},
                                                      {"--csv", true},
                                                      {"--progress", false},
                                                      {"--gradients-of", true},
                                                      {"--targets", true},
                                                      {"--no-detect-loops", false},
                                                      {"--min-param-free-loop-body", true}};

inline Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) throw CommandLineError("no command given; try `torchlens --help`");
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      std::string value;
      const auto eq = s.find('=');
      if (eq != std::string::npos) {
        value = s.substr(eq + 1);
        s = s.substr(0, eq);
      }
      auto known = kLogFlags.find(s);
      if (known == kLogFlags.end()) throw CommandLineError("unknown option " + s);
      if (known->second && eq == std::string::npos) {
        if (i + 1 >= argc) throw CommandLineError("option " + s + " needs a value");
        value = argv[++i];
      }
      a.flags.emplace(s, value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

inline std::vector<std::int64_t> parse_shape(const std::string& text) {
  std::vector<std::int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const long long d = std::stoll(item, &used);
      if (used != item.size() || d <= 0) throw std::invalid_argument(item);
      shape.push_back(d);
    } catch (const std::exception&) {
      throw CommandLineError("bad --input-shape '" + text +
                             "': expected positive integers like 1,3,224,224");
    }
  }
  if (shape.empty()) throw CommandLineError("bad --input-shape '" + text + "'");
  return shape;
}

/// The value of an integer flag in [1, max]; a one-line usage error otherwise.
inline std::int64_t positive(const Args& a, const std::string& flag,
                             std::int64_t max = std::numeric_limits<std::int64_t>::max()) {
  const std::string v = *a.get(flag);
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size() || n <= 0 || n > max) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    throw CommandLineError("bad " + flag + " '" + v + "': expected a positive integer");
  }
}

inline std::uint64_t seed_of(const Args& a) {
  if (auto s = a.get("--seed")) {
    try {
      return std::stoull(*s);
    } catch (const std::exception&) {
      throw CommandLineError("bad --seed '" + *s + "': expected a non-negative integer");
    }
  }
  return 0;
}

/// Forward arguments from --input X.npy files, else random from --input-shape.
inline std::vector<c10::IValue> model_inputs(const Args& a) {
  std::vector<c10::IValue> inputs;
  for (const auto& path : a.all("--input")) {
    if (!fs::exists(path)) throw CommandLineError("input file not found: " + path);
    inputs.emplace_back(tl::io::read_npy(path));
  }
  if (!inputs.empty()) return inputs;
  const auto shapes = a.all("--input-shape");
  if (shapes.empty())
    throw CommandLineError("give the input: --input-shape 1,3,224,224 or --input X.npy");
  torch::manual_seed(seed_of(a));
  for (const auto& s : shapes) inputs.emplace_back(torch::randn(parse_shape(s)));
  return inputs;
}

/// The model file, checked (torchlens/io/model_file.hpp), in eval mode.
inline torch::jit::Module load_model(const std::string& path) {
  if (!fs::exists(path)) throw CommandLineError("model file not found: " + path);
  try {
    auto m = tl::io::load_torchscript(path);
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    throw CommandLineError(tl::plain_message(e));
  }
}

/// The NPZ of `torchlens log`: the activations of `layers`, keyed by label, and
/// the saved gradients as `grad:LABEL`.
inline void write_npz(const std::string& path, const tl::ModelLog& log,
                      const std::vector<tl::Vertex>& layers) {
  std::vector<std::pair<std::string, at::Tensor>> arrays;
  for (tl::Vertex v : layers) arrays.emplace_back(log.graph()[v].label(), log.activation(v));
  for (tl::Vertex v : log.gradient_layers())
    arrays.emplace_back("grad:" + log.graph()[v].label(), log.gradient(v));
  tl::io::write_npz(path, arrays);
}

inline void write_outputs(const Args& a, const tl::ModelLog& log) {
  if (auto json = a.get("--json")) {
    std::ofstream f(*json);
    if (!f) throw CommandLineError("cannot write " + *json);
    tl::io::write_json(f, log);
  }
  if (auto npz = a.get("--npz")) write_npz(*npz, log, log.saved_layers());
}

/// Drawing options from --rolled, --nesting-depth, --direction, --show-buffers.
inline tl::io::DotOptions dot_options(const Args& a) {
  tl::io::DotOptions d;
  d.rolled(a.has("--rolled")).show_buffers(a.has("--show-buffers"));
  if (a.has("--nesting-depth")) {
    d.nesting_depth(
        static_cast<int>(positive(a, "--nesting-depth", std::numeric_limits<int>::max())));
  }
  if (auto dir = a.get("--direction")) {
    try {
      d.direction(tl::io::parse_direction(*dir));
    } catch (const std::invalid_argument&) {
      throw CommandLineError("bad --direction '" + *dir + "': use bottomup, topdown or leftright");
    }
  }
  return d;
}

/// Renders the graph when --graph OUT.{svg,png,pdf,dot} is given.
inline void write_graph(const Args& a, const tl::ModelLog& log) {
  if (auto out = a.get("--graph")) {
    tl::io::render(log, tl::io::RenderOptions().path(*out).dot(dot_options(a)));
  }
}

/// `torchlens extract`, `merge` and `status` (extract.cpp).
int cmd_extract(const Args& a);
int cmd_merge(const Args& a);
int cmd_status(const Args& a);
/// `torchlens intervene` and `patch` (intervene.cpp).
int cmd_intervene(const Args& a);
int cmd_patch(const Args& a);

inline tl::LogOptions log_options(const Args& a) {
  tl::LogOptions opts;
  opts.seed(seed_of(a));
  opts.detect_loops(!a.has("--no-detect-loops"));
  if (a.has("--min-param-free-loop-body")) {
    opts.min_param_free_loop_body(static_cast<int>(
        positive(a, "--min-param-free-loop-body", std::numeric_limits<int>::max())));
  }
  if (auto s = a.get("--save")) opts.save(tl::SaveSpec::parse(*s));
  if (auto s = a.get("--save-gradients")) {
    opts.save_gradients(tl::SaveSpec::parse(*s));
  } else if (a.has("--backward")) {
    opts.save_gradients(tl::SaveSpec::all());
  }
  return opts;
}

/// `--backward sum|output:K` (default `sum` when gradients are saved): runs
/// backward from the sum of the model's first output, or from its column K
/// summed over the batch, so the log's gradient hooks fill it.
inline void run_backward(const Args& a, const tl::ModelLog& log) {
  if (!log.tracks_gradients()) return;
  const std::string how = a.get("--backward").value_or("sum");
  const auto returned = log.returned();
  if (returned.empty() || !returned[0].requires_grad())
    throw std::runtime_error(
        "the model's first output does not depend on anything that "
        "requires grad: no gradient to save");
  const at::Tensor& out = returned[0];
  if (how == "sum") {
    out.sum().backward();
    return;
  }
  if (how.rfind("output:", 0) != 0)
    throw CommandLineError("bad --backward '" + how + "': use sum or output:K");
  std::int64_t k = -1;
  try {
    std::size_t used = 0;
    k = std::stoll(how.substr(7), &used);
    if (used != how.size() - 7) k = -1;
  } catch (const std::exception&) {
    k = -1;
  }
  if (out.dim() < 2 || k < 0 || k >= out.size(1))
    throw CommandLineError("bad --backward '" + how +
                           "': K must be a column of the first output (" + "shape " +
                           c10::str(out.sizes()) + ")");
  out.select(1, k).sum().backward();
}

} // namespace torchlens::cli
