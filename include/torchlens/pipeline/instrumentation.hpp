#pragma once
/// \file
/// Before/after-pass hooks (LLVM PassInstrumentation, MLIR enableIRPrinting):
/// time each pass, dump the graph, check invariants; plus the per-pass record
/// (time, sizes, statistics) a pipeline run leaves in its PassContext.

#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <iomanip>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torchlens {

/// Which pass is about to run / just ran, on which graph.
struct PassEvent {
  std::string_view name;   ///< the pass's kebab-case name
  std::string printed;     ///< `name(opt=value)` as print_pipeline shows it
  std::size_t index = 0;   ///< position in the pipeline (0-based)
  const ModelGraph& graph; ///< the graph before (before-hooks) or after (after-hooks)
  double ms = 0;           ///< wall time of run() (after-hooks only)
};

/// What one pass did during a pipeline run.
struct PassRecord {
  std::string_view name; ///< the pass's `name` (static storage: no copy per run)
  /// Wall time of run(); without instrumentation hooks, from the end of the
  /// previous pass's run() (one clock read per pass), so it includes the
  /// pipeline's bookkeeping of that pass (its record, cached analyses dropped).
  double ms = 0;
  std::size_t vertices_before = 0, vertices_after = 0;
  std::size_t edges_before = 0, edges_after = 0;
  PassResult result; ///< changed flag and statistics
};

/// Callbacks run around every pass of a pipeline.
class Instrumentation {
 public:
  using BeforeHook = std::function<void(const PassEvent&)>;
  using AfterHook = std::function<void(const PassEvent&, const PassResult&)>;

  /// Registers a hook run before every pass.
  void add_before(BeforeHook hook) { before_.push_back(std::move(hook)); }
  /// Registers a hook run after every pass.
  void add_after(AfterHook hook) { after_.push_back(std::move(hook)); }
  /// Runs the before-hooks.
  void run_before(const PassEvent& e) const {
    for (const auto& h : before_) h(e);
  }
  /// Runs the after-hooks.
  void run_after(const PassEvent& e, const PassResult& r) const {
    for (const auto& h : after_) h(e, r);
  }
  /// True when no hook is registered.
  [[nodiscard]] bool empty() const { return before_.empty() && after_.empty(); }

 private:
  std::vector<BeforeHook> before_;
  std::vector<AfterHook> after_;
};

/// One line per vertex and edge, stable across runs (for dumps and idempotence checks).
inline void dump_graph_text(std::ostream& os, const ModelGraph& g) {
  const auto& info = g[boost::graph_bundle];
  os << "graph " << info.model_name << " recurrent=" << info.is_recurrent
     << " loops=" << info.max_recurrent_loops << " branching=" << info.is_branching
     << " conditional=" << info.has_conditional << " next_id=" << info.next_id << "\n";
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    os << v << " id=" << n.id << " " << n.layer_type << " label=" << n.label()
       << " io=" << n.io_address << " layer=" << n.layer << " pass=" << n.pass_num << "/"
       << n.num_passes << " eq=" << n.equivalence_type << " anc=" << n.is_output_ancestor
       << n.has_input_ancestor << " cond=" << n.is_terminal_bool << n.in_cond_branch
       << " dist=" << n.min_distance_from_input << "," << n.max_distance_from_input << ","
       << n.min_distance_from_output << "," << n.max_distance_from_output
       << " buf=" << n.buffer_pass << " mods=";
    for (const auto& m : n.modules) os << m.address << ":" << m.pass << "/";
    os << (n.module_inferred ? " inferred" : "") << "\n";
    for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
      os << "  -> " << boost::target(e, g) << " arg=" << g[e].arg_pos << "," << g[e].list_index
         << (g[e].is_cond_branch_start ? " IF" : "") << "\n";
    }
  }
}

/// Hook: prints `name: 0.123 ms, V vertices, stats` after each pass.
inline Instrumentation::AfterHook time_passes(std::ostream& os) {
  return [&os](const PassEvent& e, const PassResult& r) {
    os << e.printed << ": " << std::fixed << std::setprecision(3) << e.ms << " ms, "
       << boost::num_vertices(e.graph) << " vertices";
    for (const auto& s : r.statistics) os << ", " << s.name << "=" << s.value;
    os << "\n";
  };
}

/// Hook: dumps the whole graph (dump_graph_text) after each pass.
inline Instrumentation::AfterHook dump_after_each_pass(std::ostream& os) {
  return [&os](const PassEvent& e, const PassResult&) {
    os << "// ---- after " << e.printed << " ----\n";
    dump_graph_text(os, e.graph);
  };
}

/// Hook: calls `check(graph)` after each pass; wraps a std::exception it throws
/// into an InvariantError (a std::logic_error) naming the pass.
inline Instrumentation::AfterHook check_after_each_pass(
    std::function<void(const ModelGraph&)> check) {
  return [check = std::move(check)](const PassEvent& e, const PassResult&) {
    try {
      check(e.graph);
    } catch (const std::exception& ex) {
      // the inner message loses its `torchlens: ` prefix: the outer error adds it once
      throw InvariantError("invariant broken after pass '" + e.printed +
                           "': " + detail::unprefixed(ex.what()));
    }
  };
}

/// Writes the records of a run as an aligned table (name, ms, vertices, statistics).
inline void print_pass_records(std::ostream& os, const std::vector<PassRecord>& records) {
  for (const auto& r : records) {
    os << std::left << std::setw(20) << r.name << std::right << std::setw(10) << std::fixed
       << std::setprecision(3) << r.ms << " ms  " << r.vertices_before << " -> " << r.vertices_after
       << " vertices";
    for (const auto& s : r.result.statistics) os << ", " << s.name << "=" << s.value;
    os << "\n";
  }
}

} // namespace torchlens
