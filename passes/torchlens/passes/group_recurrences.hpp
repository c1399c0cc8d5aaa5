#pragma once
/// \file
/// Group op passes into layers: same-parameter ops, identical ops adjacent to
/// them, and adjacently repeated parameter-free blocks (TorchLens postprocess
/// step 8, `_assign_corresponding_tensors_to_same_layer`; paper rules 1–3, Fig. 4).

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Union-find with path halving and union by index (the smaller index is the root).
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

/// Assigns OpNode::layer, pass_num and num_passes (passes numbered by creation
/// order) and GraphInfo::is_recurrent / max_recurrent_loops.
///
/// Equivalence types (behaviour reference §4.5): ops reading parameters are
/// `{layer_type}_params_{sorted param addresses}`; parameter-free ops are
/// `{layer_type}_{scalar args}_{parent shapes}_out{output_index}_mod{innermost module}`.
/// Inputs, buffers and outputs are never grouped.
///
/// Algorithm: for each equivalence type with several members (in order of first
/// member), unless they already form one layer, grow one subgraph per member in
/// lock-step BFS (children only at the first step, children and parents after),
/// pairing unvisited neighbours of equal type across subgraphs (r-th with r-th)
/// into iso-groups; a neighbour already owned by another subgraph makes the two
/// subgraphs adjacent. Subgraphs are joinable when adjacent or when they share a
/// parameter type; iso-group members in joinable subgraphs become passes of one
/// layer (union-find; a grouping is never undone). So same-parameter ops are
/// always one layer (rule 1), identical ops next to them join it (rule 2), and
/// parameter-free blocks join only when back to back (rule 3: XYZXYZXYZ groups,
/// XYZAXYZBXYZ does not). About O((V + E) log V) when loops merge early.
struct GroupRecurrencesPass : pass_info<GroupRecurrencesPass> {
  static constexpr std::string_view name = "group-recurrences";
  static constexpr std::string_view description =
      "group op passes into layers (same parameters, adjacent identical ops, repeated blocks)";
  using consumes = facts::list<facts::OrphanFree, facts::ModulesInferred>;
  using produces = facts::list<facts::RecurrenceGrouped>;
  static constexpr bool is_required = true;
  static constexpr bool is_idempotent = true;

  /// Options of group-recurrences.
  struct Options {
    /// false: only rule 1 (same-parameter ops are one layer); no block detection.
    TORCHLENS_ARG(bool, detect_loops) = true;

   public:
    /// Visits every option (name, value) for print_pipeline.
    template <class V>
    void visit(V&& v) const {
      v("detect_loops", detect_loops_);
    }
  };
  Options options{};

  GroupRecurrencesPass() = default;
  explicit GroupRecurrencesPass(Options o) : options(o) {}

  /// The equivalence type of vertex v (see the pass description).
  static std::string equivalence_type(const ModelGraph& g, Vertex v) {
    const OpNode& n = g[v];
    std::string s;
    switch (n.kind) {
      case NodeKind::input:
        s = "input_" + n.io_address;
        return s;
      case NodeKind::buffer:
        s = "buffer_" + n.io_address + ":" + std::to_string(n.buffer_pass);
        return s;
      case NodeKind::output:
        s = "output_" + n.io_address;
        return s;
      case NodeKind::op:
        break;
    }
    s = n.layer_type;
    if (!n.params.empty()) {
      std::vector<const std::string*> addrs;
      addrs.reserve(n.params.size());
      for (const auto& p : n.params) addrs.push_back(&p.address);
      std::sort(addrs.begin(), addrs.end(), [](auto* a, auto* b) { return *a < *b; });
      s += "_params";
      for (const auto* a : addrs) {
        s += '_';
        s += *a;
      }
      return s;
    }
    s += '_';
    for (const auto& a : n.scalar_args) {
      s += a.name;
      s += '=';
      s += a.value;
      s += ';';
    }
    s += '_';
    // parent shapes, in argument order
    if (boost::in_degree(v, g) == 1) {
      detail::append_shape(s, g[boost::source(*boost::in_edges(v, g).first, g)].shape);
    } else {
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
    }
    s += "_out";
    s += std::to_string(n.output_index);
    s += "_mod";
    if (!n.modules.empty()) s += n.modules.back().address;
    return s;
  }

  /// Statistics "layers", "recurrent layers", "expansions".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    const std::size_t n = boost::num_vertices(g);
    const auto& adj = ctx.get<AdjacencyAnalysis>(g);
    // ---- equivalence classes (keys are views of the strings stored on the nodes) ----
    std::unordered_map<std::string_view, std::size_t> class_of_type;
    class_of_type.reserve(n);
    std::vector<std::size_t> cls(n);
    std::vector<char> groupable(n, 0);
    std::vector<char> param_class;
    std::vector<std::size_t> class_size;
    for (Vertex v = 0; v < n; ++v) {
      g[v].equivalence_type = equivalence_type(g, v);
      auto [it, inserted] = class_of_type.try_emplace(g[v].equivalence_type, class_size.size());
      if (inserted) {
        class_size.push_back(0);
        param_class.push_back(g[v].kind == NodeKind::op && !g[v].params.empty());
      }
      cls[v] = it->second;
      ++class_size[it->second];
      groupable[v] = g[v].kind == NodeKind::op;
    }
    // members of class c, in creation order: by_class[offset[c] .. offset[c + 1])
    const std::size_t num_classes = class_size.size();
    std::vector<std::size_t> offset(num_classes + 1, 0);
    for (std::size_t c = 0; c < num_classes; ++c) offset[c + 1] = offset[c] + class_size[c];
    std::vector<Vertex> by_class(n);
    {
      std::vector<std::size_t> fill(offset.begin(), offset.end() - 1);
      for (Vertex v = 0; v < n; ++v) by_class[fill[cls[v]]++] = v;
    }

    detail::DisjointSets layers(n);
    std::int64_t expansions = 0;
    Expansion ex(n);
    std::vector<Vertex> m;
    for (std::size_t c = 0; c < num_classes; ++c) {
      if (class_size[c] < 2 || !groupable[by_class[offset[c]]]) continue;
      m.assign(by_class.begin() + static_cast<std::ptrdiff_t>(offset[c]),
               by_class.begin() + static_cast<std::ptrdiff_t>(offset[c + 1]));
      // already one layer: an earlier expansion grouped them and grew around them
      const std::size_t root = layers.find(m.front());
      bool all_one = true;
      for (Vertex v : m) {
        if (layers.find(v) != root) {
          all_one = false;
          break;
        }
      }
      if (all_one) continue;
      if (param_class[c]) {
        for (Vertex v : m) layers.unite(m.front(), v); // rule 1
      }
      if (!options.detect_loops()) continue;
      ++expansions;
      ex.run(adj, m, c, cls, groupable, param_class, layers);
    }

    // ---- layers and passes, numbered by creation order ----
    std::vector<std::size_t> layer_index(n, static_cast<std::size_t>(-1));
    std::vector<int> count(n, 0);
    std::size_t num_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const std::size_t r = layers.find(v);
      if (layer_index[r] == static_cast<std::size_t>(-1)) layer_index[r] = num_layers++;
      g[v].layer = layer_index[r];
      g[v].pass_num = ++count[r];
    }
    int max_passes = 1;
    std::int64_t recurrent_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const int passes = count[layers.find(v)];
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
  /// Scratch state of the lock-step expansions, reused across classes (epoch stamps).
  struct Expansion {
    explicit Expansion(std::size_t n) : stamp_(n, 0), owner_(n, 0) {}

    struct Candidate {
      std::size_t cls;
      std::size_t sg;
      Vertex v;
      bool operator<(const Candidate& o) const {
        return std::tie(cls, sg, v) < std::tie(o.cls, o.sg, o.v);
      }
      bool operator==(const Candidate& o) const = default;
    };
    using Group = std::vector<std::pair<std::size_t, Vertex>>; // (subgraph, vertex)

    void run(const AdjacencyAnalysis::Result& adj, const std::vector<Vertex>& seeds,
             std::size_t seed_class, const std::vector<std::size_t>& cls,
             const std::vector<char>& groupable, const std::vector<char>& param_class,
             detail::DisjointSets& layers) {
      ++epoch_;
      const std::size_t k = seeds.size();
      subgraphs_.reset(k);
      groups_.clear();
      Group seed_group;
      for (std::size_t j = 0; j < k; ++j) {
        claim(seeds[j], j);
        seed_group.emplace_back(j, seeds[j]);
      }
      groups_.push_back(std::move(seed_group));
      if (param_class[seed_class]) unite_all(groups_.back());
      for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
        candidates_.clear();
        for (const auto& [sg, v] : groups_[gi]) {
          for (std::uint32_t c : adj.children_of(v)) consider(c, sg, cls, groupable);
          if (gi == 0) continue; // parents only after the first step
          for (std::uint32_t p : adj.parents_of(v)) consider(p, sg, cls, groupable);
        }
        std::sort(candidates_.begin(), candidates_.end());
        candidates_.erase(std::unique(candidates_.begin(), candidates_.end()), candidates_.end());
        // runs of one class; inside, runs of one subgraph; pair r-th with r-th
        for (std::size_t a = 0; a < candidates_.size();) {
          std::size_t b = a;
          while (b < candidates_.size() && candidates_[b].cls == candidates_[a].cls) ++b;
          form_groups(a, b, param_class);
          a = b;
        }
      }
      // merge iso-group members whose subgraphs are joinable
      rep_.assign(k, static_cast<Vertex>(-1));
      for (const auto& group : groups_) {
        touched_.clear();
        for (const auto& [sg, v] : group) {
          const std::size_t r = subgraphs_.find(sg);
          if (rep_[r] == static_cast<Vertex>(-1)) {
            rep_[r] = v;
            touched_.push_back(r);
          } else {
            layers.unite(rep_[r], v);
          }
        }
        for (std::size_t r : touched_) rep_[r] = static_cast<Vertex>(-1);
      }
    }

   private:
    void claim(Vertex v, std::size_t sg) {
      stamp_[v] = epoch_;
      owner_[v] = sg;
    }
    void consider(Vertex t, std::size_t sg, const std::vector<std::size_t>& cls,
                  const std::vector<char>& groupable) {
      if (!groupable[t]) return;
      if (stamp_[t] == epoch_) {
        if (owner_[t] != sg) subgraphs_.unite(owner_[t], sg); // the subgraphs touch
        return;
      }
      candidates_.push_back({cls[t], sg, t});
    }
    void unite_all(const Group& group) {
      for (const auto& [sg, v] : group) subgraphs_.unite(group.front().first, sg);
    }
    void form_groups(std::size_t a, std::size_t b, const std::vector<char>& param_class) {
      // starts of each subgraph's run inside [a, b)
      runs_.clear();
      for (std::size_t i = a; i < b; ++i) {
        if (i == a || candidates_[i].sg != candidates_[i - 1].sg) runs_.push_back(i);
      }
      if (runs_.size() < 2) return; // only one subgraph has a neighbour of this type
      runs_.push_back(b);
      for (std::size_t r = 0;; ++r) {
        Group group;
        bool any = false;
        for (std::size_t s = 0; s + 1 < runs_.size(); ++s) {
          const std::size_t i = runs_[s] + r;
          if (i >= runs_[s + 1]) continue;
          any = true;
          const Candidate& c = candidates_[i];
          if (stamp_[c.v] == epoch_) { // claimed by another subgraph in this step
            if (owner_[c.v] != c.sg) subgraphs_.unite(owner_[c.v], c.sg);
            continue;
          }
          group.emplace_back(c.sg, c.v);
        }
        if (!any) break;
        if (group.size() < 2) continue;
        for (const auto& [sg, v] : group) claim(v, sg);
        if (param_class[candidates_[a].cls]) unite_all(group); // shared parameter type
        groups_.push_back(std::move(group));
      }
    }

    std::vector<std::uint32_t> stamp_;
    std::vector<std::size_t> owner_;
    std::uint32_t epoch_ = 0;
    detail::DisjointSets subgraphs_;
    std::vector<Group> groups_;
    std::vector<Candidate> candidates_;
    std::vector<std::size_t> runs_;
    std::vector<Vertex> rep_;
    std::vector<std::size_t> touched_;
  };
};

} // namespace torchlens::passes
