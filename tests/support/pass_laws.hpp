#pragma once
/// \file
/// Laws every pass must obey (Hana-style test laws): after the pass the graph
/// passes validate_graph, every fact it declares in `produces` holds (checked
/// by an independent, naive re-computation), a pass that does not invalidate
/// facts::Topology adds or removes no vertex or edge, a run reporting
/// PassResult::changed == false left the graph as it was, and a pass declaring
/// is_idempotent leaves the graph unchanged when run a second time.

#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>

#include "support/doctest.hpp"

#include <boost/hana/for_each.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace torchlens::testing {

/// dump_graph_text as a string.
inline std::string dump(const ModelGraph& g) {
  std::ostringstream os;
  dump_graph_text(os, g);
  return os.str();
}

/// The vertex/edge structure only: each vertex's out-edges' targets, in order.
inline std::string topology(const ModelGraph& g) {
  std::ostringstream os;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    os << v << ":";
    for (auto e : boost::make_iterator_range(boost::out_edges(v, g)))
      os << " " << boost::target(e, g);
    os << "\n";
  }
  return os.str();
}

/// Naive reachability: vertices reachable from `from` along children (forward) or parents.
inline std::vector<char> reach(const ModelGraph& g, const std::vector<Vertex>& from, bool forward) {
  std::vector<char> seen(boost::num_vertices(g), 0);
  std::vector<Vertex> stack(from);
  for (Vertex v : from) seen[v] = 1;
  while (!stack.empty()) {
    Vertex v = stack.back();
    stack.pop_back();
    auto visit = [&](Vertex w) {
      if (!seen[w]) {
        seen[w] = 1;
        stack.push_back(w);
      }
    };
    if (forward) {
      for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) visit(boost::target(e, g));
    } else {
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) visit(boost::source(e, g));
    }
  }
  return seen;
}

inline std::vector<Vertex> of_kind(const ModelGraph& g, NodeKind k) {
  std::vector<Vertex> out;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == k) out.push_back(v);
  }
  return out;
}

/// Checks that fact F holds on g (a naive, independent check per fact).
template <class F>
void check_fact(const ModelGraph& g) {
  using namespace torchlens::facts;
  const auto n = boost::num_vertices(g);
  if constexpr (std::is_same_v<F, OutputNodesAdded>) {
    std::set<std::string> want, have;
    for (const auto& r : g[boost::graph_bundle].returned) want.insert(r.address);
    for (Vertex v : of_kind(g, NodeKind::output)) have.insert(g[v].io_address);
    CHECK(want == have);
  } else if constexpr (std::is_same_v<F, OutputAncestryMarked>) {
    auto down = reach(g, of_kind(g, NodeKind::input), true);
    auto up = reach(g, of_kind(g, NodeKind::output), false);
    for (Vertex v = 0; v < n; ++v) {
      CHECK(g[v].has_input_ancestor == static_cast<bool>(down[v]));
      CHECK(g[v].is_output_ancestor == static_cast<bool>(up[v]));
    }
  } else if constexpr (std::is_same_v<F, OrphansTrimmed>) {
    for (Vertex v = 0; v < n; ++v) {
      const bool kept_for_child = boost::out_degree(v, g) > 0;
      CHECK((g[v].has_input_ancestor || g[v].is_output_ancestor || kept_for_child));
    }
  } else if constexpr (std::is_same_v<F, DistancesComputed>) {
    // naive: Bellman-Ford style relaxation over the DAG
    std::vector<int> mn(n, -1), mx(n, -1);
    for (Vertex v : of_kind(g, NodeKind::input)) mn[v] = mx[v] = 0;
    for (std::size_t round = 0; round < n; ++round) {
      for (auto e : boost::make_iterator_range(boost::edges(g))) {
        Vertex s = boost::source(e, g), t = boost::target(e, g);
        if (mn[s] < 0) continue;
        if (mn[t] < 0 || mn[s] + 1 < mn[t]) mn[t] = mn[s] + 1;
        mx[t] = std::max(mx[t], mx[s] + 1);
      }
    }
    for (Vertex v = 0; v < n; ++v) {
      CHECK(g[v].min_distance_from_input == mn[v]);
      CHECK(g[v].max_distance_from_input == mx[v]);
    }
  } else if constexpr (std::is_same_v<F, ConditionalsDetected>) {
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].is_terminal_bool) CHECK_FALSE(g[v].in_cond_branch);
      if (g[v].in_cond_branch) {
        CHECK_FALSE(g[v].is_output_ancestor);
        CHECK(boost::out_degree(v, g) > 0); // it leads to a terminal bool
      }
    }
    for (auto e : boost::make_iterator_range(boost::edges(g))) {
      if (g[e].is_cond_branch_start) {
        const OpNode& target = g[boost::target(e, g)];
        CHECK(g[boost::source(e, g)].is_output_ancestor);
        CHECK((target.in_cond_branch ||
               (target.is_terminal_bool && target.scalar_use == ScalarUse::condition)));
      }
    }
  } else if constexpr (std::is_same_v<F, ModulesInferred>) {
    for (Vertex v = 0; v < n; ++v) {
      if (g[v].kind == NodeKind::op) CHECK((g[v].module_observed || g[v].module_inferred));
    }
  } else if constexpr (std::is_same_v<F, BuffersNumbered>) {
    std::map<std::string, int> last;
    for (Vertex v : of_kind(g, NodeKind::buffer))
      CHECK(g[v].buffer_pass == ++last[g[v].io_address]);
  } else if constexpr (std::is_same_v<F, RecurrencesGrouped>) {
    std::map<std::size_t, std::string> eq;
    for (Vertex v = 0; v < n; ++v) {
      CHECK(g[v].pass_num >= 1);
      CHECK(g[v].pass_num <= g[v].num_passes);
      auto [it, inserted] = eq.emplace(g[v].layer, g[v].equivalence_type);
      CHECK(it->second == g[v].equivalence_type);
    }
  } else if constexpr (std::is_same_v<F, LayersLabeled>) {
    std::set<std::string> labels;
    for (Vertex v = 0; v < n; ++v) {
      CHECK_FALSE(g[v].label().empty());
      CHECK(labels.insert(g[v].label()).second);
    }
  }
}

/// Runs the default pipeline's passes before the first pass of type P on g.
template <class P>
void run_prefix_before(ModelGraph& g, PassContext& ctx) {
  bool reached = false;
  boost::hana::for_each(passes::default_pipeline().passes(), [&](const auto& pass) {
    using Q = std::decay_t<decltype(pass)>;
    if (std::is_same_v<Q, P>) reached = true;
    if (!reached) ctx.invalidate<typename Q::invalidates>(pass.run(g, ctx));
  });
}

/// Checks the laws of pass P (default options) on g.
template <class P>
void check_pass_laws(ModelGraph g, const P& pass = P{}) {
  CAPTURE(P::name);
  PassContext ctx;
  run_prefix_before<P>(g, ctx);
  ctx.clear_analyses();
  const std::string structure = topology(g), before = dump(g);
  const PassResult first = pass.run(g, ctx);
  if (!first.changed) CHECK(dump(g) == before); // "no change" is a promise
  if constexpr (!detail::list_contains_v<facts::Topology, typename P::invalidates>) {
    CHECK(topology(g) == structure); // it keeps facts::Topology: no vertex or edge added or removed
  }
  ctx.invalidate<typename P::invalidates>(first);
  CHECK_NOTHROW(passes::validate_graph(g));
  boost::hana::for_each(detail::fact_set_of<typename P::produces>(),
                        [&](auto fact) { check_fact<typename decltype(fact)::type>(g); });
  if constexpr (P::is_idempotent) {
    const std::string once = dump(g);
    (void)pass.run(g, ctx);
    CHECK(dump(g) == once);
  }
}

/// Every canonical graph of graph_builders.hpp, for law checks.
inline std::vector<std::function<ModelGraph()>> sample_graphs() {
  return {chain_graph,
          fig4a_graph,
          conditional_graph,
          mixed_graph,
          [] { return pattern_graph("XYZXYZXYZ"); },
          [] { return pattern_graph("XYZAXYZBXYZ"); },
          [] { return linear_loop_graph(5); }};
}

/// Checks the laws of pass P on every sample graph.
template <class P>
void check_pass_laws_on_samples(const P& pass = P{}) {
  for (const auto& make : sample_graphs()) check_pass_laws<P>(make(), pass);
}

} // namespace torchlens::testing
