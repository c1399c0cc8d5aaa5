#pragma once
/// \file
/// Group op passes into layers (TorchLens postprocess step 8, loop detection;
/// paper rules 1–3, Fig. 4): ops using the same parameters, identical ops
/// around them, and parameter-free blocks repeated back to back.

#include <torchlens/config.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <numeric>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Union-find with path halving; the root of a set is its smallest key.
class DisjointSets {
 public:
  explicit DisjointSets(std::size_t n = 0) : parent_(n) {
    std::iota(parent_.begin(), parent_.end(), std::size_t{0});
  }
  /// Resets to n singletons.
  void reset(std::size_t n) {
    parent_.resize(n);
    std::iota(parent_.begin(), parent_.end(), std::size_t{0});
  }
  /// Representative of x.
  std::size_t find(std::size_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }
  /// Merges the sets of a and b.
  void unite(std::size_t a, std::size_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (b < a) std::swap(a, b);
    parent_[b] = a;
  }

 private:
  std::vector<std::size_t> parent_;
};

inline void append_shape(std::string& s, const std::vector<std::int64_t>& shape) {
  s += '(';
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ')';
}

} // namespace detail

/// Options of group-recurrences (`GroupRecurrencesPass::Options`).
struct GroupRecurrencesOptions {
  TORCHLENS_OPTIONS(
      // false: only rule 1 (same-parameter ops are one layer); no block detection.
      (bool, detect_loops, true));
};

/// Assigns OpNode::layer, pass_num and num_passes (passes numbered by creation
/// order) and GraphInfo::is_recurrent / max_recurrent_loops.
///
/// Equivalence types (TorchLens's `operation_equivalence_type`): an op reading
/// parameters is `{layer_type}[sorted parameter addresses]`; a parameter-free op
/// is `{layer_type}({scalar args}{parent shapes})`; both get `#out{i}` when the
/// op returned several tensors (the outputs of one call are separate layers,
/// never passes of one) and `@{module path}` (the addresses, outer → inner, of
/// the modules containing it: identical ops in different modules never group).
/// Inputs and outputs are `input{shape}{dtype}` / `output{shape}{dtype}` (inputs
/// fed to a loop one per iteration are passes of one input layer, as in
/// TorchLens), buffers `buffer:{address}`.
///
/// The algorithm is TorchLens 1.0's loop detection, step for step. Vertices are
/// visited from the sources in creation order; each equivalence class with
/// several members not already one layer starts one subgraph per member and
/// grows them in lock step, breadth first (children only at the first step,
/// children and parents after): a frontier vertex of one subgraph is paired
/// with the first vertex of equal type in each other subgraph's frontier (a
/// vertex two subgraphs reach is dropped), and the pairs form an iso-group.
/// When a subgraph reaches a vertex of another that is isomorphic to one of its
/// own, the two are adjacent (one iteration feeds the next). Iso-groups are then
/// split where members share no (direction, neighbouring iso-group). Members of
/// an iso-group become passes of one layer when their subgraphs are adjacent or
/// share a parameter type (rules 2 and 3: XYZXYZXYZ groups, XYZAXYZ does not),
/// and ops applying the same function to the same parameters always do (rule 1;
/// per output index). A new grouping that would shrink an existing layer is
/// skipped. Ties are broken by TorchLens's raw labels (`{type}_{n}_{order}_raw`)
/// in lexicographic order, as TorchLens sorts them.
struct GroupRecurrencesPass : pass_info<GroupRecurrencesPass, GroupRecurrencesOptions> {
  static constexpr std::string_view name = "group-recurrences";
  static constexpr std::string_view description =
      "group op passes into layers (same parameters, adjacent identical ops, repeated blocks)";
  using consumes = facts::list<facts::OrphansTrimmed, facts::ModulesInferred>;
  using produces = facts::list<facts::RecurrencesGrouped>;
  /// Adds or removes no vertex or edge, but renumbers layers and passes, which
  /// labels computed earlier encode (a second run with other options regroups).
  using invalidates = facts::list<facts::LayersLabeled>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  using pass_info::pass_info;

  /// The equivalence type of vertex v (see the pass description).
  static std::string equivalence_type(const ModelGraph& g, Vertex v) {
    const OpNode& n = g[v];
    std::string s;
    switch (n.kind) {
      case NodeKind::input:
      case NodeKind::output:
        s = n.kind == NodeKind::input ? "input" : "output";
        detail::append_shape(s, n.shape);
        s += n.dtype;
        return s;
      case NodeKind::buffer:
        return "buffer:" + n.io_address;
      case NodeKind::op:
        break;
    }
    s = n.layer_type;
    if (!n.params.empty()) {
      std::vector<const std::string*> addrs;
      addrs.reserve(n.params.size());
      for (const auto& p : n.params) addrs.push_back(&p.address);
      std::sort(addrs.begin(), addrs.end(), [](auto* a, auto* b) { return *a < *b; });
      s += '[';
      for (std::size_t i = 0; i < addrs.size(); ++i) {
        if (i) s += ',';
        s += *addrs[i];
      }
      s += ']';
    } else {
      s += '(';
      for (const auto& a : n.scalar_args) {
        s += a.name;
        s += '=';
        s += a.value;
        s += ';';
      }
      // parent shapes, in argument order
      std::vector<std::tuple<int, int, Vertex>> parents;
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        parents.emplace_back(g[e].arg_pos, g[e].list_index, boost::source(e, g));
      }
      std::sort(parents.begin(), parents.end());
      for (const auto& [pos, idx, p] : parents) {
        (void)pos;
        (void)idx;
        detail::append_shape(s, g[p].shape);
      }
      s += ')';
    }
    if (n.num_outputs > 1) {
      s += "#out";
      s += std::to_string(n.output_index);
    }
    s += '@';
    for (std::size_t i = 0; i < n.modules.size(); ++i) {
      if (i) s += '>';
      s += n.modules[i].address;
    }
    return s;
  }

  /// Statistics "layers", "recurrent layers", "expansions".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const std::size_t n = boost::num_vertices(g);
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    State st(g, adj);
    std::int64_t expansions = 0;
    if (options.detect_loops()) {
      expansions = st.detect_loops();
    } else {
      st.same_parameters_only();
    }
    // ---- layers and passes, numbered by creation order (TorchLens phase 5) ----
    std::vector<std::size_t> layer_index(n, static_cast<std::size_t>(-1));
    std::vector<int> count(n, 0);
    std::size_t num_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const std::size_t r = st.raw_layer[v];
      if (layer_index[r] == static_cast<std::size_t>(-1)) layer_index[r] = num_layers++;
      g[v].layer = layer_index[r];
      g[v].pass_num = ++count[r];
    }
    int max_passes = 1;
    std::int64_t recurrent_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const int passes = count[st.raw_layer[v]];
      g[v].num_passes = passes;
      max_passes = std::max(max_passes, passes);
      recurrent_layers += passes > 1 && g[v].pass_num == 1;
    }
    auto& info = g[boost::graph_bundle];
    info.is_recurrent = max_passes > 1;
    info.max_recurrent_loops = max_passes;
    PassResult result;
    result.add("layers", static_cast<std::int64_t>(num_layers))
        .add("recurrent layers", recurrent_layers)
        .add("expansions", expansions);
    return result;
  }

 private:
  /// The state of one run: classes, current layers, and the expansion scratch.
  struct State {
    using Adj = AdjacencyAnalysis::Result;
    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

    State(ModelGraph& g, const Adj& a) : g(g), adj(a), n(boost::num_vertices(g)) {
      std::unordered_map<std::string_view, std::size_t> class_of;
      class_of.reserve(n);
      cls.resize(n);
      orig_cls.resize(n);
      raw_layer.resize(n);
      group_size.assign(n, 0);
      uses_params.resize(n);
      for (Vertex v = 0; v < n; ++v) {
        g[v].equivalence_type = equivalence_type(g, v);
        auto [it, inserted] = class_of.try_emplace(g[v].equivalence_type, members.size());
        if (inserted) members.emplace_back();
        members[it->second].push_back(v);
        cls[v] = orig_cls[v] = it->second;
        raw_layer[v] = v;
        uses_params[v] = g[v].kind == NodeKind::op && !g[v].params.empty();
      }
      // rule 1 keys: (op, output index, sorted parameters)
      std::unordered_map<std::string, std::size_t> key_of;
      param_key.assign(n, kNone);
      for (Vertex v = 0; v < n; ++v) {
        if (!uses_params[v]) continue;
        std::string key = g[v].op_name + "#" + std::to_string(g[v].output_index);
        std::vector<std::string> addrs;
        for (const auto& p : g[v].params) addrs.push_back(p.address);
        std::sort(addrs.begin(), addrs.end());
        for (const auto& a : addrs) key += "|" + a;
        param_key[v] = key_of.try_emplace(std::move(key), key_of.size()).first->second;
      }
      // TorchLens's raw labels, `{type}_{type_num}_{creation}_raw`, ranked
      // lexicographically: the order it sorts subgraphs and breaks ties in. Only
      // vertices of one class are ever compared, and they share the type: the
      // rank within the class, from `{type_num}_{creation}` (short: no allocation).
      std::vector<std::string> key(n);
      std::unordered_map<std::string_view, int> per_type;
      int outputs = 0;
      for (Vertex v = 0; v < n; ++v) {
        const OpNode& node = g[v];
        if (node.kind == NodeKind::output) {
          key[v] = std::to_string(++outputs);
        } else if (node.kind == NodeKind::op) {
          key[v] = std::to_string(++per_type[node.layer_type]) + "_" + std::to_string(node.id + 1);
        } else {
          key[v] = std::to_string(++per_type[node.layer_type]);
        }
      }
      rank.resize(n);
      for (auto& m : members) {
        std::vector<Vertex> order = m;
        std::sort(order.begin(), order.end(), [&](Vertex a, Vertex b) { return key[a] < key[b]; });
        for (std::size_t i = 0; i < order.size(); ++i) rank[order[i]] = i;
      }
      stamp.assign(n, 0);
      sg_of.assign(n, kNone);
      iso_of.assign(n, kNone);
    }

    /// TorchLens phase 1: from the sources in creation order, expand every
    /// class not seen before. Returns the number of expansions.
    std::int64_t detect_loops() {
      std::vector<char> class_seen(members.size(), 0);
      std::vector<char> queued(n, 0);
      std::priority_queue<Vertex, std::vector<Vertex>, std::greater<>> heap; // creation order
      for (Vertex v = 0; v < n; ++v) {
        if (adj.parents_of(v).empty()) {
          heap.push(v);
          queued[v] = 1;
        }
      }
      std::int64_t expansions = 0;
      while (!heap.empty()) {
        const Vertex v = heap.top();
        heap.pop();
        if (class_seen[cls[v]]) continue;
        class_seen[cls[v]] = 1;
        const auto& equivalent = members[orig_cls[v]];
        for (Vertex e : equivalent) {
          for (std::uint32_t c : adj.children_of(e)) {
            if (!queued[c]) {
              queued[c] = 1;
              heap.push(c);
            }
          }
        }
        if (equivalent.size() == 1) {
          group_size[v] = 1;
          continue;
        }
        if (equivalent.size() == group_size[v]) continue; // already one layer
        ++expansions;
        expand(equivalent);
      }
      return expansions;
    }

    /// detect_loops = false: rule 1 only.
    void same_parameters_only() {
      std::unordered_map<std::size_t, Vertex> first;
      for (Vertex v = 0; v < n; ++v) {
        if (param_key[v] == kNone) continue;
        auto [it, inserted] = first.try_emplace(param_key[v], v);
        raw_layer[v] = it->second;
      }
    }

   private:
    struct Subgraph {
      std::vector<Vertex> param_nodes;
    };
    struct Frontier {
      std::size_t sg;
      std::deque<Vertex> lists[2]; // children, parents
    };

    bool in_subgraph(Vertex v, std::size_t sg) const { return stamp[v] == epoch && sg_of[v] == sg; }
    bool claimed(Vertex v) const { return stamp[v] == epoch && sg_of[v] != kNone; }
    void claim(Vertex v, std::size_t sg) {
      stamp[v] = epoch;
      sg_of[v] = sg;
      if (uses_params[v]) subgraphs[sg].param_nodes.push_back(v);
    }
    std::vector<Vertex> sorted_by_rank(std::vector<Vertex> vs) const {
      std::sort(vs.begin(), vs.end(), [&](Vertex a, Vertex b) { return rank[a] < rank[b]; });
      return vs;
    }
    std::size_t add_iso_group(std::vector<Vertex> nodes) {
      const std::size_t id = iso_groups.size();
      for (Vertex v : nodes) {
        iso_of[v] = id;
        group_subgraphs.insert(pair_key(id, sg_of[v]));
      }
      iso_groups.push_back(std::move(nodes));
      return id;
    }
    static std::uint64_t pair_key(std::size_t group, std::size_t sg) {
      return (static_cast<std::uint64_t>(group) << 32) ^ static_cast<std::uint64_t>(sg);
    }

    /// TorchLens phase 2: grow one subgraph per equivalent vertex in lock step.
    void expand(const std::vector<Vertex>& equivalent) {
      ++epoch;
      const std::vector<Vertex> starts = sorted_by_rank(equivalent);
      const std::size_t k = starts.size();
      subgraphs.assign(k, Subgraph{});
      adjacency.reset(k);
      in_adjacency.assign(k, 0);
      iso_groups.clear();
      group_subgraphs.clear();
      for (std::size_t j = 0; j < k; ++j) claim(starts[j], j);
      add_iso_group(starts);
      std::deque<std::vector<Vertex>> queue{starts};
      bool first = true;
      while (!queue.empty()) {
        std::vector<Vertex> iso = sorted_by_rank(std::move(queue.front()));
        queue.pop_front();
        if (iso.size() == 1) continue;
        advance(iso, first, queue);
        first = false;
      }
      refine();
      finalize();
    }

    void record_adjacency(Vertex node, Vertex neighbour) {
      const std::size_t a = sg_of[node], b = sg_of[neighbour];
      // adjacent only when this subgraph holds a vertex isomorphic to the neighbour
      if (group_subgraphs.count(pair_key(iso_of[neighbour], a)) == 0) return;
      in_adjacency[a] = in_adjacency[b] = 1;
      adjacency.unite(a, b);
    }

    void advance(const std::vector<Vertex>& iso, bool first,
                 std::deque<std::vector<Vertex>>& queue) {
      // each subgraph's frontier: its children, then (after the first step) its
      // parents, not yet in a subgraph, each once; one reached by another
      // subgraph records adjacency instead
      std::vector<Frontier> frontier;
      frontier.reserve(iso.size());
      for (Vertex v : iso) {
        Frontier f;
        f.sg = sg_of[v];
        std::vector<Vertex> added;
        for (int side = 0; side < (first ? 1 : 2); ++side) {
          const auto span = side == 0 ? adj.children_of(v) : adj.parents_of(v);
          for (std::uint32_t w : span) {
            if (in_subgraph(w, f.sg)) continue;
            if (claimed(w)) {
              record_adjacency(v, w);
            } else if (std::find(added.begin(), added.end(), w) == added.end()) {
              f.lists[side].push_back(w);
              added.push_back(w);
            }
          }
        }
        frontier.push_back(std::move(f));
      }
      // for each side and class, the frontier entries holding one, in frontier
      // order: TorchLens scans every other subgraph's list for the first vertex
      // of the candidate's class; the buckets find them without the scan
      std::unordered_map<std::size_t, std::vector<std::pair<std::size_t, std::size_t>>> buckets[2];
      std::vector<std::vector<char>> taken[2];
      for (int side = 0; side < 2; ++side) {
        taken[side].resize(frontier.size());
        for (std::size_t i = 0; i < frontier.size(); ++i) {
          const auto& list = frontier[i].lists[side];
          taken[side][i].assign(list.size(), 0);
          for (std::size_t j = 0; j < list.size(); ++j) {
            buckets[side][cls[list[j]]].emplace_back(i, j);
          }
        }
      }
      std::vector<std::pair<Vertex, std::size_t>> matches, kept;
      std::vector<std::size_t> next[2] = {std::vector<std::size_t>(frontier.size(), 0),
                                          std::vector<std::size_t>(frontier.size(), 0)};
      std::size_t scan = 0;
      for (;;) {
        // the next candidate: the first subgraph with a child left, else a parent
        std::size_t fi = 0, fj = 0;
        int side = -1;
        for (; scan < frontier.size() && side < 0; ++scan) {
          for (int s = 0; s < 2 && side < 0; ++s) {
            auto& at = next[s][scan];
            while (at < taken[s][scan].size() && taken[s][scan][at]) ++at;
            if (at < taken[s][scan].size()) {
              fi = scan;
              fj = at;
              side = s;
            }
          }
          if (side >= 0) break;
        }
        if (side < 0) break;
        const Vertex candidate = frontier[fi].lists[side][fj];
        taken[side][fi][fj] = 1;
        matches.assign(1, {candidate, frontier[fi].sg});
        // the first untaken vertex of the same class in each other subgraph
        std::size_t last = static_cast<std::size_t>(-1);
        for (const auto& [i, j] : buckets[side][cls[candidate]]) {
          if (i == fi || i == last || taken[side][i][j]) continue;
          last = i; // a subgraph's entries are consecutive: take its first
          taken[side][i][j] = 1;
          matches.emplace_back(frontier[i].lists[side][j], frontier[i].sg);
        }
        // a vertex two subgraphs reached belongs to neither
        std::sort(matches.begin(), matches.end());
        kept.clear();
        for (std::size_t a = 0; a < matches.size();) {
          std::size_t b = a;
          while (b < matches.size() && matches[b].first == matches[a].first) ++b;
          if (b - a == 1) kept.push_back(matches[a]);
          a = b;
        }
        if (kept.empty()) continue;
        std::sort(kept.begin(), kept.end(),
                  [&](const auto& x, const auto& y) { return rank[x.first] < rank[y.first]; });
        std::vector<Vertex> nodes;
        nodes.reserve(kept.size());
        for (const auto& [v, sg] : kept) {
          claim(v, sg);
          nodes.push_back(v);
        }
        add_iso_group(nodes);
        queue.push_back(std::move(nodes));
      }
    }

    /// TorchLens phase 3: split iso-groups whose members share no
    /// (direction, neighbouring iso-group).
    void refine() {
      const std::size_t groups = iso_groups.size();
      for (std::size_t gi = 0; gi < groups; ++gi) {
        const std::vector<Vertex> group = iso_groups[gi];
        if (group.size() <= 1) continue;
        std::map<std::pair<int, std::size_t>, std::vector<std::size_t>> by_key;
        for (std::size_t m = 0; m < group.size(); ++m) {
          const Vertex v = group[m];
          for (std::uint32_t c : adj.children_of(v)) {
            if (claimed(c)) by_key[{0, leader(c)}].push_back(m);
          }
          for (std::uint32_t p : adj.parents_of(v)) {
            if (claimed(p)) by_key[{1, leader(p)}].push_back(m);
          }
        }
        detail::DisjointSets uf(group.size());
        for (const auto& [key, ms] : by_key) {
          for (std::size_t i = 1; i < ms.size(); ++i) uf.unite(ms[0], ms[i]);
        }
        std::vector<std::size_t> component_of(group.size());
        std::vector<std::vector<Vertex>> components;
        std::vector<std::size_t> index_of_root(group.size(), kNone);
        for (std::size_t m = 0; m < group.size(); ++m) {
          const std::size_t r = uf.find(m);
          if (index_of_root[r] == kNone) {
            index_of_root[r] = components.size();
            components.emplace_back();
          }
          components[index_of_root[r]].push_back(group[m]);
        }
        if (components.size() <= 1) continue;
        iso_groups[gi].clear(); // replaced by its components, appended in order
        for (auto& c : components) add_iso_group(sorted_by_rank(std::move(c)));
      }
    }
    /// The leader (lowest-ranked member) of v's iso-group.
    Vertex leader(Vertex v) const {
      const auto& group = iso_groups[iso_of[v]];
      return group.front();
    }

    /// TorchLens phase 4: members of an iso-group become passes of one layer
    /// when their subgraphs are adjacent or share a parameter type; same-function
    /// same-parameter ops always.
    void finalize() {
      std::vector<Vertex> all;
      for (const auto& group : iso_groups) all.insert(all.end(), group.begin(), group.end());
      // union-find over `all` (the root only names the layer)
      std::unordered_map<Vertex, std::size_t> slot;
      slot.reserve(all.size());
      std::vector<Vertex> by_slot = all; // any fixed order: the root only names the layer
      std::sort(by_slot.begin(), by_slot.end());
      for (std::size_t i = 0; i < by_slot.size(); ++i) slot[by_slot[i]] = i;
      detail::DisjointSets uf(by_slot.size());
      // parameter types of each subgraph, as they are now
      std::vector<std::vector<std::size_t>> param_types(subgraphs.size());
      for (std::size_t s = 0; s < subgraphs.size(); ++s) {
        for (Vertex p : subgraphs[s].param_nodes) param_types[s].push_back(cls[p]);
        std::sort(param_types[s].begin(), param_types[s].end());
        param_types[s].erase(std::unique(param_types[s].begin(), param_types[s].end()),
                             param_types[s].end());
      }
      for (const auto& group : iso_groups) {
        if (group.size() < 2) continue;
        // adjacent subgraphs: one adjacency component
        std::unordered_map<std::size_t, Vertex> by_component;
        // a shared parameter type
        std::unordered_map<std::size_t, Vertex> by_param_type;
        for (Vertex v : group) {
          const std::size_t sg = sg_of[v];
          if (in_adjacency[sg]) {
            auto [it, inserted] = by_component.try_emplace(adjacency.find(sg), v);
            if (!inserted) uf.unite(slot[it->second], slot[v]);
          }
          for (std::size_t t : param_types[sg]) {
            auto [it, inserted] = by_param_type.try_emplace(t, v);
            if (!inserted) uf.unite(slot[it->second], slot[v]);
          }
        }
      }
      std::unordered_map<std::size_t, Vertex> by_params; // rule 1
      for (Vertex v : all) {
        if (param_key[v] == kNone) continue;
        auto [it, inserted] = by_params.try_emplace(param_key[v], v);
        if (!inserted) uf.unite(slot[it->second], slot[v]);
      }
      std::unordered_map<std::size_t, std::vector<Vertex>> layers;
      for (Vertex v : all) layers[uf.find(slot[v])].push_back(v);
      for (auto& [root, nodes] : layers) {
        if (nodes.size() < 2) continue;
        std::size_t largest = 0;
        for (Vertex v : nodes) largest = std::max(largest, group_size[v]);
        if (nodes.size() < largest) continue; // never shrink a layer
        std::sort(nodes.begin(), nodes.end());
        const Vertex layer_label = by_slot[root];
        const std::size_t canonical = cls[nodes.front()];
        for (Vertex v : nodes) {
          raw_layer[v] = layer_label;
          group_size[v] = nodes.size();
          cls[v] = canonical;
        }
      }
    }

    ModelGraph& g;
    const Adj& adj;
    const std::size_t n;

   public:
    std::vector<std::vector<Vertex>> members; ///< original classes, in creation order
    std::vector<std::size_t> cls;             ///< current class (canonicalised by grouping)
    std::vector<std::size_t> orig_cls;        ///< class at capture
    std::vector<Vertex> raw_layer;            ///< the layer's label vertex
    std::vector<std::size_t> group_size;      ///< size of its layer when last grouped
    std::vector<char> uses_params;
    std::vector<std::size_t> param_key; ///< rule-1 key, kNone without parameters
    std::vector<std::size_t> rank;      ///< rank of TorchLens's raw label within its class

   private:
    // expansion scratch (epoch-stamped)
    std::vector<std::uint32_t> stamp;
    std::uint32_t epoch = 0;
    std::vector<std::size_t> sg_of, iso_of;
    std::vector<Subgraph> subgraphs;
    detail::DisjointSets adjacency;
    std::vector<char> in_adjacency;
    std::vector<std::vector<Vertex>> iso_groups;
    std::unordered_set<std::uint64_t> group_subgraphs; // (iso-group, subgraph) pairs
  };
};

} // namespace torchlens::passes
