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
#include <charconv>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <numeric>
#include <queue>
#include <string>
#include <string_view>
#include <tuple>
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

/// A set of 64-bit keys: open addressing, linear probing; clear() costs what
/// was inserted since the last clear, not the capacity.
class FlatSet64 {
 public:
  /// Inserts key.
  void insert(std::uint64_t key) {
    if (key == kEmpty) {
      has_empty_key_ = true;
      return;
    }
    if ((used_.size() + 1) * 2 > slots_.size()) grow();
    std::size_t i = index(key);
    while (slots_[i] != kEmpty) {
      if (slots_[i] == key) return;
      i = (i + 1) & (slots_.size() - 1);
    }
    slots_[i] = key;
    used_.push_back(i);
  }
  /// True when key was inserted since the last clear().
  [[nodiscard]] bool contains(std::uint64_t key) const {
    if (key == kEmpty) return has_empty_key_;
    if (slots_.empty()) return false;
    std::size_t i = index(key);
    while (slots_[i] != kEmpty) {
      if (slots_[i] == key) return true;
      i = (i + 1) & (slots_.size() - 1);
    }
    return false;
  }
  /// Removes every key.
  void clear() {
    for (std::size_t i : used_) slots_[i] = kEmpty;
    used_.clear();
    has_empty_key_ = false;
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  [[nodiscard]] std::size_t index(std::uint64_t key) const {
    key ^= key >> 33; // murmur3's finaliser
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return static_cast<std::size_t>(key) & (slots_.size() - 1);
  }
  void grow() {
    std::vector<std::uint64_t> old;
    old.swap(slots_);
    slots_.assign(old.empty() ? 64 : old.size() * 2, kEmpty);
    used_.clear();
    for (std::uint64_t key : old) {
      if (key != kEmpty) insert(key);
    }
  }
  std::vector<std::uint64_t> slots_;
  std::vector<std::size_t> used_; ///< occupied slots
  bool has_empty_key_ = false;
};

/// Appends the decimal form of x (as std::to_string, without a temporary).
template <class Int>
void append_int(std::string& s, Int x) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  s.append(buf, r.ptr);
}

inline void append_shape(std::string& s, const std::vector<std::int64_t>& shape) {
  s += '(';
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    append_int(s, shape[i]);
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
    std::string s;
    EquivalenceScratch scratch;
    write_equivalence_type(g, v, s, scratch);
    return s;
  }

  /// Reusable buffers of write_equivalence_type.
  struct EquivalenceScratch {
    std::vector<const std::string*> addrs;
    std::vector<std::tuple<int, int, Vertex>> parents;
  };

  /// Writes the equivalence type of vertex v into s (cleared first).
  static void write_equivalence_type(const ModelGraph& g, Vertex v, std::string& s,
                                     EquivalenceScratch& scratch) {
    const OpNode& n = g[v];
    s.clear();
    switch (n.kind) {
      case NodeKind::input:
      case NodeKind::output:
        s += n.kind == NodeKind::input ? "input" : "output";
        detail::append_shape(s, n.shape);
        s += n.dtype;
        return;
      case NodeKind::buffer:
        s += "buffer:";
        s += n.io_address;
        return;
      case NodeKind::op:
        break;
    }
    s += n.layer_type;
    if (!n.params.empty()) {
      auto& addrs = scratch.addrs;
      addrs.clear();
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
      auto& parents = scratch.parents;
      parents.clear();
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
      detail::append_int(s, n.output_index);
    }
    s += '@';
    for (std::size_t i = 0; i < n.modules.size(); ++i) {
      if (i) s += '>';
      s += n.modules[i].address;
    }
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
      std::string type;
      EquivalenceScratch scratch;
      for (Vertex v = 0; v < n; ++v) {
        write_equivalence_type(g, v, type, scratch);
        g[v].equivalence_type = type;
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
      std::string key;
      for (Vertex v = 0; v < n; ++v) {
        if (!uses_params[v]) continue;
        key = g[v].op_name;
        key += '#';
        detail::append_int(key, g[v].output_index);
        auto& addrs = scratch.addrs;
        addrs.clear();
        for (const auto& p : g[v].params) addrs.push_back(&p.address);
        std::sort(addrs.begin(), addrs.end(), [](auto* a, auto* b) { return *a < *b; });
        for (const auto* a : addrs) {
          key += '|';
          key += *a;
        }
        auto it = key_of.find(key);
        if (it == key_of.end()) it = key_of.emplace(key, key_of.size()).first;
        param_key[v] = it->second;
      }
      first_with_param_key_.resize(key_of.size());
      param_key_stamp_.assign(key_of.size(), 0);
      // TorchLens's raw labels, `{type}_{type_num}_{creation}_raw`, ranked
      // lexicographically: the order it sorts subgraphs and breaks ties in. Only
      // vertices of one class are ever compared, and they share the type: the
      // rank within the class, from `{type_num}_{creation}`, written zero-padded
      // to one width so that comparing the padded bytes is comparing the strings.
      std::vector<std::string> raw(n);
      std::unordered_map<std::string_view, int> per_type;
      int outputs = 0;
      std::size_t width = 1;
      for (Vertex v = 0; v < n; ++v) {
        const OpNode& node = g[v];
        std::string& k = raw[v];
        if (node.kind == NodeKind::output) {
          detail::append_int(k, ++outputs);
        } else if (node.kind == NodeKind::op) {
          detail::append_int(k, ++per_type[node.layer_type]);
          k += '_';
          detail::append_int(k, node.id + 1);
        } else {
          detail::append_int(k, ++per_type[node.layer_type]);
        }
        width = std::max(width, k.size());
      }
      rank.assign(n, 0);
      if (width <= 16) {
        // the padded bytes as two big-endian words: comparing the pairs is
        // comparing the strings (keys are unique, so the order is too)
        std::vector<std::pair<std::uint64_t, std::uint64_t>> packed(n);
        for (Vertex v = 0; v < n; ++v) {
          unsigned char bytes[16] = {};
          std::memcpy(bytes, raw[v].data(), raw[v].size());
          std::uint64_t hi = 0, lo = 0;
          for (int i = 0; i < 8; ++i) hi = (hi << 8) | bytes[i];
          for (int i = 8; i < 16; ++i) lo = (lo << 8) | bytes[i];
          packed[v] = {hi, lo};
        }
        raw = {};
        std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, Vertex>> order;
        for (auto& m : members) {
          if (m.size() == 1) continue;
          order.clear();
          for (Vertex v : m) order.emplace_back(packed[v], v);
          std::sort(order.begin(), order.end());
          for (std::size_t i = 0; i < order.size(); ++i) rank[order[i].second] = i;
        }
      } else {
        std::vector<char> padded(n * width, '\0'); // no key holds a NUL: padding sorts first
        for (Vertex v = 0; v < n; ++v)
          std::memcpy(&padded[v * width], raw[v].data(), raw[v].size());
        raw = {};
        auto key_less = [&](Vertex x, Vertex y) {
          return std::memcmp(&padded[x * width], &padded[y * width], width) < 0;
        };
        std::vector<Vertex> order;
        for (auto& m : members) {
          if (m.size() == 1) continue;
          order = m;
          std::sort(order.begin(), order.end(), key_less);
          for (std::size_t i = 0; i < order.size(); ++i) rank[order[i]] = i;
        }
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
    /// The frontiers of one lock step, flat (reused across steps).
    struct Frontiers {
      std::vector<std::size_t> sg;        ///< subgraph of frontier i
      std::vector<Vertex> list[2];        ///< children, parents: every frontier's entries
      std::vector<std::size_t> owner[2];  ///< frontier of each entry
      std::vector<std::size_t> start[2];  ///< frontier i's entries begin at start[i]
      std::vector<char> taken[2];         ///< entry paired (or the candidate) already
      std::vector<std::size_t> bucket[2]; ///< entries by class, then position
      /// class c's entries: bucket[class_begin[c] .. class_end[c]) when class_stamp[c] == epoch
      std::vector<std::size_t> class_begin[2], class_end[2];
      std::vector<std::uint32_t> class_stamp[2];
      std::uint32_t epoch = 0;
      std::vector<std::size_t> classes; ///< scratch: the classes one side holds
      std::vector<std::pair<Vertex, std::size_t>> matches, kept;
      /// True when frontier i (the last one being filled) already lists w on either side.
      [[nodiscard]] bool added(std::size_t i, Vertex w) const {
        for (int side = 0; side < 2; ++side) {
          const auto b = list[side].begin() + static_cast<std::ptrdiff_t>(start[side][i]);
          if (std::find(b, list[side].end(), w) != list[side].end()) return true;
        }
        return false;
      }
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
      if (!group_subgraphs.contains(pair_key(iso_of[neighbour], a))) return;
      in_adjacency[a] = in_adjacency[b] = 1;
      adjacency.unite(a, b);
    }

    void advance(const std::vector<Vertex>& iso, bool first,
                 std::deque<std::vector<Vertex>>& queue) {
      // each subgraph's frontier: its children, then (after the first step) its
      // parents, not yet in a subgraph, each once; one reached by another
      // subgraph records adjacency instead. Frontier i's list on side s is
      // fr.list[s][fr.start[s][i] .. fr.start[s][i + 1]).
      const std::size_t k = iso.size();
      auto& fr = frontier_;
      for (int side = 0; side < 2; ++side) {
        fr.list[side].clear();
        fr.owner[side].clear();
        fr.start[side].assign(1, 0);
      }
      fr.sg.resize(k);
      for (std::size_t i = 0; i < k; ++i) {
        const Vertex v = iso[i];
        const std::size_t sg = sg_of[v];
        fr.sg[i] = sg;
        for (int side = 0; side < (first ? 1 : 2); ++side) {
          const auto span = side == 0 ? adj.children_of(v) : adj.parents_of(v);
          for (std::uint32_t w : span) {
            if (in_subgraph(w, sg)) continue;
            if (claimed(w)) {
              record_adjacency(v, w);
            } else if (!fr.added(i, w)) {
              fr.list[side].push_back(w);
              fr.owner[side].push_back(i);
            }
          }
        }
        for (int side = 0; side < 2; ++side) fr.start[side].push_back(fr.list[side].size());
      }
      // for each side and class, the frontier entries holding one, in frontier
      // order: TorchLens scans every other subgraph's list for the first vertex
      // of the candidate's class; the buckets (entries sorted by class, then
      // position) find them without the scan
      if (fr.class_stamp[0].size() != members.size()) {
        for (int side = 0; side < 2; ++side) {
          fr.class_stamp[side].assign(members.size(), 0);
          fr.class_begin[side].resize(members.size());
          fr.class_end[side].resize(members.size());
        }
      }
      ++fr.epoch;
      for (int side = 0; side < 2; ++side) {
        // counting sort by class; entries of one class stay in position order
        const auto& list = fr.list[side];
        auto& stamp_of = fr.class_stamp[side];
        auto& begin = fr.class_begin[side];
        auto& end = fr.class_end[side];
        fr.classes.clear();
        for (Vertex w : list) {
          const std::size_t c = cls[w];
          if (stamp_of[c] != fr.epoch) {
            stamp_of[c] = fr.epoch;
            end[c] = 0;
            fr.classes.push_back(c);
          }
          ++end[c];
        }
        std::size_t at = 0;
        for (std::size_t c : fr.classes) {
          begin[c] = at;
          at += end[c];
          end[c] = begin[c];
        }
        auto& bucket = fr.bucket[side];
        bucket.resize(list.size());
        for (std::size_t p = 0; p < list.size(); ++p) bucket[end[cls[list[p]]]++] = p;
        fr.taken[side].assign(list.size(), 0);
      }
      std::vector<std::pair<Vertex, std::size_t>>& matches = fr.matches;
      std::vector<std::pair<Vertex, std::size_t>>& kept = fr.kept;
      std::size_t next[2] = {0, 0}; // first entry of each side that may be untaken
      std::size_t scan = 0;
      for (;;) {
        // the next candidate: the first subgraph with a child left, else a parent
        std::size_t pos = 0;
        int side = -1;
        for (; scan < k && side < 0; ++scan) {
          for (int s = 0; s < 2 && side < 0; ++s) {
            auto& at = next[s];
            const std::size_t end = fr.start[s][scan + 1];
            at = std::max(at, fr.start[s][scan]);
            while (at < end && fr.taken[s][at]) ++at;
            if (at < end) {
              pos = at;
              side = s;
            }
          }
          if (side >= 0) break;
        }
        if (side < 0) break;
        const auto& list = fr.list[side];
        const auto& owner = fr.owner[side];
        auto& taken = fr.taken[side];
        const std::size_t fi = owner[pos];
        const Vertex candidate = list[pos];
        taken[pos] = 1;
        matches.assign(1, {candidate, fr.sg[fi]});
        // the first untaken vertex of the same class in each other subgraph
        const auto& bucket = fr.bucket[side];
        const std::size_t c = cls[candidate];
        std::size_t last = static_cast<std::size_t>(-1);
        for (std::size_t b = fr.class_begin[side][c]; b < fr.class_end[side][c]; ++b) {
          const std::size_t p = bucket[b];
          const std::size_t i = owner[p];
          if (i == fi || i == last || taken[p]) continue;
          last = i; // a subgraph's entries are consecutive: take its first
          taken[p] = 1;
          matches.emplace_back(list[p], fr.sg[i]);
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
        // members sharing a (direction, neighbouring iso-group's leader) are one
        // component: the first member seen with each key, in stamped dense tables
        detail::DisjointSets uf(group.size());
        if (refine_stamp_[0].size() != n) {
          for (int dir = 0; dir < 2; ++dir) {
            refine_stamp_[dir].assign(n, 0);
            refine_first_[dir].resize(n);
          }
        }
        ++refine_epoch_;
        auto note = [&](int dir, Vertex leader_vertex, std::size_t m) {
          if (refine_stamp_[dir][leader_vertex] != refine_epoch_) {
            refine_stamp_[dir][leader_vertex] = refine_epoch_;
            refine_first_[dir][leader_vertex] = m;
          } else {
            uf.unite(refine_first_[dir][leader_vertex], m);
          }
        };
        for (std::size_t m = 0; m < group.size(); ++m) {
          const Vertex v = group[m];
          for (std::uint32_t c : adj.children_of(v)) {
            if (claimed(c)) note(0, leader(c), m);
          }
          for (std::uint32_t p : adj.parents_of(v)) {
            if (claimed(p)) note(1, leader(p), m);
          }
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
      // union-find over positions in `all` (a layer is named by its smallest vertex)
      auto& slot = slot_; // dense, by vertex: only entries of `all` are read
      slot.resize(n);
      for (std::size_t i = 0; i < all.size(); ++i) slot[all[i]] = i;
      detail::DisjointSets uf(all.size());
      // parameter types of each subgraph, as they are now
      std::vector<std::vector<std::size_t>> param_types(subgraphs.size());
      for (std::size_t s = 0; s < subgraphs.size(); ++s) {
        for (Vertex p : subgraphs[s].param_nodes) param_types[s].push_back(cls[p]);
        std::sort(param_types[s].begin(), param_types[s].end());
        param_types[s].erase(std::unique(param_types[s].begin(), param_types[s].end()),
                             param_types[s].end());
      }
      // the first member seen with each key, per group (stamped dense tables:
      // only the partition the unions make matters, not which member is first)
      first_in_component_.resize(subgraphs.size());
      component_stamp_.assign(subgraphs.size(), 0);
      first_with_param_type_.resize(members.size());
      param_type_stamp_.resize(members.size(), 0);
      std::uint32_t group_stamp = 0;
      for (const auto& group : iso_groups) {
        if (group.size() < 2) continue;
        ++group_stamp;
        ++param_type_epoch_;
        for (Vertex v : group) {
          const std::size_t sg = sg_of[v];
          // adjacent subgraphs: one adjacency component
          if (in_adjacency[sg]) {
            const std::size_t c = adjacency.find(sg);
            if (component_stamp_[c] != group_stamp) {
              component_stamp_[c] = group_stamp;
              first_in_component_[c] = v;
            } else {
              uf.unite(slot[first_in_component_[c]], slot[v]);
            }
          }
          // a shared parameter type
          for (std::size_t t : param_types[sg]) {
            if (param_type_stamp_[t] != param_type_epoch_) {
              param_type_stamp_[t] = param_type_epoch_;
              first_with_param_type_[t] = v;
            } else {
              uf.unite(slot[first_with_param_type_[t]], slot[v]);
            }
          }
        }
      }
      // rule 1: same function, same parameters
      ++param_key_epoch_;
      for (Vertex v : all) {
        const std::size_t key = param_key[v];
        if (key == kNone) continue;
        if (param_key_stamp_[key] != param_key_epoch_) {
          param_key_stamp_[key] = param_key_epoch_;
          first_with_param_key_[key] = v;
        } else {
          uf.unite(slot[first_with_param_key_[key]], slot[v]);
        }
      }
      // the layers, one per root (layers are disjoint, so the order they are
      // applied in does not matter): size, smallest vertex, largest group_size
      auto& layer = layer_of_root_;
      layer.assign(all.size(), LayerSummary{});
      for (Vertex v : all) {
        LayerSummary& l = layer[uf.find(slot[v])];
        ++l.size;
        l.first = std::min(l.first, v);
        l.largest = std::max(l.largest, group_size[v]);
      }
      for (Vertex v : all) {
        const LayerSummary& l = layer[uf.find(slot[v])];
        if (l.size < 2 || l.size < l.largest) continue; // never shrink a layer
        raw_layer[v] = l.first;
        group_size[v] = l.size;
        if (v != l.first) cls[v] = cls[l.first];
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
    detail::FlatSet64 group_subgraphs; // (iso-group, subgraph) pairs
    Frontiers frontier_;
    std::vector<std::uint32_t> refine_stamp_[2];
    std::vector<std::size_t> refine_first_[2];
    std::uint32_t refine_epoch_ = 0;
    std::vector<std::size_t> slot_; ///< finalize: index of a vertex in `all`
    struct LayerSummary {
      std::size_t size = 0;
      Vertex first = static_cast<Vertex>(-1);
      std::size_t largest = 0;
    };
    std::vector<LayerSummary> layer_of_root_;
    std::vector<Vertex> first_in_component_, first_with_param_type_, first_with_param_key_;
    std::vector<std::uint32_t> component_stamp_, param_type_stamp_, param_key_stamp_;
    std::uint32_t param_type_epoch_ = 0, param_key_epoch_ = 0;
  };
};

} // namespace torchlens::passes
