#pragma once
/// \file
/// PassContext: the run-time state shared by the passes of one pipeline run —
/// lazily computed analyses cached by type (LLVM's AnalysisManager), dropped
/// according to each pass's `invalidates` (unless the pass reports that it
/// changed nothing: PassResult::changed), plus instrumentation and the
/// per-pass records. Also the standard analyses: TopologicalOrderAnalysis,
/// AdjacencyAnalysis and ModuleTreeAnalysis.

#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/facts.hpp>
#include <torchlens/pipeline/instrumentation.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <boost/graph/topological_sort.hpp>
#include <boost/hana/for_each.hpp>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <typeindex>
#include <utility>
#include <vector>

namespace torchlens {

/// An analysis: `Result`, `static Result compute(const ModelGraph&, PassContext&)`
/// and `depends_on`, the facts (or fact sets, as one tag) whose invalidation drops
/// the cached result.
template <class A>
concept Analysis = requires(const ModelGraph& g, PassContext& ctx) {
  typename A::Result;
  typename A::depends_on;
  { A::compute(g, ctx) } -> std::same_as<typename A::Result>;
};

namespace detail {

/// The expanded fact list as run-time type indices.
template <class List>
std::vector<std::type_index> fact_indices() {
  std::vector<std::type_index> out;
  boost::hana::for_each(fact_set_of<List>(),
                        [&](auto t) { out.emplace_back(typeid(typename decltype(t)::type)); });
  return out;
}

/// The listed facts as run-time type indices, fact sets kept as one tag (not expanded).
template <class... Fs>
std::vector<std::type_index> listed_fact_indices(facts::list<Fs...>) {
  return {std::type_index(typeid(Fs))...};
}

} // namespace detail

/// Run-time state of one pipeline run: analysis cache, hooks, per-pass records.
class PassContext {
 public:
  /// Hooks run around each pass (time, dump, verify).
  Instrumentation instrumentation;
  /// One record per pass run so far, in order.
  std::vector<PassRecord> records;

  /// The cached result of analysis A on g, computing it on first use.
  template <Analysis A>
  const typename A::Result& get(const ModelGraph& g) {
    Entry* cached = find(std::type_index(typeid(A)));
    if (cached != nullptr && cached->graph == &g) {
      return *static_cast<const typename A::Result*>(cached->value.get());
    }
    // compute first: compute() may itself call get<>() and rehash the cache
    auto value = std::make_shared<typename A::Result>(A::compute(g, *this));
    Entry entry;
    entry.graph = &g;
    static const std::vector<std::type_index> depends_on =
        detail::listed_fact_indices(typename A::depends_on{});
    entry.depends_on = &depends_on;
    entry.value = value;
    ++computations_;
    // (found again: compute() may have added entries)
    if (Entry* slot = find(std::type_index(typeid(A)))) {
      *slot = std::move(entry);
    } else {
      cache_.emplace_back(std::type_index(typeid(A)), std::move(entry));
    }
    return *value;
  }

  /// True when analysis A is cached.
  template <Analysis A>
  [[nodiscard]] bool is_cached() const {
    return find(std::type_index(typeid(A))) != nullptr;
  }

  /// After a pass that invalidates `Invalidated` and reported `result`: drops every
  /// cached analysis whose `depends_on` names a fact in `Invalidated` (expanded:
  /// invalidating facts::Topology hits analyses depending on Topology or on any of
  /// its members; invalidating one member hits only analyses naming it) and not in
  /// `result.kept` — unless `result.changed` is false: a run that left the graph as
  /// it was drops nothing.
  template <class Invalidated>
  void invalidate(const PassResult& result) {
    if (!result.changed) return;
    static const std::vector<std::type_index> dropped = detail::fact_indices<Invalidated>();
    if (dropped.empty()) return;
    const auto& kept = result.kept;
    for (auto it = cache_.begin(); it != cache_.end();) {
      const auto& deps = *it->second.depends_on;
      bool hit = std::any_of(deps.begin(), deps.end(), [&](const std::type_index& d) {
        return std::find(dropped.begin(), dropped.end(), d) != dropped.end() &&
               std::find(kept.begin(), kept.end(), d) == kept.end();
      });
      if (hit) {
        it = cache_.erase(it);
      } else {
        ++it;
      }
    }
  }

  /// Drops every cached analysis.
  void clear_analyses() { cache_.clear(); }

  /// How many analyses were computed (not served from the cache) so far.
  [[nodiscard]] std::size_t analysis_computations() const { return computations_; }

  /// The record of the last run of pass `name`; throws UsageError (a std::invalid_argument) if
  /// none.
  [[nodiscard]] const PassRecord& record(std::string_view name) const {
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (it->name == name) return *it;
    }
    throw UsageError("no pass named '" + std::string(name) + "' ran in this context");
  }

 private:
  struct Entry {
    const ModelGraph* graph = nullptr;
    const std::vector<std::type_index>* depends_on = nullptr; ///< a static per analysis type
    std::shared_ptr<void> value;
  };
  /// The cached analyses, in the order first computed: a handful per
  /// pipeline, so a vector scanned in place beats a hash map (no node, no
  /// bucket array per context).
  std::vector<std::pair<std::type_index, Entry>> cache_;
  [[nodiscard]] const Entry* find(std::type_index t) const {
    for (const auto& [type, entry] : cache_) {
      if (type == t) return &entry;
    }
    return nullptr;
  }
  Entry* find(std::type_index t) { return const_cast<Entry*>(std::as_const(*this).find(t)); }
  std::size_t computations_ = 0;
};

/// A topological order of the vertices. Capture and every standard pass keep
/// vertex order topological, so this is usually the identity (checked in O(E));
/// otherwise boost::topological_sort computes one.
struct TopologicalOrderAnalysis {
  struct Result {
    std::vector<Vertex> order; ///< parents before children
    bool index_order_is_topological = true;
  };
  using depends_on = facts::list<facts::Topology>;

  /// Computes the order; throws InvariantError (a std::logic_error) if the graph has a cycle.
  static Result compute(const ModelGraph& g, PassContext& ctx);
};

/// Compressed (CSR) parent and child lists: contiguous arrays that traversal
/// passes scan instead of walking the graph's edge records (one record per
/// step, wherever it lies), which matters once graphs outgrow the cache. A parallel edge (x + x)
/// appears twice. Children keep out-edge order; parents are in increasing
/// vertex order.
struct AdjacencyAnalysis {
  struct Result {
    std::vector<std::uint32_t> child_start,
        children; ///< children of v: [child_start[v], child_start[v+1])
    std::vector<std::uint32_t> parent_start,
        parents; ///< parents of v: [parent_start[v], parent_start[v+1])

    /// Children of v (with repeats for parallel edges).
    [[nodiscard]] std::span<const std::uint32_t> children_of(Vertex v) const {
      return {children.data() + child_start[v], child_start[v + 1] - child_start[v]};
    }
    /// Parents of v (with repeats for parallel edges).
    [[nodiscard]] std::span<const std::uint32_t> parents_of(Vertex v) const {
      return {parents.data() + parent_start[v], parent_start[v + 1] - parent_start[v]};
    }
  };
  using depends_on = facts::list<facts::Topology>;

  /// Builds both lists in O(V + E); throws InvariantError (a std::logic_error) beyond 2^32
  /// vertices or edges.
  static Result compute(const ModelGraph& g, PassContext&) {
    const auto n = boost::num_vertices(g);
    const auto m = boost::num_edges(g);
    if (n >= 0xffffffffULL || m >= 0xffffffffULL) {
      throw InvariantError("graph too large for 32-bit adjacency arrays");
    }
    Result r;
    r.child_start.assign(n + 1, 0);
    r.parent_start.assign(n + 1, 0);
    r.children.reserve(m);
    for (Vertex v = 0; v < n; ++v) {
      for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
        const auto t = boost::target(e, g);
        r.children.push_back(static_cast<std::uint32_t>(t));
        ++r.parent_start[t + 1];
      }
      r.child_start[v + 1] = static_cast<std::uint32_t>(r.children.size());
    }
    for (Vertex v = 0; v < n; ++v) r.parent_start[v + 1] += r.parent_start[v];
    r.parents.resize(r.children.size());
    std::vector<std::uint32_t> fill(r.parent_start.begin(), r.parent_start.end() - 1);
    for (Vertex v = 0; v < n; ++v) {
      for (std::uint32_t i = r.child_start[v]; i < r.child_start[v + 1]; ++i) {
        r.parents[fill[r.children[i]]++] = static_cast<std::uint32_t>(v);
      }
    }
    return r;
  }
};

inline TopologicalOrderAnalysis::Result TopologicalOrderAnalysis::compute(const ModelGraph& g,
                                                                          PassContext& ctx) {
  Result r;
  const auto n = boost::num_vertices(g);
  const auto& adj = ctx.get<AdjacencyAnalysis>(g);
  for (Vertex v = 0; v < n && r.index_order_is_topological; ++v) {
    for (std::uint32_t c : adj.children_of(v)) {
      if (c <= v) {
        r.index_order_is_topological = false;
        break;
      }
    }
  }
  r.order.reserve(n);
  if (r.index_order_is_topological) {
    for (Vertex v = 0; v < n; ++v) r.order.push_back(v);
    return r;
  }
  try {
    boost::topological_sort(g, std::back_inserter(r.order));
  } catch (const boost::not_a_dag&) {
    throw InvariantError("the model graph has a cycle");
  }
  std::reverse(r.order.begin(), r.order.end());
  return r;
}

/// Module containment paths interned into a trie: equal paths share an id,
/// the longest common prefix of two paths is the trie's lowest common ancestor.
class ModuleTree {
 public:
  /// Id of the empty path (the root module).
  static constexpr int kRoot = 0;

  ModuleTree() { nodes_.push_back({-1, {}, 0}); }

  /// Id of the path `frames` (outer → inner), interning it if new. Frames are
  /// told apart by address and pass.
  int intern(std::span<const ModuleFrame> frames) {
    int cur = kRoot;
    for (const auto& f : frames) cur = child(cur, f);
    return cur;
  }
  int intern(const std::vector<ModuleFrame>& frames) {
    return intern(std::span<const ModuleFrame>(frames));
  }
  int intern(std::initializer_list<ModuleFrame> frames) {
    return intern(std::span<const ModuleFrame>(frames.begin(), frames.size()));
  }
  /// Id of the interned path `frames`; interned_frames(id) then hands out this
  /// handle (the first one seen for the path).
  int intern(const Interned<ModuleFrame>& frames) {
    const int id = intern(std::span<const ModuleFrame>(frames.get()));
    auto& slot = handle(id);
    if (slot.empty()) slot = frames;
    return id;
  }
  /// Longest common prefix (address and pass equal) of paths a and b.
  [[nodiscard]] int common_prefix(int a, int b) const {
    while (depth(a) > depth(b)) a = parent(a);
    while (depth(b) > depth(a)) b = parent(b);
    while (a != b) {
      a = parent(a);
      b = parent(b);
    }
    return a;
  }
  /// The frames of path `id`, outer → inner.
  [[nodiscard]] std::vector<ModuleFrame> frames(int id) const {
    std::vector<ModuleFrame> out(static_cast<std::size_t>(depth(id)));
    for (int cur = id; cur != kRoot; cur = parent(cur)) {
      out[static_cast<std::size_t>(depth(cur) - 1)] = node(cur).frame;
    }
    return out;
  }
  /// The frames of path `id` as an Interned sequence, made once per path (a
  /// cache filled on first use: not for concurrent callers of one tree).
  [[nodiscard]] const Interned<ModuleFrame>& interned_frames(int id) const {
    auto& slot = handle(id);
    if (slot.empty() && id != kRoot) slot = Interned<ModuleFrame>(frames(id));
    return slot;
  }
  /// Nesting depth of path `id` (0 for the root).
  [[nodiscard]] int depth(int id) const { return node(id).depth; }
  /// Path `id` without its innermost frame.
  [[nodiscard]] int parent(int id) const { return node(id).parent; }
  /// Innermost frame of path `id` (id must not be the root).
  [[nodiscard]] const ModuleFrame& innermost(int id) const { return node(id).frame; }
  /// Number of distinct paths (including the root).
  [[nodiscard]] std::size_t size() const { return nodes_.size(); }

 private:
  struct Node {
    int parent;
    ModuleFrame frame;
    int depth;
  };
  /// The child of path `parent` for frame f, interned if new. A child is told
  /// apart by the frame's pass and address (a Name's characters are stored once
  /// per process, so their address is its identity). The children are found in
  /// an open-addressed table of node ids (a power of two, at most half full),
  /// so a path costs no allocation per frame.
  int child(int parent, const ModuleFrame& f) {
    if (2 * nodes_.size() >= slots_.size()) grow();
    const char* address = f.address.data();
    int& slot = slots_[detail::linear_probe(
        slot_hash(parent, f.pass, address), slots_.size(), [&](std::size_t i) {
          if (slots_[i] < 0) return true;
          const Node& n = node(slots_[i]);
          return n.parent == parent && n.frame.pass == f.pass && n.frame.address.data() == address;
        })];
    if (slot < 0) {
      slot = static_cast<int>(nodes_.size());
      nodes_.push_back({parent, f, node(parent).depth + 1});
    }
    return slot;
  }
  static std::size_t slot_hash(int parent, int pass, const char* address) noexcept {
    std::size_t h = std::hash<const char*>{}(address);
    detail::hash_combine(h, static_cast<std::size_t>(parent));
    detail::hash_combine(h, static_cast<std::size_t>(pass));
    return h;
  }
  void grow() {
    std::vector<int> slots(std::max<std::size_t>(16, 2 * slots_.size()), -1);
    for (std::size_t id = 1; id < nodes_.size(); ++id) { // the root has no slot
      const Node& n = nodes_[id];
      slots[detail::linear_probe(slot_hash(n.parent, n.frame.pass, n.frame.address.data()),
                                 slots.size(), [&](std::size_t i) { return slots[i] < 0; })] =
          static_cast<int>(id);
    }
    slots_.swap(slots);
  }
  [[nodiscard]] const Node& node(int id) const { return nodes_[static_cast<std::size_t>(id)]; }
  Interned<ModuleFrame>& handle(int id) const {
    if (handles_.size() <= static_cast<std::size_t>(id)) handles_.resize(nodes_.size());
    return handles_[static_cast<std::size_t>(id)];
  }
  std::vector<Node> nodes_;
  std::vector<int> slots_;                             ///< node ids by slot_hash, -1 where empty
  mutable std::vector<Interned<ModuleFrame>> handles_; ///< by path id, empty until needed
};

/// Every vertex's current module containment as a ModuleTree path id.
struct ModuleTreeAnalysis {
  struct Result {
    ModuleTree tree;
    std::vector<int> path_of; ///< per vertex index: id of g[v].modules
  };
  /// Containment changes when modules are inferred (infer-modules invalidates
  /// ModulesInferred before re-producing it) or when vertices change.
  using depends_on = facts::list<facts::Topology, facts::ModulesInferred>;

  /// Interns every vertex's containment (consecutive equal ones once).
  static Result compute(const ModelGraph& g, PassContext&) {
    Result r;
    const auto n = boost::num_vertices(g);
    r.path_of.resize(n, ModuleTree::kRoot);
    const void* prev = nullptr;
    int prev_id = ModuleTree::kRoot;
    for (Vertex v = 0; v < n; ++v) {
      const Interned<ModuleFrame>& mods = g[v].modules;
      if (mods.identity() != prev) {
        prev_id = r.tree.intern(mods);
        prev = mods.identity();
      }
      r.path_of[v] = prev_id;
    }
    return r;
  }
};

} // namespace torchlens
