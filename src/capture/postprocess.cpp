// log_forward_pass's post-processing: the default pipeline, or a copy of its
// result for a raw graph it has already labelled (postprocess.hpp).

#include "postprocess.hpp"

#include <torchlens/passes/all.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace torchlens::detail {

namespace {

/// A cheap summary of a raw graph, from the fields that tell models and inputs
/// apart (interned sequences by their content hashes, so the same graph gives
/// the same summary whether or not its entries were made anew). It only
/// decides when to keep graphs; whether a graph is reused, same_raw_graph
/// decides, field by field.
std::size_t fingerprint(const ModelGraph& g) {
  std::size_t h = boost::num_vertices(g);
  hash_combine(h, boost::num_edges(g));
  for (Vertex v = 0; v < boost::num_vertices(g); ++v) {
    const OpNode& n = g[v];
    hash_combine(h, passes::detail::address_key(n.op_name.data())); // a Name: one copy per text
    hash_combine(h, n.shape.hash());
    hash_combine(h, n.modules.hash());
    hash_combine(h, n.params.hash());
    hash_combine(h, n.scalar_args.hash());
    hash_combine(h, static_cast<std::size_t>(n.kind) |
                        static_cast<std::size_t>(n.output_index) << 8 |
                        static_cast<std::size_t>(n.scalar_bool_value.value_or(false)) << 40 |
                        static_cast<std::size_t>(n.scalar_bool_value.has_value()) << 41);
  }
  for (auto e : boost::make_iterator_range(boost::edges(g))) {
    hash_combine(h, boost::source(e, g) << 32 | boost::target(e, g));
    hash_combine(h, static_cast<std::size_t>(static_cast<std::uint16_t>(g[e].arg_pos)));
  }
  return h;
}

/// What differs between two captures of one graph: measured, not structural.
struct Measurements {
  float time_us = 0;
  bool has_saved_activation = false;

  static Measurements of(const OpNode& n) { return {n.time_us, n.has_saved_activation}; }
  void put(OpNode& n) const {
    n.time_us = time_us;
    n.has_saved_activation = has_saved_activation;
  }
};
struct GraphMeasurements {
  double forward_time_ms = 0, logging_time_ms = 0;
  std::uint64_t random_seed = 0;

  static GraphMeasurements of(const GraphInfo& i) {
    return {i.forward_time_ms, i.logging_time_ms, i.random_seed};
  }
  void put(GraphInfo& i) const {
    i.forward_time_ms = forward_time_ms;
    i.logging_time_ms = logging_time_ms;
    i.random_seed = random_seed;
  }
};

/// `fresh` equals `kept` in every vertex and edge bundle, in the edges' order
/// (which fixes every adjacency list's order) and in the graph bundle, the
/// measurements aside (compared as equal: `fresh`'s are set aside meanwhile).
bool same_raw_graph(ModelGraph& fresh, const ModelGraph& kept) {
  const std::size_t n = boost::num_vertices(fresh);
  if (n != boost::num_vertices(kept) || boost::num_edges(fresh) != boost::num_edges(kept)) {
    return false;
  }
  auto& info = fresh[boost::graph_bundle];
  const auto info_measured = GraphMeasurements::of(info);
  GraphMeasurements::of(kept[boost::graph_bundle]).put(info);
  const bool same_info = info == kept[boost::graph_bundle];
  info_measured.put(info);
  if (!same_info) return false;
  for (Vertex v = 0; v < n; ++v) {
    OpNode& node = fresh[v];
    const auto measured = Measurements::of(node);
    Measurements::of(kept[v]).put(node);
    const bool same = node == kept[v];
    measured.put(node);
    if (!same) return false;
  }
  auto a = boost::edges(fresh).first;
  for (auto e : boost::make_iterator_range(boost::edges(kept))) {
    if (boost::source(*a, fresh) != boost::source(e, kept) ||
        boost::target(*a, fresh) != boost::target(e, kept) || !(fresh[*a] == kept[e])) {
      return false;
    }
    ++a;
  }
  return true;
}

/// The last model a thread post-processed.
struct Reuse {
  const void* model = nullptr;
  passes::GroupRecurrencesOptions loops;
  std::size_t fingerprint = 0;
  /// A raw graph and the pipeline's result for it.
  struct Kept {
    ModelGraph raw, labelled;
  };
  std::optional<Kept> kept; ///< once two captures in a row had one fingerprint
  std::size_t reused = 0;   ///< captures that took `kept->labelled`
};

thread_local Reuse last;

} // namespace

void postprocess(ModelGraph& graph, const void* model, const passes::GroupRecurrencesOptions& loops,
                 bool reuse) {
  const std::size_t n = boost::num_vertices(graph);
  if (!reuse || n > kReuseUpTo) {
    run_default_pipeline(graph, loops);
    return;
  }
  const bool same_model = last.model == model && same_options(last.loops, loops);
  if (same_model && last.kept && same_raw_graph(graph, last.kept->raw)) {
    // the pipeline's result for this very graph, with this capture's measurements
    // (a raw graph's vertex i has id i; outputs added by the pipeline have none)
    thread_local std::vector<std::optional<Measurements>> measured;
    measured.assign(n, std::nullopt);
    for (Vertex v = 0; v < n; ++v) {
      if (graph[v].id == v) measured[v] = Measurements::of(graph[v]);
    }
    const auto graph_measured = GraphMeasurements::of(graph[boost::graph_bundle]);
    // assigned over the raw graph: its arrays reused, and each interned field
    // that holds the same entry left as it is (no allocation, no count changed)
    graph = last.kept->labelled;
    for (Vertex v = 0; v < boost::num_vertices(graph); ++v) {
      const std::size_t id = graph[v].id;
      if (id < n && measured[id]) measured[id]->put(graph[v]);
    }
    graph_measured.put(graph[boost::graph_bundle]);
    ++last.reused;
    return;
  }
  const std::size_t print = fingerprint(graph);
  const bool seen_before = same_model && last.fingerprint == print;
  std::optional<ModelGraph> raw;
  if (seen_before) raw.emplace(graph); // kept as it was: the pipeline changes it
  run_default_pipeline(graph, loops);
  last.model = model;
  last.loops = loops;
  last.fingerprint = print;
  last.kept.reset();
  if (raw) last.kept.emplace(Reuse::Kept{std::move(*raw), graph});
}

std::size_t postprocess_reuses_on_this_thread() {
  return last.reused;
}

} // namespace torchlens::detail
