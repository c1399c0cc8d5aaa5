// Activation patching (patching.hpp) on the replay engine.

#include <torchlens/intervene/patching.hpp>
#include <torchlens/io/json.hpp>

#include "../io/csv.hpp"

#include <boost/range/iterator_range.hpp>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <utility>
#include <vector>

namespace torchlens::patching {

namespace {

const at::Tensor& first_output(const ModelLog& log) {
  const ModelGraph& g = log.graph();
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == NodeKind::output) {
      const at::Tensor& t = log.activation(v);
      TORCHLENS_CHECK(t.defined(), "patching needs the model's output saved in the log");
      return t;
    }
  }
  TORCHLENS_CHECK(false, "the log of ", log.model_name(), " has no output");
  static const at::Tensor none;
  return none;
}

/// One patch: a resolved site on the base log.
struct Target {
  Site site;
  std::string label;
  std::int64_t size = 0; // along the grid dimension
};

std::vector<Target> targets(const Site& site, const ModelLog& base,
                            const std::optional<std::int64_t>& grid_dim) {
  std::vector<Target> out;
  const ModelGraph& g = base.graph();
  std::unordered_map<std::size_t, Vertex> vertex_of;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) vertex_of[g[v].id] = v;
  auto grid_size = [&](const std::vector<std::int64_t>& shape) -> std::int64_t {
    if (!grid_dim) return 0;
    const auto rank = static_cast<std::int64_t>(shape.size());
    const std::int64_t d = *grid_dim < 0 ? *grid_dim + rank : *grid_dim;
    TORCHLENS_CHECK(d >= 0 && d < rank, "grid_dim ", *grid_dim, " is out of range for ",
                    site.describe(), " of rank ", rank);
    return shape[static_cast<std::size_t>(d)];
  };
  if (const auto* edge = std::get_if<EdgeSelector>(&site.selector())) {
    for (const EdgeId& id : resolve_edges(*edge, base)) {
      EdgeSelector one = *edge;
      one.resolved = {id};
      const OpNode& p = g[vertex_of.at(id.parent)];
      out.push_back(
          {Site(one), p.label() + " -> " + g[vertex_of.at(id.child)].label(), grid_size(p.shape)});
    }
    return out;
  }
  std::vector<std::size_t> ids;
  if (const auto* live = std::get_if<LiveSelector>(&site.selector())) {
    ids = LabelSelector(live->node()).resolve(base);
  } else {
    ids = std::get<LabelSelector>(site.selector()).resolve(base);
  }
  for (std::size_t id : ids) {
    const OpNode& n = g[vertex_of.at(id)];
    out.push_back({Site(LiveSelector(sel::ids({id}).node())), n.label(), grid_size(n.shape)});
  }
  return out;
}

double normalised(double m, double clean, double corrupted) {
  const double span = clean - corrupted;
  return span == 0 ? std::nan("") : (m - corrupted) / span;
}

const char* engine_name(Engine e) {
  return e == Engine::replay ? "replay" : e == Engine::rerun ? "rerun" : "auto";
}

} // namespace

PatchResult activation_patch(const ModelLog& clean, const ModelLog& corrupted,
                             const PatchOptions& options, const RerunFn& rerun) {
  TORCHLENS_CHECK(static_cast<bool>(options.metric()), "activation_patch needs a metric");
  TORCHLENS_CHECK(!options.sites().empty(), "activation_patch needs at least one site");
  const bool denoise = options.direction() == Direction::denoise;
  const ModelLog& base = denoise ? corrupted : clean;
  const ModelLog& donor = denoise ? clean : corrupted;
  PatchResult result;
  result.clean_metric = options.metric()(first_output(clean));
  result.corrupted_metric = options.metric()(first_output(corrupted));
  const Action patch = patch_from(donor);

  auto run = [&](const Interventions& spec, Engine& used) -> double {
    if (options.engine() != Engine::rerun) {
      try {
        used = Engine::replay;
        return options.metric()(first_output(replay(base, spec)));
      } catch (const ReplayDivergence&) {
        if (options.engine() == Engine::replay || !rerun) throw;
      }
    }
    TORCHLENS_CHECK(static_cast<bool>(rerun),
                    "Engine::rerun needs the model: call the "
                    "activation_patch overload that takes it");
    used = Engine::rerun;
    return options.metric()(first_output(rerun(base, spec)));
  };

  // every site resolved first, so that progress knows the number of patches
  std::vector<std::pair<const Site*, std::vector<Target>>> plan;
  std::size_t total = 0;
  for (const Site& site : options.sites()) {
    plan.emplace_back(&site, targets(site, base, options.grid_dim()));
    for (const Target& t : plan.back().second) {
      total += options.grid_dim() ? static_cast<std::size_t>(t.size) : 1;
    }
  }
  for (const auto& [site, site_targets] : plan) {
    for (const Target& t : site_targets) {
      const std::int64_t count = options.grid_dim() ? t.size : 1;
      for (std::int64_t i = 0; i < count; ++i) {
        const Site s = options.grid_dim() ? t.site.at_index(*options.grid_dim(), i) : t.site;
        PatchRow row;
        row.site = site->describe();
        row.label = t.label;
        row.index = options.grid_dim() ? i : -1;
        row.metric = run(Interventions().at(s, patch), row.engine);
        row.effect = normalised(row.metric, result.clean_metric, result.corrupted_metric);
        result.rows.push_back(std::move(row));
        if (options.progress()) options.progress()(result.rows.size(), total, result.rows.back());
      }
    }
  }
  return result;
}

std::ostream& operator<<(std::ostream& os, const PatchResult& r) {
  os << "activation patching: clean metric " << r.clean_metric << ", corrupted metric "
     << r.corrupted_metric << "\n";
  os << std::left << std::setw(32) << "layer" << std::setw(8) << "index" << std::setw(14)
     << "metric" << std::setw(12) << "effect"
     << "engine\n";
  for (const auto& row : r.rows) {
    os << std::left << std::setw(32) << row.label << std::setw(8)
       << (row.index < 0 ? std::string("-") : std::to_string(row.index)) << std::setw(14)
       << row.metric << std::setw(12) << row.effect << engine_name(row.engine) << "\n";
  }
  return os;
}

namespace {
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream os;
  os << std::setprecision(17) << x;
  return os.str();
}
} // namespace

void PatchResult::to_json(const std::string& path) const {
  std::ofstream out(path, std::ios::trunc);
  TORCHLENS_CHECK(out.good(), "cannot write ", path);
  out << "{\n  \"clean_metric\": " << json_number(clean_metric)
      << ",\n  \"corrupted_metric\": " << json_number(corrupted_metric) << ",\n  \"rows\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    out << (i ? ",\n" : "\n") << "    {\"site\": " << io::json_string(r.site)
        << ", \"label\": " << io::json_string(r.label) << ", \"index\": " << r.index
        << ", \"metric\": " << json_number(r.metric) << ", \"effect\": " << json_number(r.effect)
        << ", \"engine\": \"" << engine_name(r.engine) << "\"}";
  }
  out << "\n  ]\n}\n";
  TORCHLENS_CHECK(out.good(), "writing ", path, " failed");
}

void PatchResult::to_csv(const std::string& path) const {
  std::ofstream out(path, std::ios::trunc);
  TORCHLENS_CHECK(out.good(), "cannot write ", path);
  out << "site,label,index,metric,effect,engine\n";
  for (const auto& r : rows) {
    out << io::csv_text(r.site) << ',' << io::csv_text(r.label) << ',' << r.index << ','
        << json_number(r.metric) << ',' << json_number(r.effect) << ',' << engine_name(r.engine)
        << '\n';
  }
  TORCHLENS_CHECK(out.good(), "writing ", path, " failed");
}

} // namespace torchlens::patching
