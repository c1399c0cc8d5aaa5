// torchlens: the command-line tool. Subcommands: demo, log (see docs/cli.md).

#include "demo_model.hpp"

#include <torchlens/io/json.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/torchlens.hpp>

#include <torch/script.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace tl = torchlens;

namespace {

/// A failure the user can fix: printed as one line, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The useful line of a (possibly multi-line, TorchScript-traced) error.
std::string one_line(const std::string& what) {
  std::string msg = what;
  const auto rt = msg.rfind("RuntimeError: ");
  if (rt != std::string::npos) msg = msg.substr(rt + 14);
  const auto nl = msg.find('\n');
  if (nl != std::string::npos) msg = msg.substr(0, nl);
  while (!msg.empty() && (msg.back() == ' ' || msg.back() == '.')) msg.pop_back();
  return msg;
}

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

const std::map<std::string, bool> kLogFlags = {  // flag -> takes a value
    {"--input-shape", true}, {"--input", true}, {"--seed", true}, {"--save", true},
    {"--json", true},        {"--npz", true},   {"--quiet", false}, {"--help", false},
    {"--out", true}};

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) throw UsageError("no command given; try `torchlens --help`");
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
      if (known == kLogFlags.end()) throw UsageError("unknown option " + s);
      if (known->second && eq == std::string::npos) {
        if (i + 1 >= argc) throw UsageError("option " + s + " needs a value");
        value = argv[++i];
      }
      a.flags.emplace(s, value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::vector<std::int64_t> parse_shape(const std::string& text) {
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
      throw UsageError("bad --input-shape '" + text + "': expected positive integers like 1,3,224,224");
    }
  }
  if (shape.empty()) throw UsageError("bad --input-shape '" + text + "'");
  return shape;
}

std::uint64_t seed_of(const Args& a) {
  if (auto s = a.get("--seed")) {
    try {
      return std::stoull(*s);
    } catch (const std::exception&) {
      throw UsageError("bad --seed '" + *s + "': expected a non-negative integer");
    }
  }
  return 0;
}

/// Forward arguments from --input X.npy files, else random from --input-shape.
std::vector<c10::IValue> model_inputs(const Args& a) {
  std::vector<c10::IValue> inputs;
  for (const auto& path : a.all("--input")) {
    if (!fs::exists(path)) throw UsageError("input file not found: " + path);
    inputs.emplace_back(tl::io::read_npy(path));
  }
  if (!inputs.empty()) return inputs;
  const auto shapes = a.all("--input-shape");
  if (shapes.empty()) throw UsageError("give the input: --input-shape 1,3,224,224 or --input X.npy");
  torch::manual_seed(seed_of(a));
  for (const auto& s : shapes) inputs.emplace_back(torch::randn(parse_shape(s)));
  return inputs;
}

torch::jit::Module load_model(const std::string& path) {
  if (!fs::exists(path)) throw UsageError("model file not found: " + path);
  try {
    auto m = torch::jit::load(path);
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    throw UsageError(path + " is not a TorchScript archive (" + one_line(e.what_without_backtrace()) + ")");
  }
}

void write_outputs(const Args& a, const tl::ModelLog& log) {
  if (auto json = a.get("--json")) {
    std::ofstream f(*json);
    if (!f) throw UsageError("cannot write " + *json);
    tl::io::write_json(f, log);
  }
  if (auto npz = a.get("--npz")) {
    std::vector<std::pair<std::string, at::Tensor>> arrays;
    for (tl::Vertex v : log.saved_layers()) arrays.emplace_back(log.graph()[v].label, log.activation(v));
    tl::io::write_npz(*npz, arrays);
  }
}

tl::LogOptions log_options(const Args& a) {
  tl::LogOptions opts;
  opts.seed(seed_of(a));
  if (auto s = a.get("--save")) opts.save(tl::SaveSpec::parse(*s));
  return opts;
}

int cmd_log(const Args& a) {
  if (a.positional.size() != 1) throw UsageError("usage: torchlens log MODEL.pt --input-shape 1,3,224,224 [options]");
  auto model = load_model(a.positional[0]);
  auto inputs = model_inputs(a);
  auto log = tl::log_forward_pass(model, inputs, log_options(a));
  if (!a.has("--quiet")) std::cout << log;
  write_outputs(a, log);
  return 0;
}

int cmd_demo(const Args& a) {
  const fs::path out = a.get("--out").value_or("torchlens-demo");
  fs::create_directories(out);
  torch::manual_seed(seed_of(a));
  tl::cli::DemoNet model;
  model->eval();
  auto x = torch::randn(tl::cli::demo_input_shape());
  auto log = tl::log_forward_pass(model, x, log_options(a));
  std::cout << log;
  {
    std::ofstream f(out / "demo.json");
    tl::io::write_json(f, log);
  }
  std::vector<std::pair<std::string, at::Tensor>> arrays;
  for (tl::Vertex v : log.saved_layers()) arrays.emplace_back(log.graph()[v].label, log.activation(v));
  tl::io::write_npz((out / "demo.npz").string(), arrays);
  std::cout << "\nWrote " << (out / "demo.json").string() << " (metadata of " << log.size()
            << " layers) and " << (out / "demo.npz").string() << " (" << arrays.size()
            << " activations).\n";
  return 0;
}

void usage(std::ostream& os) {
  os << "torchlens: every tensor operation of a LibTorch forward pass\n\n"
        "usage:\n"
        "  torchlens demo [--out DIR] [--seed N]\n"
        "      log the built-in demo model; write DIR/demo.json and DIR/demo.npz\n"
        "  torchlens log MODEL.pt (--input-shape 1,3,224,224 | --input X.npy)... [--seed N]\n"
        "                [--save all|none|KEY,KEY] [--json OUT.json] [--npz OUT.npz] [--quiet]\n"
        "      log a TorchScript model; one --input-shape or --input per forward argument\n";
}

} // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
      usage(std::cout);
      return 0;
    }
    const Args a = parse(argc, argv);
    if (a.has("--help")) {
      usage(std::cout);
      return 0;
    }
    if (a.command == "log") return cmd_log(a);
    if (a.command == "demo") return cmd_demo(a);
    throw UsageError("unknown command '" + a.command + "'; try `torchlens --help`");
  } catch (const UsageError& e) {
    std::cerr << "torchlens: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::string msg = one_line(e.what_without_backtrace());
    if (msg.rfind("torchlens: ", 0) == 0) msg = msg.substr(11);
    std::cerr << "torchlens: " << msg << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "torchlens: " << one_line(e.what()) << "\n";
    return 1;
  }
}
