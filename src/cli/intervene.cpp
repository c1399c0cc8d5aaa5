// torchlens intervene and torchlens patch: interventions and activation
// patching from the command line (docs/cli.md, docs/interventions.md).

#include "common.hpp"

#include <torchlens/intervene.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torchlens::cli {

namespace {

/// `text` split at `sep`, each piece trimmed of spaces; empty pieces dropped.
std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, sep)) {
    const auto b = item.find_first_not_of(' ');
    const auto e = item.find_last_not_of(' ');
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

/// A finite number, all of `text`, or nothing.
std::optional<double> number(const std::string& text) {
  try {
    std::size_t used = 0;
    const double d = std::stod(text, &used);
    if (used == text.size() && std::isfinite(d)) return d;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// A whole number (optionally signed), all of `text`, or nothing.
std::optional<std::int64_t> integer(const std::string& text) {
  try {
    std::size_t used = 0;
    const long long n = std::stoll(text, &used);
    if (used == text.size()) return n;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// ---- sites and actions ---------------------------------------------------------

/// `PARENT->CHILD`: an edge; anything else: a lookup key of the reference log.
Site site_of_key(const std::string& key) {
  if (const auto arrow = key.find("->"); arrow != std::string::npos) {
    const std::string parent = key.substr(0, arrow), child = key.substr(arrow + 2);
    if (parent.empty() || child.empty())
      throw CommandLineError("bad site '" + key + "': an edge is PARENT->CHILD");
    return sel::edge(parent, child);
  }
  if (key.empty()) throw CommandLineError("empty site key");
  return sel::label(key);
}

/// An --action: the action, and for replace:T.npy the tensor (its dtype is
/// matched to the site once the site is known).
struct ParsedAction {
  std::string text;
  std::optional<Action> action;
  at::Tensor replacement;
};

ParsedAction parse_action(const std::string& text) {
  const std::string usage = "bad --action '" + text +
                            "': use zero, scale:F, clamp:LO:HI (LO or HI may be empty), "
                            "noise:STD[:SEED] or replace:T.npy";
  ParsedAction p{text, std::nullopt, {}};
  const auto colon = text.find(':');
  const std::string name = text.substr(0, colon);
  const std::string rest = colon == std::string::npos ? "" : text.substr(colon + 1);
  const bool has_args = colon != std::string::npos;
  if (name == "replace") { // the path may hold ':'
    if (rest.empty()) throw CommandLineError(usage);
    if (!fs::exists(rest)) throw CommandLineError("replacement file not found: " + rest);
    try {
      p.replacement = io::read_npy(rest);
    } catch (const std::exception& e) {
      throw CommandLineError("cannot read the replacement " + rest + ": " + plain_message(e));
    }
    p.action = replace_with(p.replacement);
    return p;
  }
  std::vector<std::string> args;
  if (has_args) { // keep empty fields: clamp::1
    std::size_t start = 0;
    for (;;) {
      const auto c = rest.find(':', start);
      args.push_back(rest.substr(start, c == std::string::npos ? std::string::npos : c - start));
      if (c == std::string::npos) break;
      start = c + 1;
    }
  }
  if (name == "zero" && !has_args) {
    p.action = zero_ablate();
  } else if (name == "scale" && args.size() == 1) {
    const auto f = number(args[0]);
    if (!f) throw CommandLineError(usage);
    p.action = scale(*f);
  } else if (name == "clamp" && args.size() == 2) {
    ClampOptions o;
    if (!args[0].empty()) {
      const auto lo = number(args[0]);
      if (!lo) throw CommandLineError(usage);
      o.set_min(*lo);
    }
    if (!args[1].empty()) {
      const auto hi = number(args[1]);
      if (!hi) throw CommandLineError(usage);
      o.set_max(*hi);
    }
    if (!o.min && !o.max) throw CommandLineError(usage);
    if (o.min && o.max && *o.min > *o.max)
      throw CommandLineError("bad --action '" + text + "': LO is above HI");
    p.action = clamp(o);
  } else if (name == "noise" && (args.size() == 1 || args.size() == 2)) {
    const auto std_dev = number(args[0]);
    if (!std_dev || *std_dev < 0) throw CommandLineError(usage);
    std::uint64_t seed = 0;
    if (args.size() == 2) {
      const auto s = integer(args[1]);
      if (!s || *s < 0) throw CommandLineError(usage);
      seed = static_cast<std::uint64_t>(*s);
    }
    p.action = noise(*std_dev, seed);
  } else {
    throw CommandLineError(usage);
  }
  return p;
}

/// The vertex (with a value) standing for an op id.
std::unordered_map<std::size_t, Vertex> vertices_by_id(const ModelLog& log) {
  std::unordered_map<std::size_t, Vertex> out;
  const ModelGraph& g = log.graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind != NodeKind::output) out.emplace(g[v].id, v);
  }
  return out;
}

/// What a site selects on the reference: (label, vertex whose value it changes).
/// Unknown keys throw the log's KeyError with near matches.
std::vector<std::pair<std::string, Vertex>> site_matches(const Site& site, const ModelLog& ref) {
  const ModelGraph& g = ref.graph();
  const auto by_id = vertices_by_id(ref);
  std::vector<std::pair<std::string, Vertex>> out;
  if (const auto* edge = std::get_if<EdgeSelector>(&site.selector())) {
    for (const EdgeId& e : resolve_edges(*edge, ref)) {
      const Vertex p = by_id.at(e.parent);
      out.emplace_back(g[p].label() + "->" + g[by_id.at(e.child)].label(), p);
    }
    return out; // resolve_edges refuses layers that are not connected
  }
  const std::vector<std::size_t> ids =
      site.selector().index() == 0
          ? LabelSelector(std::get<LiveSelector>(site.selector()).node()).resolve(ref)
          : std::get<LabelSelector>(site.selector()).resolve(ref);
  for (std::size_t id : ids) out.emplace_back(g[by_id.at(id)].label(), by_id.at(id));
  if (out.empty()) throw CommandLineError("site " + site.describe() + " selects no op pass");
  return out;
}

std::string joined_labels(const std::vector<std::pair<std::string, Vertex>>& m) {
  std::string s;
  for (std::size_t i = 0; i < m.size() && i < 6; ++i) s += (i ? ", " : "") + m[i].first;
  if (m.size() > 6) s += ", ... (" + std::to_string(m.size()) + " in all)";
  return s;
}

/// The first output vertex of a log (what patching's metric reads).
Vertex first_output(const ModelLog& log) {
  const ModelGraph& g = log.graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == NodeKind::output) return v;
  }
  throw std::runtime_error("the log of " + log.model_name() + " has no output");
}

// ---- intervene ------------------------------------------------------------------

enum class CliEngine { live, replay, rerun, automatic };

CliEngine engine_of(const Args& a, bool allow_live) {
  const std::string e = a.get("--engine").value_or("auto");
  if (e == "live" && allow_live) return CliEngine::live;
  if (e == "replay") return CliEngine::replay;
  if (e == "rerun") return CliEngine::rerun;
  if (e == "auto") return CliEngine::automatic;
  throw CommandLineError("bad --engine '" + e + "': use " +
                         (allow_live ? "live, replay, rerun or auto" : "replay, rerun or auto"));
}

const char* engine_name(Engine e) {
  return e == Engine::replay ? "replay" : e == Engine::rerun ? "rerun" : "auto";
}

} // namespace

int cmd_intervene(const Args& a) {
  if (a.positional.size() != 1)
    throw CommandLineError(
        "usage: torchlens intervene MODEL.pt --input X.npy (--spec S.json | --at SITE "
        "--action ACTION) [--engine live|replay|rerun|auto] [--npz OUT.npz] (see --help)");
  const auto sites = a.all("--at");
  const auto actions = a.all("--action");
  if (a.has("--spec") && (!sites.empty() || !actions.empty()))
    throw CommandLineError("give either --spec S.json or --at SITE --action ACTION, not both");
  if (!a.has("--spec") && sites.empty())
    throw CommandLineError("give the intervention: --spec S.json, or --at SITE --action ACTION");
  if (sites.size() != actions.size())
    throw CommandLineError("each --at SITE needs its --action ACTION (" +
                           std::to_string(sites.size()) + " --at, " +
                           std::to_string(actions.size()) + " --action)");
  const CliEngine engine = engine_of(a, true);

  // everything that can be checked without running the model, first
  std::vector<ParsedAction> parsed;
  for (const auto& text : actions) parsed.push_back(parse_action(text));
  std::vector<Site> parsed_sites;
  for (const auto& key : sites) parsed_sites.push_back(site_of_key(key));
  Interventions spec;
  if (auto path = a.get("--spec")) {
    if (!fs::exists(*path)) throw CommandLineError("spec file not found: " + *path);
    spec = Interventions::load(*path);
    if (spec.empty()) throw CommandLineError("the spec " + *path + " has no entries");
  }
  auto model = load_model(a.positional[0]);
  auto inputs = model_inputs(a);
  const std::uint64_t seed = seed_of(a);

  // the reference: the labels sites name, and what replay recomputes from
  const ModelLog ref =
      log_forward_pass(model, inputs,
                       LogOptions().seed(seed).keep_replay(engine == CliEngine::replay ||
                                                           engine == CliEngine::automatic));

  // --save keys: a typo stops here, with near matches, before any engine runs
  std::vector<std::string> save_keys;
  if (auto keys = a.get("--save"); keys && *keys != "all") {
    for (const auto& key : split(*keys, ',')) {
      if (key == "none") continue;
      (void)ref.select(key);
      save_keys.push_back(key);
    }
  }

  // --at/--action: a replacement takes its site's dtype; its shape must match
  for (std::size_t i = 0; i < parsed_sites.size(); ++i) {
    ParsedAction& p = parsed[i];
    if (p.replacement.defined()) {
      for (const auto& [label, v] : site_matches(parsed_sites[i], ref)) {
        const at::Tensor& value = ref.activation(v);
        if (p.replacement.sizes() != value.sizes()) {
          throw CommandLineError("replace: " + p.text.substr(8) + " has shape " +
                                 shape_text(p.replacement.sizes()) + " but site " + sites[i] +
                                 (label == sites[i] ? "" : " (" + label + ")") + " has shape " +
                                 shape_text(value.sizes()));
        }
        if (p.replacement.scalar_type() != value.scalar_type()) {
          if (!at::isFloatingType(p.replacement.scalar_type()) ||
              !at::isFloatingType(value.scalar_type())) {
            throw CommandLineError("replace: " + p.text.substr(8) + " is " +
                                   std::string(c10::toString(p.replacement.scalar_type())) +
                                   " but site " + label + " is " +
                                   std::string(c10::toString(value.scalar_type())));
          }
          p.replacement = p.replacement.to(value.scalar_type());
          p.action = replace_with(p.replacement);
        }
      }
    }
    spec.at(parsed_sites[i], *p.action);
  }
  if (auto out = a.get("--save-spec")) spec.save(*out);

  // what each entry selects (unknown keys stop here, with near matches)
  std::vector<std::vector<std::pair<std::string, Vertex>>> matches;
  for (const auto& e : spec.entries()) matches.push_back(site_matches(e.site, ref));
  (void)spec.resolve(ref); // labels that actions read

  std::optional<ModelLog> result;
  std::string ran, note;
  if (engine == CliEngine::live) {
    result.emplace(log_forward_pass(model, inputs, LogOptions().seed(seed).intervene(spec, ref)));
    ran = "live";
  } else {
    const Engine e = engine == CliEngine::replay  ? Engine::replay
                     : engine == CliEngine::rerun ? Engine::rerun
                                                  : Engine::automatic;
    try {
      InterventionRun run = intervene(e, model, inputs, ref, spec);
      result.emplace(std::move(run.log));
      ran = engine_name(run.engine);
      note = std::move(run.note);
    } catch (const ReplayDivergence& d) {
      throw std::runtime_error(plain_message(d) + "; from the shell: --engine auto or rerun");
    }
  }

  // the NPZ: every layer, or the --save keys; the output layer always
  const ModelGraph& g = result->graph();
  std::vector<Vertex> layers;
  if (auto keys = a.get("--save"); keys && *keys != "all") {
    std::set<Vertex> chosen;
    for (const auto& key : save_keys) {
      for (Vertex v : result->select(key)) chosen.insert(v);
    }
    for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
      if (g[v].kind == NodeKind::output) chosen.insert(v);
    }
    for (Vertex v : chosen) {
      if (result->activation(v).defined()) layers.push_back(v);
    }
  } else {
    layers = result->saved_layers();
  }
  if (auto npz = a.get("--npz")) write_npz(*npz, *result, layers);
  if (auto json = a.get("--json")) {
    std::ofstream f(*json);
    if (!f) throw CommandLineError("cannot write " + *json);
    io::write_json(f, *result);
  }

  if (a.has("--quiet")) return 0;
  std::cout << "Intervened on " << result->model_name() << " with engine "
            << (engine == CliEngine::automatic ? "auto, which ran " + ran : ran) << ":\n";
  for (std::size_t i = 0; i < spec.entries().size(); ++i) {
    const auto& e = spec.entries()[i];
    std::cout << "  " << i + 1 << ". " << e.site.describe() << " -> " << e.action.describe()
              << "  at " << joined_labels(matches[i]) << "\n";
  }
  if (!note.empty()) std::cout << "  note: " << note << "\n";
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind != NodeKind::output || !ref.contains(g[v].label())) continue;
    const at::Tensor& now = result->activation(v);
    const at::Tensor& before = ref.activation(ref.at(g[v].label()).vertex());
    if (!now.defined() || !before.defined() || now.sizes() != before.sizes()) continue;
    const double change = (now.to(at::kDouble) - before.to(at::kDouble)).abs().max().item<double>();
    std::cout << "  " << g[v].label() << ": max |change| " << change
              << " against the run without interventions\n";
  }
  if (auto npz = a.get("--npz"))
    std::cout << "Wrote " << *npz << " (" << layers.size() << " layers).\n";
  if (auto json = a.get("--json")) std::cout << "Wrote " << *json << ".\n";
  if (auto out = a.get("--save-spec")) std::cout << "Wrote the spec to " << *out << ".\n";
  return 0;
}

// ---- patch ----------------------------------------------------------------------

namespace {

/// One --sites term: func:NAME, in:ADDR[:PASS], module:ADDR[:PASS], PARENT->CHILD,
/// or a lookup key.
Site patch_site(const std::string& term) {
  auto after = [&](const char* prefix) { return term.substr(std::string(prefix).size()); };
  auto starts = [&](const char* prefix) { return term.rfind(prefix, 0) == 0; };
  if (starts("func:")) {
    if (after("func:").empty()) throw CommandLineError("bad --sites term '" + term + "'");
    return sel::func(after("func:"));
  }
  if (starts("in:")) {
    std::string addr = after("in:");
    int pass = 0;
    if (const auto c = addr.rfind(':'); c != std::string::npos) {
      const auto p = integer(addr.substr(c + 1));
      if (!p || *p < 1) throw CommandLineError("bad --sites term '" + term + "': in:ADDR[:PASS]");
      pass = static_cast<int>(*p);
      addr = addr.substr(0, c);
    }
    if (addr.empty()) throw CommandLineError("bad --sites term '" + term + "'");
    return sel::in_module(addr, pass);
  }
  if (starts("module:")) {
    if (after("module:").empty()) throw CommandLineError("bad --sites term '" + term + "'");
    return sel::module(after("module:"));
  }
  return site_of_key(term);
}

using Metric = std::function<double(const at::Tensor&)>;

/// --metric, checked against the clean run's first output.
Metric parse_metric(const std::string& text, const at::Tensor& clean_output) {
  const std::string usage =
      "bad --metric '" + text + "': use logit:K, logit-diff:A:B, prob:K or output-l2";
  if (!at::isFloatingType(clean_output.scalar_type()))
    throw CommandLineError("--metric needs a floating-point output; the model's first output is " +
                           std::string(c10::toString(clean_output.scalar_type())));
  const auto parts = split(text, ':');
  const std::int64_t width = clean_output.dim() > 0 ? clean_output.size(-1) : 0;
  auto index = [&](const std::string& s) {
    const auto k = integer(s);
    if (!k) throw CommandLineError(usage);
    if (*k < 0 || *k >= width)
      throw CommandLineError("bad --metric '" + text + "': index " + s +
                             " is outside the output's last dimension (shape " +
                             shape_text(clean_output.sizes()) + ")");
    return *k;
  };
  if (parts.size() == 2 && parts[0] == "logit") {
    const std::int64_t k = index(parts[1]);
    return
        [k](const at::Tensor& y) { return y.select(-1, k).to(at::kDouble).mean().item<double>(); };
  }
  if (parts.size() == 3 && parts[0] == "logit-diff") {
    const std::int64_t i = index(parts[1]), j = index(parts[2]);
    return [i, j](const at::Tensor& y) {
      return (y.select(-1, i) - y.select(-1, j)).to(at::kDouble).mean().item<double>();
    };
  }
  if (parts.size() == 2 && parts[0] == "prob") {
    const std::int64_t k = index(parts[1]);
    return [k](const at::Tensor& y) {
      return y.to(at::kDouble).softmax(-1).select(-1, k).mean().item<double>();
    };
  }
  if (parts.size() == 1 && parts[0] == "output-l2") {
    const at::Tensor clean = clean_output.detach().to(at::kDouble);
    return
        [clean](const at::Tensor& y) { return (y.to(at::kDouble) - clean).norm().item<double>(); };
  }
  throw CommandLineError(usage);
}

/// One line on stderr, redrawn in place on a terminal: `[####....] 12/40
/// patches  relu_3_7  5.1/s  ETA 6s`. Off a terminal (with --progress), only the
/// final line.
class SweepProgress {
 public:
  SweepProgress(bool tty, bool on) : tty_(tty), on_(on) {}
  void operator()(std::size_t done, std::size_t total, const patching::PatchRow& row) {
    total_ = total;
    if (!on_ || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - t0_).count();
    const double rate = s > 0 ? static_cast<double>(done) / s : 0;
    const int width = 30;
    const auto filled = static_cast<std::size_t>(width) * done / std::max<std::size_t>(total, 1);
    std::string bar(filled, '#');
    bar.append(static_cast<std::size_t>(width) - filled, '.');
    std::string where = row.label;
    if (row.index >= 0) where += "[" + std::to_string(row.index) + "]";
    if (where.size() > 32) where = where.substr(0, 29) + "...";
    std::fprintf(stderr, "\r[%s] %zu/%zu patches  %-32s", bar.c_str(), done, total, where.c_str());
    if (rate > 0)
      std::fprintf(stderr, "  %.1f/s  ETA %.0fs ", rate, static_cast<double>(total - done) / rate);
    std::fflush(stderr);
  }
  void finish() const {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    std::fprintf(stderr, "%s%zu patches in %.2f s\n", tty_ ? "\r\033[K" : "", total_, s);
    std::fflush(stderr);
  }

 private:
  bool tty_, on_;
  std::size_t total_ = 0;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

std::vector<c10::IValue> read_inputs(const Args& a, const std::string& flag) {
  std::vector<c10::IValue> out;
  for (const auto& path : a.all(flag)) {
    if (!fs::exists(path)) throw CommandLineError("input file not found: " + path);
    try {
      out.emplace_back(io::read_npy(path));
    } catch (const std::exception& e) {
      throw CommandLineError("cannot read " + path + ": " + plain_message(e));
    }
  }
  return out;
}

} // namespace

int cmd_patch(const Args& a) {
  if (a.positional.size() != 1 || !a.has("--clean") || !a.has("--corrupt") || !a.has("--sites") ||
      !a.has("--metric") || !a.has("--out")) {
    throw CommandLineError(
        "usage: torchlens patch MODEL.pt --clean A.npy --corrupt B.npy --sites SELECTOR "
        "--metric METRIC --out RESULT.json [--direction denoise|noise] [--grid DIM] "
        "[--csv OUT.csv] (see --help)");
  }
  patching::PatchOptions options;
  for (const auto& term : split(*a.get("--sites"), ',')) options.site(patch_site(term));
  if (options.sites().empty()) throw CommandLineError("--sites names no site");
  const std::string direction = a.get("--direction").value_or("denoise");
  if (direction != "denoise" && direction != "noise")
    throw CommandLineError("bad --direction '" + direction + "': use denoise or noise");
  options.direction(direction == "noise" ? patching::Direction::noise
                                         : patching::Direction::denoise);
  if (auto g = a.get("--grid")) {
    const auto d = integer(*g);
    if (!d) throw CommandLineError("bad --grid '" + *g + "': expected a dimension (an integer)");
    options.grid_dim(*d);
  }
  const CliEngine engine = engine_of(a, false);
  options.engine(engine == CliEngine::replay  ? Engine::replay
                 : engine == CliEngine::rerun ? Engine::rerun
                                              : Engine::automatic);
  options.seed(seed_of(a));

  const auto clean = read_inputs(a, "--clean");
  const auto corrupt = read_inputs(a, "--corrupt");
  if (clean.size() != corrupt.size())
    throw CommandLineError("give as many --corrupt as --clean inputs (one per forward argument)");
  for (std::size_t i = 0; i < clean.size(); ++i) {
    const at::Tensor &x = clean[i].toTensor(), &y = corrupt[i].toTensor();
    if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type())
      throw CommandLineError("clean and corrupted input " + std::to_string(i) +
                             " differ: " + shape_text(x.sizes()) + " " +
                             c10::toString(x.scalar_type()) + " against " + shape_text(y.sizes()) +
                             " " + c10::toString(y.scalar_type()));
  }
  auto model = load_model(a.positional[0]);

  const LogOptions log_options = LogOptions().keep_replay(true).seed(options.seed());
  const ModelLog clean_log = log_forward_pass(model, clean, log_options);
  const ModelLog corrupt_log = log_forward_pass(model, corrupt, log_options);
  const ModelLog& base =
      options.direction() == patching::Direction::denoise ? corrupt_log : clean_log;
  for (const Site& s : options.sites()) (void)site_matches(s, base); // unknown keys, empty sites
  options.metric(parse_metric(*a.get("--metric"), clean_log.activation(first_output(clean_log))));

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  SweepProgress progress(tty, a.has("--progress") || (tty && !a.has("--no-progress")));
  options.progress([&progress](std::size_t done, std::size_t total, const patching::PatchRow& row) {
    progress(done, total, row);
  });
  const patching::RerunFn rerun = [&](const ModelLog& b, const Interventions& spec) {
    return torchlens::rerun(model, &b == &clean_log ? clean : corrupt, b, spec).log;
  };
  const patching::PatchResult result =
      patching::activation_patch(clean_log, corrupt_log, options, rerun);
  progress.finish();

  result.to_json(*a.get("--out"));
  if (auto csv = a.get("--csv")) result.to_csv(*csv);
  if (!a.has("--quiet")) {
    std::cout << result;
    std::cout << "Wrote " << *a.get("--out") << " (" << result.rows.size() << " rows)";
    if (auto csv = a.get("--csv")) std::cout << " and " << *csv;
    std::cout << ".\n";
  }
  return 0;
}

} // namespace torchlens::cli
