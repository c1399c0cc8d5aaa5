#pragma once
/// \file
/// Group op passes into layers (TorchLens postprocess step 8, loop detection;
/// paper rules 1–3, Fig. 4): ops using the same parameters, identical ops
/// around them, and parameter-free blocks repeated back to back.

#include <torchlens/config.hpp>
#include <torchlens/error.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/detail/flat_map.hpp>
#include <torchlens/passes/detail/scratch.hpp>
#include <torchlens/pipeline/analysis.hpp>
#include <torchlens/pipeline/pass.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace torchlens::passes {

namespace detail {

/// Vertex, list and subgraph numbers inside group-recurrences: 32 bits (the
/// graph holds fewer than 2^32 vertices), half the memory of std::size_t.
using Index = std::uint32_t;
inline constexpr Index kNoIndex = static_cast<Index>(-1);

/// Union-find with path halving; the root of a set is its smallest key.
class DisjointSets {
 public:
  explicit DisjointSets(std::size_t n = 0) : parent_(n) {
    std::iota(parent_.begin(), parent_.end(), Index{0});
  }
  /// Resets to n singletons.
  void reset(std::size_t n) {
    parent_.resize(n);
    std::iota(parent_.begin(), parent_.end(), Index{0});
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
    parent_[b] = static_cast<Index>(a);
  }

 private:
  std::vector<Index> parent_;
};

/// Dense ids for sequences of T, numbered in the order first seen: a FlatMap64
/// from the sequence's hash (`Hash`; the sequence compared on a hit, a different
/// sequence with the same hash probing on with a derived key), the sequences
/// stored end to end. clear() keeps every buffer.
template <class T, class Hash>
class SequenceIds {
 public:
  /// Forgets every sequence.
  void clear() {
    index_.clear();
    start_.assign(1, 0);
    items_.clear();
  }
  /// How many distinct sequences were seen.
  [[nodiscard]] std::size_t size() const { return start_.size() - 1; }
  /// A new id for a sequence the caller knows no other id() call will ask
  /// for: numbered like the others, nothing stored or hashed.
  std::size_t add_unseen() {
    start_.push_back(items_.size()); // an empty range no look-up reaches
    return size() - 1;
  }
  /// The id of `items`, and true when it was seen now for the first time.
  std::pair<std::size_t, bool> id(std::span<const T> items) { return id(items, Hash{}(items)); }
  /// id(items), given `key == Hash{}(items)` (a caller that hashed the items
  /// as it wrote them).
  std::pair<std::size_t, bool> id(std::span<const T> items, std::uint64_t key) {
    const std::size_t next = size();
    for (;;) {
      const auto [found, inserted] = index_.try_emplace(key, next);
      if (inserted) {
        items_.insert(items_.end(), items.begin(), items.end());
        start_.push_back(items_.size());
        return {next, true};
      }
      const std::size_t from = start_[found], length = start_[found + 1] - from;
      if (length == items.size() &&
          std::equal(items.begin(), items.end(),
                     items_.begin() + static_cast<std::ptrdiff_t>(from))) {
        return {found, false};
      }
      key = key * 0x9e3779b97f4a7c15ULL + 1;
    }
  }

 private:
  FlatMap64 index_;
  std::vector<std::size_t> start_{0}; ///< sequence i is items_[start_[i] .. start_[i + 1])
  std::vector<T> items_;
};

/// std::hash of the characters.
struct TextHash {
  std::uint64_t operator()(std::span<const char> s) const {
    return std::hash<std::string_view>{}(std::string_view(s.data(), s.size()));
  }
};
/// Independent products of the words, one odd factor per position (no chain
/// through them, no rotation: a multiply and an add per word); FlatMap64 mixes
/// the sum. GroupRecurrencesPass::write_class_key sums it as it writes the
/// words (Sum), without a second loop over them.
struct WordHash {
  /// The hash of words added one at a time.
  class Sum {
   public:
    void add(std::uint64_t word) {
      sum_ += word * factor_;
      factor_ += 2; // word i's factor: 0x9e3779b97f4a7c15 + 2i, odd
    }
    /// The hash, `count` being how many words were added.
    [[nodiscard]] std::uint64_t value(std::size_t count) const { return count + sum_; }

   private:
    std::uint64_t sum_ = 0, factor_ = 0x9e3779b97f4a7c15ULL;
  };
  std::uint64_t operator()(std::span<const std::uint64_t> words) const {
    Sum h;
    for (std::uint64_t w : words) h.add(w);
    return h.value(words.size());
  }
};

/// Dense ids for texts (equivalence types, rule-1 keys).
class TextIds : public SequenceIds<char, TextHash> {
 public:
  std::pair<std::size_t, bool> id(std::string_view text) {
    return SequenceIds::id(std::span<const char>(text.data(), text.size()));
  }
};
/// Dense ids for class keys (GroupRecurrencesPass::write_class_key).
using WordIds = SequenceIds<std::uint64_t, WordHash>;

/// A set of indices below n, taken smallest first: a bitmap, one summary bit per
/// bitmap word, and a cursor below which no summary word is set. Push and pop
/// cost O(1) plus the empty summary words the cursor passes.
class IndexQueue {
 public:
  /// Empties the queue for indices below n.
  void reset(std::size_t n) {
    words_.assign((n + 63) / 64, 0);
    summary_.assign((words_.size() + 63) / 64, 0);
    cursor_ = summary_.size();
  }
  /// Adds i (a no-op when present).
  void push(std::size_t i) {
    const std::size_t w = i / 64;
    words_[w] |= std::uint64_t{1} << (i % 64);
    summary_[w / 64] |= std::uint64_t{1} << (w % 64);
    cursor_ = std::min(cursor_, w / 64);
  }
  /// Removes the smallest index into `out`; false when empty.
  bool pop(std::size_t& out) {
    while (cursor_ < summary_.size() && summary_[cursor_] == 0) ++cursor_;
    if (cursor_ == summary_.size()) return false;
    const std::size_t w =
        cursor_ * 64 + static_cast<std::size_t>(std::countr_zero(summary_[cursor_]));
    const std::uint64_t bits = words_[w];
    out = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
    words_[w] = bits & (bits - 1);
    if (words_[w] == 0) summary_[cursor_] &= ~(std::uint64_t{1} << (w % 64));
    return true;
  }

 private:
  std::vector<std::uint64_t> words_, summary_;
  std::size_t cursor_ = 0;
};

/// Appends the decimal form of x (as std::to_string, without a temporary).
template <class Int>
void append_int(std::string& s, Int x) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  s.append(buf, r.ptr);
}

/// Items 0 … count-1 grouped by key (each < keys), every group in item order
/// (a counting sort): group k is out[start[k] .. start[k + 1]). `fill` is scratch.
template <class KeyOf, class ValueOf, class Starts, class Items>
void group_by_key(std::size_t count, std::size_t keys, KeyOf key_of, ValueOf value_of,
                  Starts& start, Items& out, Starts& fill) {
  using T = typename Items::value_type;
  start.assign(keys + 1, 0);
  for (std::size_t i = 0; i < count; ++i) ++start[key_of(i) + 1];
  for (std::size_t k = 0; k < keys; ++k) start[k + 1] += start[k];
  fill.assign(start.begin(), start.end() - 1);
  out.resize(count);
  for (std::size_t i = 0; i < count; ++i) out[fill[key_of(i)]++] = static_cast<T>(value_of(i));
}

/// Sorts items by key(item), keys distinct unsigned integers (so the order is
/// unique). From `radix_from` items on, an LSD radix sort, 11 bits a pass (two
/// passes for keys below 2^22), in time linear in the items; fewer, by
/// comparison. `buffer` and `counts` are scratch (`buffer` may end up holding
/// items' old storage: a swap).
template <class Items, class Key, class Counts>
void sort_by_distinct_key(Items& items, Key key, Items& buffer, Counts& counts,
                          std::size_t radix_from = 512) {
  const auto less = [&](const auto& x, const auto& y) { return key(x) < key(y); };
  if (std::is_sorted(items.begin(), items.end(), less)) return;
  if (items.size() < radix_from) {
    std::sort(items.begin(), items.end(), less);
    return;
  }
  constexpr unsigned kBits = 11;
  constexpr std::uint64_t kMask = (std::uint64_t{1} << kBits) - 1;
  using Count = typename Counts::value_type;
  std::uint64_t max_key = 0;
  for (const auto& x : items) max_key = std::max<std::uint64_t>(max_key, key(x));
  buffer.resize(items.size());
  Items* from = &items;
  Items* to = &buffer;
  for (unsigned shift = 0; shift < 64 && (shift == 0 || (max_key >> shift) != 0); shift += kBits) {
    counts.assign(kMask + 1, 0);
    for (const auto& x : *from) ++counts[(static_cast<std::uint64_t>(key(x)) >> shift) & kMask];
    Count at = 0;
    for (Count& c : counts) at += std::exchange(c, at);
    for (const auto& x : *from) {
      (*to)[counts[(static_cast<std::uint64_t>(key(x)) >> shift) & kMask]++] = x;
    }
    std::swap(from, to);
  }
  if (from != &items) items.swap(buffer);
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
      (bool, detect_loops, true),
      // Parameter-free blocks repeated back to back are a loop only when the
      // smaller of two repeats holds at least this many ops, or one of the two
      // corresponding ops runs inside a module or is a buffer (TorchLens after
      // 1.0: `tanh(tanh(tanh(x)))` is a chain, one `nn.ReLU` called four
      // times a loop). 1 gives TorchLens 1.0's rule, where any repeat is a loop.
      (int, min_param_free_loop_body, 2));
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
/// per output index). Adjacency alone groups two members only when one is in a
/// module or a buffer, or both subgraphs hold min_param_free_loop_body vertices
/// (the guard of later TorchLens releases: `tanh(tanh(tanh(x)))` is a chain). A new grouping that
/// would shrink an existing layer is skipped. Ties are broken by TorchLens's raw labels
/// (`{type}_{n}_{order}_raw`) in lexicographic order, as TorchLens sorts them, and a layer is named
/// by its smallest raw label. TorchLens's bookkeeping is kept where it decides the result (node
/// sets that only grow, iso-groups keyed by leader, frontiers keyed by subgraph): the layers agree
/// with TorchLens's own grouping code (scripts/compare_grouping_with_torchlens.py).
///
/// An `identity` vertex (a module returning its argument unchanged: capture's
/// `torchlens::identity`, the module's output, read by later ops) is seen as
/// TorchLens 1.0 logs it: a dead end beside its argument, whose readers read the
/// argument. Otherwise a parameter-free module applied twice in a block (Swin's
/// and timm's `stochastic_depth`/`drop_path` in eval, each followed by the
/// residual add) would make the block a two-pass loop, where TorchLens finds none.
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

  /// The addresses of the parameters op n reads, sorted, in `addrs`.
  static void sorted_param_addresses(const OpNode& n, std::vector<const std::string*>& addrs) {
    addrs.clear();
    for (const auto& p : n.params) addrs.push_back(&p.address.str());
    std::sort(addrs.begin(), addrs.end(), [](auto* a, auto* b) { return *a < *b; });
  }

  /// The parents of v in the order the equivalence type lists their shapes.
  /// With the graph's adjacency lists, when they all have one shape (argument
  /// order cannot change the text), returns true: they are adj->parents_of(v).
  /// Otherwise fills `parents` with (argument position, list index, parent),
  /// sorted, and returns false.
  static bool parents_in_text_order(const ModelGraph& g, Vertex v,
                                    const AdjacencyAnalysis::Result* adj,
                                    std::vector<std::tuple<int, int, Vertex>>& parents) {
    if (adj != nullptr) {
      const auto ps = adj->parents_of(v);
      if (std::all_of(ps.begin(), ps.end(),
                      [&](std::uint32_t p) { return g[p].shape == g[ps.front()].shape; })) {
        return true;
      }
    }
    parents.clear();
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      parents.emplace_back(g[e].arg_pos, g[e].list_index, boost::source(e, g));
    }
    std::sort(parents.begin(), parents.end());
    return false;
  }

  /// Writes the equivalence type of vertex v into s (cleared first). With the
  /// graph's adjacency lists, an op whose parents all have one shape reads them
  /// from the lists rather than from its edges: argument order cannot change
  /// the text then (the same text, fewer memory reads).
  static void write_equivalence_type(const ModelGraph& g, Vertex v, std::string& s,
                                     EquivalenceScratch& scratch,
                                     const AdjacencyAnalysis::Result* adj = nullptr) {
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
      sorted_param_addresses(n, addrs);
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
      if (parents_in_text_order(g, v, adj, scratch.parents)) {
        const auto ps = adj->parents_of(v);
        if (!ps.empty()) {
          const std::size_t from = s.size();
          detail::append_shape(s, g[ps[0]].shape);
          const std::size_t len = s.size() - from;
          for (std::size_t i = 1; i < ps.size(); ++i) s.append(s, from, len);
        }
      } else {
        for (const auto& [pos, idx, p] : scratch.parents) {
          (void)pos;
          (void)idx;
          detail::append_shape(s, g[p].shape);
        }
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

  /// Writes into `words` (grown as needed) and returns a key that determines
  /// vertex v's equivalence type and rule-1 key (write_equivalence_type's
  /// inputs, as the identities of their interned texts and sequences, in the
  /// order the text uses them), so that a vertex whose key was seen before
  /// needs neither text. Two keys may still give one text (parameters read in
  /// another order, say): the text decides. Sets `hash` to the key's
  /// detail::WordHash, summed as the words are written (WordHash::Sum).
  static std::span<const std::uint64_t> write_class_key(
      const ModelGraph& g, Vertex v, std::vector<std::uint64_t>& words,
      std::vector<std::tuple<int, int, Vertex>>& parents, const AdjacencyAnalysis::Result& adj,
      std::uint64_t& hash) {
    using detail::address_key;
    const OpNode& n = g[v];
    // sized once for the longest key v can have (its parents counted from the
    // graph's edges and from `adj`, whichever is more), then written in place
    const std::size_t most =
        9 + n.params.size() + n.modules.size() +
        std::max<std::size_t>(boost::in_degree(v, g), adj.parents_of(v).size());
    if (words.size() < most) words.resize(most);
    // each word added to the key's detail::WordHash as it is written
    struct Writer {
      std::uint64_t* at;
      detail::WordHash::Sum hash;
      void put(std::uint64_t word) {
        *at++ = word;
        hash.add(word);
      }
    } out{words.data(), {}};
    out.put(static_cast<std::uint64_t>(n.kind));
    out.put(address_key(n.layer_type.data()));
    const auto key = [&] {
      const std::span<const std::uint64_t> written(words.data(), out.at);
      hash = out.hash.value(written.size());
      return written;
    };
    switch (n.kind) {
      case NodeKind::input:
      case NodeKind::output:
        out.put(address_key(n.shape.identity()));
        out.put(address_key(n.dtype.data()));
        return key();
      case NodeKind::buffer:
        out.put(address_key(n.io_address.data()));
        return key();
      case NodeKind::op:
        break;
    }
    out.put(address_key(n.op_name.data()));
    out.put(static_cast<std::uint64_t>(static_cast<std::uint32_t>(n.output_index)) |
            (static_cast<std::uint64_t>(n.num_outputs > 1) << 32));
    out.put(n.params.size());
    for (const auto& p : n.params) out.put(address_key(p.address.data()));
    if (n.params.empty()) {
      out.put(address_key(n.scalar_args.identity()));
      // one parent or none (most ops): in text order already, no call
      if (const auto ps = adj.parents_of(v);
          ps.size() <= 1 || parents_in_text_order(g, v, &adj, parents)) {
        out.put(ps.size());
        if (!ps.empty()) out.put(address_key(g[ps[0]].shape.identity()));
      } else {
        out.put(~std::uint64_t{0} - parents.size());
        for (const auto& [pos, idx, p] : parents) {
          (void)pos;
          (void)idx;
          out.put(address_key(g[p].shape.identity()));
        }
      }
    }
    out.put(n.modules.size());
    for (const auto& m : n.modules) out.put(address_key(m.address.data()));
    return key();
  }

  /// Statistics "layers", "recurrent layers", "expansions".
  PassResult run(ModelGraph& g, PassContext& ctx) const {
    if (options.min_param_free_loop_body() < 1) {
      throw UsageError("group-recurrences: min_param_free_loop_body must be at least 1, not " +
                       std::to_string(options.min_param_free_loop_body()));
    }
    const std::size_t n = boost::num_vertices(g);
    const auto& full = ctx.get<AdjacencyAnalysis>(g);
    // Graphs up to kReusedUpTo vertices (every capture of a small model) reuse
    // one workspace per thread: no allocation once it has grown. Larger ones
    // get their own, its tables on a scratch arena of huge pages for the run
    // (detail/scratch.hpp), all freed when the pass ends.
    thread_local State reused;
    std::optional<detail::ScratchArena> arena;
    std::optional<detail::ScratchScope> on_arena;
    if (n > State::kReusedUpTo) {
      arena.emplace(State::kScratchBytesPerVertex * n);
      on_arena.emplace(&*arena);
    }
    std::optional<State> own;
    State& st = n <= State::kReusedUpTo && !reused.busy ? reused : own.emplace();
    const State::Use use(st);
    st.min_body = static_cast<std::size_t>(options.min_param_free_loop_body());
    st.reset(g, full);
    std::optional<AdjacencyAnalysis::Result> contracted;
    if (st.identity_read) {
      // some identity vertex has readers (found by reset's sweep, which reads
      // every vertex anyway): again, with identities as dead ends
      st.reset(g, identities_as_dead_ends(g, full, contracted));
    }
    std::int64_t expansions = 0;
    if (options.detect_loops()) {
      expansions = st.detect_loops();
    } else {
      st.same_parameters_only();
    }
    // ---- layers and passes, numbered by creation order (TorchLens phase 5) ----
    // (counted first, so that the graph is written in one sweep; in tables the
    // expansions are done with)
    auto [layer_index, count, seen] = st.numbering_tables();
    layer_index.assign(n, State::kNone);
    count.assign(n, 0);
    std::size_t num_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const std::size_t r = st.raw_layer[v];
      if (layer_index[r] == State::kNone) layer_index[r] = num_layers++;
      ++count[r];
    }
    seen.assign(n, 0);
    std::uint32_t max_passes = 1;
    std::int64_t recurrent_layers = 0;
    for (Vertex v = 0; v < n; ++v) {
      const std::size_t r = st.raw_layer[v];
      const std::uint32_t passes = count[r];
      OpNode& node = g[v];
      node.layer = layer_index[r];
      node.pass_num = static_cast<int>(++seen[r]);
      node.num_passes = static_cast<int>(passes);
      max_passes = std::max(max_passes, passes);
      recurrent_layers += passes > 1 && node.pass_num == 1;
    }
    auto& info = g[boost::graph_bundle];
    info.is_recurrent = max_passes > 1;
    info.max_recurrent_loops = static_cast<int>(max_passes);
    PassResult result;
    result.add("layers", static_cast<std::int64_t>(num_layers))
        .add("recurrent layers", recurrent_layers)
        .add("expansions", expansions);
    return result;
  }

 private:
  /// v is an identity vertex (capture's `torchlens::identity`, one parent).
  static bool is_identity(const ModelGraph& g, const AdjacencyAnalysis::Result& adj, Vertex v) {
    // a Name compares its stored copies first, then their sizes: no text is read
    static const Name identity_op("torchlens::identity");
    return adj.parents_of(v).size() == 1 && g[v].op_name == identity_op;
  }

  /// The adjacency with every reader of an identity vertex reading the
  /// identity's argument instead (through chains of identities), each identity
  /// left childless, built into `out`.
  static const AdjacencyAnalysis::Result& identities_as_dead_ends(
      const ModelGraph& g, const AdjacencyAnalysis::Result& full,
      std::optional<AdjacencyAnalysis::Result>& out) {
    const std::size_t n = boost::num_vertices(g);
    auto argument = [&](std::uint32_t p) {
      while (is_identity(g, full, p)) p = full.parents_of(p)[0];
      return p;
    };
    auto& r = out.emplace();
    r.parent_start.assign(n + 1, 0);
    r.parents.reserve(full.parents.size());
    for (Vertex v = 0; v < n; ++v) {
      for (std::uint32_t p : full.parents_of(v)) r.parents.push_back(argument(p));
      r.parent_start[v + 1] = static_cast<std::uint32_t>(r.parents.size());
    }
    r.child_start.assign(n + 1, 0);
    for (std::uint32_t p : r.parents) ++r.child_start[p + 1];
    for (std::size_t v = 0; v < n; ++v) r.child_start[v + 1] += r.child_start[v];
    r.children.resize(r.parents.size());
    std::vector<std::uint32_t> fill(r.child_start.begin(), r.child_start.end() - 1);
    for (Vertex v = 0; v < n; ++v) {
      for (std::uint32_t p : r.parents_of(v)) r.children[fill[p]++] = static_cast<std::uint32_t>(v);
    }
    return r;
  }

  /// The state of one run: classes, current layers, and the expansion scratch.
  /// Every buffer is sized by reset(), so one State can serve run after run
  /// without allocating once its buffers have grown.
  struct State {
    using Adj = AdjacencyAnalysis::Result;
    using Index = detail::Index;
    /// Every table is a ScratchVector: on the run's scratch arena for graphs
    /// past kReusedUpTo (run()), on the heap for the thread's reused State.
    template <class T>
    using ScratchVector = detail::ScratchVector<T>;
    static constexpr Index kNone = detail::kNoIndex;
    /// Largest graph whose buffers a thread keeps between runs.
    static constexpr std::size_t kReusedUpTo = 4096;
    /// Scratch a run of a larger graph reserves per vertex at first (the
    /// tables' sizes on loop graphs; a run needing more takes another block).
    static constexpr std::size_t kScratchBytesPerVertex = 192;
    /// Class keys kept at once (the key cache is emptied when full).
    static constexpr std::size_t kMaxKeys = 2048;

    /// Marks a State in use (a pass run inside a pass run takes its own).
    struct Use {
      State& s;
      explicit Use(State& st) : s(st) { s.busy = true; }
      ~Use() { s.busy = false; }
      Use(const Use&) = delete;
      Use& operator=(const Use&) = delete;
    };
    bool busy = false;
    /// reset() found an identity vertex with readers (run() then resets again
    /// with identities as dead ends)
    bool identity_read = false;

    /// Three tables for run()'s numbering (layer of each label vertex, its
    /// passes, passes numbered so far), in the storage of per-vertex tables the
    /// expansions are done with: no new pages touched.
    [[nodiscard]] std::tuple<ScratchVector<Index>&, ScratchVector<Index>&, ScratchVector<Index>&>
    numbering_tables() {
      return {stamp, match_stamp_, match_count_};
    }

    /// What a class key decides (key_facts()).
    struct KeyFacts {
      Index cls = 0, seed = 0, rule1 = kNone;
      Index type_slot = 0; ///< raw-label counter (0: outputs)
    };

    /// Classes, rule-1 keys and raw-label ranks of graph g; every scratch
    /// buffer emptied.
    void reset(ModelGraph& graph, const Adj& a) {
      // an op whose layer type holds one of `[(:` could share its text with
      // an op that reads its own parameters: then once more without the
      // shortcut for those (reads_own_params())
      if (!reset_with(graph, a, true)) reset_with(graph, a, false);
    }

    /// reset(), with or without the shortcut for ops that read their own
    /// parameters (reads_own_params()); false when it must be done again
    /// without.
    bool reset_with(ModelGraph& graph, const Adj& a, bool own_shortcut) {
      g = &graph;
      adj = &a;
      n = boost::num_vertices(graph);
      identity_read = false;
      // classes by equivalence type, numbered in creation order (only the
      // first vertex of each class key writes texts; only a class's first
      // member interns its text); in the same sweep, the numbers of
      // TorchLens's raw labels (see below)
      class_of_.clear();
      seed_of_.clear();
      rule1_of_.clear();
      key_ids_.clear();
      key_facts_.clear();
      per_type_.clear();
      type_count_.assign(1, 0); // slot 0: outputs, numbered apart
      seed.resize(n);
      label_rank_.resize(n); // first each raw label's number, then its rank (below)
      type_slot_.resize(n);
      cls.resize(n);
      raw_layer.resize(n);
      group_size.assign(n, 0);
      // the expansions' lists hold each vertex about once or twice (a group
      // split by refine() is listed again): room reserved once, touched only
      // as filled, so the buffer is not reallocated (and faulted in) doubling
      list_items_.reserve(2 * n);
      uses_params.resize(n);
      anchored.resize(n);
      param_key.resize(n);
      own_mode_ = false;
      own_used_ = false;
      odd_type_ = false;
      std::size_t param_keys = 0; // new class keys of ops with parameters
      for (Vertex v = 0; v < n; ++v) {
        OpNode& node = graph[v];
        // a key seen before gives what its first vertex's texts gave. The keys
        // are a cache emptied when full: where most vertices are distinct (a
        // chain of convolutions, each with its own weights) it stays small
        // enough to be cheap, and the keys that repeat come back at once
        KeyFacts own;
        const KeyFacts* facts = &own;
        if (own_mode_ && reads_own_params(node)) {
          own = key_facts(graph, v, true); // no other vertex has its texts
          own_used_ = true;
        } else {
          std::uint64_t hash = 0;
          const auto words = write_class_key(graph, v, words_, scratch_.parents, a, hash);
          if (key_facts_.size() == kMaxKeys) {
            key_ids_.clear();
            key_facts_.clear();
          }
          const auto [k, new_key] = key_ids_.id(words, hash);
          if (new_key) {
            key_facts_.push_back(key_facts(graph, v, false));
            // most ops so far read parameters of their own (a chain of
            // convolutions, each with its weights): count every parameter's
            // reads once, and give such ops their texts' ids without look-ups
            if (own_shortcut && !own_mode_ && !node.params.empty() && ++param_keys >= 64 &&
                param_keys * 32 >= v) {
              own_mode_ = count_param_reads(graph);
              own_shortcut = false; // counted once
            }
          }
          facts = &key_facts_[k];
        }
        const KeyFacts& f = *facts;
        node.equivalence_type = class_name_[f.cls];
        cls[v] = f.cls;
        raw_layer[v] = v;
        uses_params[v] = f.rule1 != kNone;
        seed[v] = f.seed;
        param_key[v] = f.rule1;
        anchored[v] = node.kind == NodeKind::buffer || !node.modules.empty();
        identity_read = identity_read || (is_identity(graph, a, v) && !a.children_of(v).empty());
        label_rank_[v] = static_cast<Index>(++type_count_[f.type_slot]);
        type_slot_[v] = f.type_slot;
      }
      if (own_used_ && odd_type_) return false;
      num_classes = class_of_.size();
      num_seeds = num_classes + seed_of_.size();
      for (Vertex v = 0; v < n; ++v) {
        if (uses_params[v]) seed[v] += num_classes;
      }
      // each seed's members, in creation order
      detail::group_by_key(
          n, num_seeds, [&](std::size_t v) { return seed[v]; }, [](std::size_t v) { return v; },
          member_start, member_list, fill_);
      first_with_param_key_.resize(rule1_of_.size());
      param_key_stamp_.assign(rule1_of_.size(), 0);
      param_key_epoch_ = 0;
      // TorchLens's raw labels, `{type}_{type_num}_raw` or
      // `{type}_{type_num}_{creation}_raw`, compared as strings: the order it
      // sorts subgraphs, iso-groups and layer names in. Only vertices of one
      // layer type are ever compared, and their numbers differ, so the order is
      // that of `{type_num}_` as text: a vertex's rank among its type's numbers
      // 1..count in that order (string_order_ranks), one integer per vertex
      type_start_.assign(type_count_.size() + 1, 0);
      for (std::size_t t = 0; t < type_count_.size(); ++t) {
        type_start_[t + 1] = type_start_[t] + static_cast<Index>(type_count_[t]);
      }
      rank_of_number_.resize(type_start_.back());
      for (std::size_t t = 0; t < type_count_.size(); ++t) {
        string_order_ranks(type_count_[t], rank_of_number_.data() + type_start_[t]);
      }
      for (Vertex v = 0; v < n; ++v) {
        label_rank_[v] = rank_of_number_[type_start_[type_slot_[v]] + label_rank_[v] - 1];
      }
      // expansion scratch, epochs from zero
      epoch = 0;
      stamp.assign(n, 0);
      sg_of.assign(n, kNone);
      first_sg_.resize(n);
      first_list_.resize(n);
      leader_of_.resize(n);
      slot_stamp_.assign(n, 0);
      slot_of_leader_.resize(n);
      for (int side = 0; side < 2; ++side) {
        frontier_.class_stamp[side].assign(num_classes, 0);
        frontier_.class_begin[side].resize(num_classes);
        frontier_.class_end[side].resize(num_classes);
      }
      frontier_.epoch = 0;
      match_stamp_.assign(n, 0);
      all_stamp_.assign(n, 0);
      all_epoch_ = 0;
      match_count_.resize(n);
      match_epoch_ = 0;
      for (int dir = 0; dir < 2; ++dir) {
        refine_stamp_[dir].clear(); // grown by refine(), a row per dict slot
        refine_first_[dir].clear();
      }
      refine_epoch_ = 0;
      first_with_param_type_.resize(num_classes);
      param_type_stamp_.assign(num_classes, 0);
      param_type_epoch_ = 0;
      return true;
    }

    /// Counts how often each parameter is read over the graph, for
    /// reads_own_params() (by the hash of its address: equal addresses always
    /// count together, a collision only makes a parameter look shared). False
    /// when no parameter is read once, or when the texts of ops with different
    /// parameters could coincide: a parameter's address holds one of `,[]#|`
    /// (the separators of the equivalence type and the rule-1 key). An op's
    /// layer type with one of `[(:` could too (key_facts() looks).
    bool count_param_reads(const ModelGraph& graph) {
      param_reads_.clear();
      last_address_ = nullptr;
      const void* last = nullptr; // the address hashed last
      std::uint64_t last_hash = 0;
      std::ptrdiff_t read_once = 0; // parameters read once so far
      for (Vertex v = 0; v < n; ++v) {
        for (const auto& p : graph[v].params) {
          if (p.address.data() != last) {
            last = p.address.data();
            last_hash = p.address.hash();
            if (p.address.str().find_first_of(",[]#|") != std::string::npos) return false;
          }
          std::size_t& reads = *param_reads_.try_emplace_ref(last_hash, 0);
          if (reads < 2) read_once += ++reads == 1 ? 1 : -1;
        }
      }
      return read_once > 0;
    }

    /// Op v reads parameters that no other op reads (each once): no other
    /// vertex has its equivalence type, its candidates' key or its rule-1 key
    /// (count_param_reads() says when the texts cannot coincide otherwise).
    [[nodiscard]] bool reads_own_params(const OpNode& node) {
      if (node.kind != NodeKind::op || node.params.empty()) return false;
      return std::all_of(node.params.begin(), node.params.end(), [&](const ParamRef& p) {
        if (p.address.data() != last_address_) {
          last_address_ = p.address.data();
          last_reads_ = *param_reads_.find(p.address.hash());
        }
        return last_reads_ == 1;
      });
    }

    /// What the texts of vertex v (the first with its class key) decide: its
    /// class (TorchLens's equivalence type, interned for the graph), the
    /// candidates an expansion from it starts with, its rule-1 key, and the
    /// counter of its raw label's number. `own`: v reads its own parameters
    /// (reads_own_params()), so its texts are new; each gets a new id unlooked.
    KeyFacts key_facts(const ModelGraph& graph, Vertex v, bool own) {
      const OpNode& node = graph[v];
      KeyFacts f;
      write_equivalence_type(graph, v, text_, scratch_, adj);
      const auto [c, is_new] =
          own ? std::pair<std::size_t, bool>(class_of_.add_unseen(), true) : class_of_.id(text_);
      if (is_new) {
        // a thread's State serves capture after capture of one model: class c's
        // text is most often the one interned for c last run (no table look-up)
        if (class_name_.size() <= c) class_name_.resize(c + 1);
        if (class_name_[c] != std::string_view(text_)) class_name_[c] = Name(text_);
      }
      f.cls = static_cast<Index>(c);
      // the candidates an expansion starts from (TorchLens's `equivalent_ops`)
      // are keyed by the type before the module path: for an op with
      // parameters, the same weights applied in two modules are candidates
      // (numbered after the classes once their count is known)
      const bool params = node.kind == NodeKind::op && !node.params.empty();
      if (own) {
        f.seed = static_cast<Index>(seed_of_.add_unseen());
        f.rule1 = static_cast<Index>(rule1_of_.add_unseen());
      } else {
        f.seed = static_cast<Index>(
            params ? seed_of_.id(std::string_view(text_).substr(0, text_.rfind('@'))).first : c);
      }
      // rule-1 key: (op, output index, sorted parameters)
      if (params && !own) {
        text_ = node.op_name;
        text_ += '#';
        detail::append_int(text_, node.output_index);
        auto& addrs = scratch_.addrs;
        sorted_param_addresses(node, addrs);
        for (const auto* p : addrs) {
          text_ += '|';
          text_ += *p;
        }
        f.rule1 = static_cast<Index>(rule1_of_.id(text_).first);
      }
      if (node.kind != NodeKind::output) {
        const auto [slot, added] =
            per_type_.try_emplace(detail::address_key(node.layer_type.data()), type_count_.size());
        if (added) {
          type_count_.push_back(0);
          odd_type_ =
              odd_type_ || (node.kind == NodeKind::op &&
                            node.layer_type.str().find_first_of("[(:") != std::string::npos);
        }
        f.type_slot = static_cast<Index>(slot);
      }
      return f;
    }

    /// TorchLens phase 1: from the sources in creation order, expand every
    /// class not seen before. Returns the number of expansions.
    std::int64_t detect_loops() {
      class_seen_.assign(num_classes, 0);
      queued_.assign(n, 0);
      auto& queue = pending_; // vertices in creation order
      queue.reset(n);
      for (Vertex v = 0; v < n; ++v) {
        if (adj->parents_of(v).empty()) {
          queue.push(v);
          queued_[v] = 1;
        }
      }
      std::int64_t expansions = 0;
      for (Vertex v = 0; queue.pop(v);) {
        if (class_seen_[cls[v]]) continue;
        class_seen_[cls[v]] = 1;
        const auto equivalent = members_of(seed[v]);
        for (Vertex e : equivalent) {
          for (std::uint32_t c : adj->children_of(e)) {
            if (!queued_[c]) {
              queued_[c] = 1;
              queue.push(c);
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
      ++param_key_epoch_;
      for (Vertex v = 0; v < n; ++v) {
        const std::size_t key = param_key[v];
        if (key == kNone) continue;
        if (param_key_stamp_[key] != param_key_epoch_) {
          param_key_stamp_[key] = param_key_epoch_;
          first_with_param_key_[key] = v;
        }
        raw_layer[v] = first_with_param_key_[key];
      }
    }

    /// The members of seed c, in creation order.
    [[nodiscard]] std::span<const Index> members_of(std::size_t c) const {
      return {member_list.data() + member_start[c], member_start[c + 1] - member_start[c]};
    }

   private:
    /// The numbers 1 … count ranked as TorchLens's raw labels order them:
    /// `{number}_` compared as text, so `10_` sorts before `1_` ('0' < '_')
    /// and `19_` before `2_`. That is the post-order of the numbers' decimal
    /// trie (each number after the numbers it prefixes, siblings by digit):
    /// out[x - 1] is the rank of x. O(count), no string written.
    static void string_order_ranks(std::uint64_t count, Index* out) {
      struct Frame {
        std::uint64_t number;
        unsigned next_digit;
      };
      std::array<Frame, 21> stack{}; // a 64-bit number has at most 20 digits
      Index next = 0;
      for (std::uint64_t first = 1; first <= 9 && first <= count; ++first) {
        std::size_t top = 0;
        stack[0] = {first, 0};
        for (;;) {
          Frame& f = stack[top];
          if (f.next_digit <= 9) {
            const std::uint64_t child = f.number * 10 + f.next_digit++;
            if (child <= count) {
              stack[++top] = {child, 0};
            } else {
              f.next_digit = 10; // the larger digits give larger numbers still
            }
            continue;
          }
          out[f.number - 1] = next++;
          if (top == 0) break;
          --top;
        }
      }
    }

    /// True when a's raw label sorts before b's (vertices of one layer type).
    [[nodiscard]] bool raw_label_less(Vertex a, Vertex b) const {
      return label_rank_[a] < label_rank_[b];
    }

    struct Subgraph {
      ScratchVector<Index> param_nodes;
      std::size_t size = 0; ///< vertices in its node set
    };
    /// The frontiers of one lock step, flat (reused across steps).
    struct Frontiers {
      ScratchVector<Index> sg;        ///< subgraph of frontier i
      ScratchVector<Index> list[2];   ///< children, parents: every frontier's entries
      ScratchVector<Index> owner[2];  ///< frontier of each entry
      ScratchVector<Index> start[2];  ///< frontier i's entries begin at start[i]
      ScratchVector<char> taken[2];   ///< entry paired (or the candidate) already
      ScratchVector<Index> bucket[2]; ///< entries by class, then position
      /// class c's entries: bucket[class_begin[c] .. class_end[c]) when class_stamp[c] == epoch
      ScratchVector<Index> class_begin[2], class_end[2];
      ScratchVector<std::uint32_t> class_stamp[2];
      std::uint32_t epoch = 0;
      ScratchVector<Index> classes; ///< scratch: the classes one side holds
      ScratchVector<std::pair<Index, Index>> matches, kept;
      /// True when frontier i (the last one being filled) already lists w on either side.
      [[nodiscard]] bool added(std::size_t i, Vertex w) const {
        for (int side = 0; side < 2; ++side) {
          const auto b = list[side].begin() + static_cast<std::ptrdiff_t>(start[side][i]);
          if (std::find(b, list[side].end(), w) != list[side].end()) return true;
        }
        return false;
      }
    };

    // ---- TorchLens's expansion state, kept exactly ----
    // A subgraph's node set only grows: a vertex two frontiers reach can be
    // claimed in two rounds of one step, by two subgraphs, and is then in both
    // (node_to_subgraph, sg_of here, is the later). Its first claim is in
    // first_sg_, later ones in extra_claims_ (rare).

    /// v is in subgraph sg's node set.
    [[nodiscard]] bool member_of(Vertex v, std::size_t sg) const {
      if (stamp[v] != epoch) return false;
      if (first_sg_[v] == sg) return true;
      return !extra_claims_.empty() && extra_member_.contains(pair_key(v, sg));
    }
    /// v is in some subgraph (TorchLens: in node_to_subgraph).
    [[nodiscard]] bool claimed(Vertex v) const { return stamp[v] == epoch; }
    /// Adds v, a member of iso-group list `list`, to subgraph sg.
    void claim(Vertex v, std::size_t sg, std::size_t list) {
      if (stamp[v] != epoch) {
        stamp[v] = epoch;
        first_sg_[v] = sg;
        first_list_[v] = list;
      } else {
        // another claim: lists already indexed that hold v now meet sg too
        std::size_t* head = extra_head_.try_emplace_ref(v, kNone);
        if (list_indexed_[first_list_[v]]) list_subgraphs_.insert(pair_key(first_list_[v], sg));
        for (std::size_t e = *head; e != kNone; e = extra_claims_[e].next) {
          if (list_indexed_[extra_claims_[e].list]) {
            list_subgraphs_.insert(pair_key(extra_claims_[e].list, sg));
          }
        }
        extra_claims_.push_back(
            {static_cast<Index>(sg), static_cast<Index>(list), static_cast<Index>(*head)});
        *head = extra_claims_.size() - 1;
        extra_member_.insert(pair_key(v, sg));
      }
      sg_of[v] = sg;
      ++subgraphs[sg].size;
      if (uses_params[v]) subgraphs[sg].param_nodes.push_back(v);
    }
    /// Sorts vertices of one layer type by raw label, as TorchLens sorts labels:
    /// their ranks are distinct, so a large list (a seed's members, an
    /// iso-group, a component) is radix sorted on them.
    void sort_by_label(ScratchVector<Index>& vs) {
      detail::sort_by_distinct_key(
          vs, [&](Index v) { return label_rank_[v]; }, radix_vertices_, radix_count_);
    }
    /// Sorts (vertex, subgraph) pairs, vertices of one layer type, by raw
    /// label: their ranks are distinct, so a large set (a loop's iterations:
    /// thousands) is radix sorted on them.
    void sort_by_label(ScratchVector<std::pair<Index, Index>>& items) {
      detail::sort_by_distinct_key(
          items, [&](const std::pair<Index, Index>& p) { return label_rank_[p.first]; },
          radix_buffer_, radix_count_);
    }
    /// A new iso-group member list (lists never change once made).
    std::size_t new_list(std::span<const Index> nodes) {
      const std::size_t id = list_start_.size() - 1;
      list_items_.insert(list_items_.end(), nodes.begin(), nodes.end());
      list_start_.push_back(list_items_.size());
      if (list_indexed_.size() <= id) list_indexed_.resize(id + 1);
      list_indexed_[id] = 0;
      return id;
    }
    /// The members of list `id`. A view into the lists' one buffer: valid until
    /// the next new_list (callers that make lists copy the members first).
    [[nodiscard]] std::span<const Index> list(std::size_t id) const {
      return {list_items_.data() + list_start_[id], list_start_[id + 1] - list_start_[id]};
    }
    /// TorchLens's `iso_node_groups[leader] = list`: a live entry of that
    /// leader keeps its place and takes the new list.
    void dict_set(Vertex leader, std::size_t list) {
      if (slot_stamp_[leader] == epoch) {
        slots_[slot_of_leader_[leader]].list = list;
        return;
      }
      slot_stamp_[leader] = epoch;
      slot_of_leader_[leader] = slots_.size();
      slots_.push_back({static_cast<Index>(leader), static_cast<Index>(list), true});
    }
    /// TorchLens's `del iso_node_groups[leader]`.
    void dict_del(Vertex leader) {
      if (slot_stamp_[leader] != epoch) return;
      slots_[slot_of_leader_[leader]].alive = false;
      slot_stamp_[leader] = 0;
    }
    /// The member list of v's iso-group: `iso_node_groups[node_to_iso_leader[v]]`.
    [[nodiscard]] std::size_t list_of(Vertex v) const {
      return slots_[slot_of_leader_[leader_of_[v]]].list;
    }
    /// A new iso-group of `nodes` (sorted by raw label, each with its subgraph in
    /// sgs), queued for the next steps.
    void register_group(const ScratchVector<Index>& nodes, const ScratchVector<Index>& sgs) {
      const std::size_t list = new_list(nodes);
      dict_set(nodes.front(), list);
      for (std::size_t i = 0; i < nodes.size(); ++i) {
        leader_of_[nodes[i]] = nodes.front();
        claim(nodes[i], sgs[i], list);
      }
      queue_.push_back(list);
    }
    /// Subgraph sg's node set meets list `list`. The (list, subgraph) pairs of
    /// a list are hashed when it is first asked about (most lists never are);
    /// claim() adds the pairs of later claims to lists already hashed.
    bool list_meets_subgraph(std::size_t list, std::size_t sg) {
      if (!list_indexed_[list]) {
        list_indexed_[list] = 1;
        for (Vertex u : this->list(list)) {
          list_subgraphs_.insert(pair_key(list, first_sg_[u]));
          const std::size_t* head = extra_claims_.empty() ? nullptr : extra_head_.find(u);
          if (head == nullptr) continue;
          for (std::size_t e = *head; e != kNone; e = extra_claims_[e].next) {
            list_subgraphs_.insert(pair_key(list, extra_claims_[e].sg));
          }
        }
      }
      return list_subgraphs_.contains(pair_key(list, sg));
    }
    static std::uint64_t pair_key(std::size_t a, std::size_t b) {
      return (static_cast<std::uint64_t>(a) << 32) ^ static_cast<std::uint64_t>(b);
    }

    /// TorchLens phase 2: grow one subgraph per equivalent vertex in lock step.
    void expand(std::span<const Index> equivalent) {
      ++epoch;
      starts_.assign(equivalent.begin(), equivalent.end());
      sort_by_label(starts_);
      const std::size_t k = starts_.size();
      num_subgraphs = k;
      if (subgraphs.size() < k) subgraphs.resize(k);
      for (std::size_t j = 0; j < k; ++j) {
        subgraphs[j].param_nodes.clear();
        subgraphs[j].size = 0;
      }
      adjacency.reset(k);
      in_adjacency.assign(k, 0);
      list_items_.clear();
      list_start_.assign(1, 0);
      slots_.clear();
      list_subgraphs_.clear();
      extra_claims_.clear();
      extra_head_.clear();
      extra_member_.clear();
      subgraph_pos_stamp_.assign(k, 0);
      subgraph_pos_.resize(k);
      step_epoch_ = 0;
      // all starts are one iso-group, each anchoring its own subgraph
      queue_.clear();
      sgs_.resize(k);
      for (std::size_t j = 0; j < k; ++j) sgs_[j] = j;
      register_group(starts_, sgs_);
      bool first = true;
      for (std::size_t head = 0; head < queue_.size(); ++head) {
        const auto members = list(queue_[head]);
        iso_.assign(members.begin(), members.end());
        sort_by_label(iso_);
        if (iso_.size() == 1) continue;
        advance(iso_, first);
        first = false;
      }
      refine();
      finalize();
    }

    /// TorchLens's `_record_subgraph_adjacency`: node's subgraph and the one
    /// that claimed neighbour are adjacent when node's subgraph holds a member
    /// of neighbour's iso-group.
    void record_adjacency(Vertex node, Vertex neighbour) {
      const std::size_t a = sg_of[node], b = sg_of[neighbour];
      if (!list_meets_subgraph(list_of(neighbour), a)) return;
      in_adjacency[a] = in_adjacency[b] = 1;
      adjacency.unite(a, b);
    }

    void advance(const ScratchVector<Index>& iso, bool first) {
      // each subgraph's frontier: its children, then (after the first step) its
      // parents, not yet in a subgraph, each once; one reached by another
      // subgraph records adjacency instead. Frontier i's list on side s is
      // fr.list[s][fr.start[s][i] .. fr.start[s][i + 1]).
      // One frontier per subgraph, in the order the members name them: TorchLens
      // keys frontiers by subgraph, so when two members are in one subgraph the
      // later member's frontier takes the earlier one's place.
      auto& fr = frontier_;
      ++step_epoch_;
      // (written by index into tables sized for the most: a push_back per
      // member was an out-of-line call)
      fr.sg.resize(iso.size());
      last_member_.resize(iso.size());
      std::size_t k = 0;
      for (std::size_t i = 0; i < iso.size(); ++i) {
        const std::size_t sg = sg_of[iso[i]];
        if (subgraph_pos_stamp_[sg] != step_epoch_) {
          subgraph_pos_stamp_[sg] = step_epoch_;
          subgraph_pos_[sg] = k;
          fr.sg[k] = sg;
          last_member_[k++] = i;
        } else {
          last_member_[subgraph_pos_[sg]] = i;
        }
      }
      fr.sg.resize(k);
      last_member_.resize(k);
      for (int side = 0; side < 2; ++side) {
        fr.list[side].clear();
        fr.owner[side].clear();
        fr.start[side].resize(k + 1);
        fr.start[side][0] = 0;
      }
      // neighbours in the member's subgraph are skipped, those in another
      // subgraph record adjacency, the rest join the frontier (each once)
      const auto visit = [&](std::size_t i, bool keep, std::size_t pos) {
        const Vertex v = iso[i];
        const std::size_t sg = sg_of[v];
        for (int side = 0; side < (first ? 1 : 2); ++side) {
          const auto span = side == 0 ? adj->children_of(v) : adj->parents_of(v);
          for (std::uint32_t w : span) {
            if (member_of(w, sg)) continue;
            if (claimed(w)) {
              record_adjacency(v, w);
            } else if (keep && !fr.added(pos, w)) {
              fr.list[side].push_back(w);
              fr.owner[side].push_back(pos);
            }
          }
        }
      };
      for (std::size_t i = 0; i < iso.size(); ++i) {
        if (last_member_[subgraph_pos_[sg_of[iso[i]]]] != i) visit(i, false, 0);
      }
      for (std::size_t pos = 0; pos < k; ++pos) {
        visit(last_member_[pos], true, pos);
        for (int side = 0; side < 2; ++side) fr.start[side][pos + 1] = fr.list[side].size();
      }
      // for each side and class, the frontier entries holding one, in frontier
      // order: TorchLens scans every other subgraph's list for the first vertex
      // of the candidate's class; the buckets (entries sorted by class, then
      // position) find them without the scan
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
      auto& matches = fr.matches;
      auto& kept = fr.kept;
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
            at = std::max<std::size_t>(at, fr.start[s][scan]);
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
        // a vertex two subgraphs reached belongs to neither: count each
        // vertex's matches in a stamped table
        ++match_epoch_;
        for (const auto& [w, sg] : matches) {
          (void)sg;
          if (match_stamp_[w] != match_epoch_) {
            match_stamp_[w] = match_epoch_;
            match_count_[w] = 0;
          }
          ++match_count_[w];
        }
        kept.clear();
        for (const auto& m : matches) {
          if (match_count_[m.first] == 1) kept.push_back(m);
        }
        if (kept.empty()) continue;
        sort_by_label(kept);
        nodes_.resize(kept.size());
        sgs_.resize(kept.size());
        for (std::size_t i = 0; i < kept.size(); ++i) {
          nodes_[i] = kept[i].first;
          sgs_[i] = kept[i].second;
        }
        register_group(nodes_, sgs_);
      }
    }

    /// TorchLens phase 3: split iso-groups whose members share no
    /// (direction, neighbouring iso-group).
    void refine() {
      // over a snapshot of the groups (leader, list), in dict order; a split
      // deletes the leader's entry and adds one per component
      snapshot_.clear();
      for (const Slot& e : slots_) {
        if (e.alive) snapshot_.emplace_back(e.leader, e.list);
      }
      for (const auto& [group_leader, list] : snapshot_) {
        const auto members = this->list(list);
        group_.assign(members.begin(), members.end());
        const auto& group = group_;
        if (group.size() <= 1) continue;
        // members sharing a (direction, neighbouring iso-group's leader) are one
        // component: the first member seen with each key, in stamped dense tables.
        // A leader is named by its dict slot: every claimed vertex's leader was
        // entered in this expansion, and no two leaders share a slot, so the
        // tables need a row per slot, not per vertex
        uf_.reset(group.size());
        ++refine_epoch_;
        for (int dir = 0; dir < 2; ++dir) {
          if (refine_stamp_[dir].size() < slots_.size()) {
            refine_stamp_[dir].resize(slots_.size(), 0);
            refine_first_[dir].resize(slots_.size());
          }
        }
        auto note = [&](int dir, Vertex leader_vertex, std::size_t m) {
          const std::size_t key = slot_of_leader_[leader_vertex];
          if (refine_stamp_[dir][key] != refine_epoch_) {
            refine_stamp_[dir][key] = refine_epoch_;
            refine_first_[dir][key] = m;
          } else {
            uf_.unite(refine_first_[dir][key], m);
          }
        };
        for (std::size_t m = 0; m < group.size(); ++m) {
          const Vertex v = group[m];
          for (std::uint32_t c : adj->children_of(v)) {
            if (claimed(c)) note(0, leader_of_[c], m);
          }
          for (std::uint32_t p : adj->parents_of(v)) {
            if (claimed(p)) note(1, leader_of_[p], m);
          }
        }
        // the components, numbered by first member, each in member order
        component_index_.assign(group.size(), kNone);
        component_of_.resize(group.size());
        std::size_t components = 0;
        for (std::size_t m = 0; m < group.size(); ++m) {
          const std::size_t r = uf_.find(m);
          if (component_index_[r] == kNone) component_index_[r] = components++;
          component_of_[m] = component_index_[r];
        }
        if (components <= 1) continue;
        detail::group_by_key(
            group.size(), components, [&](std::size_t m) { return component_of_[m]; },
            [&](std::size_t m) { return group[m]; }, component_start_, component_members_, fill_);
        dict_del(group_leader);
        for (std::size_t c = 0; c < components; ++c) {
          component_.assign(
              component_members_.begin() + static_cast<std::ptrdiff_t>(component_start_[c]),
              component_members_.begin() + static_cast<std::ptrdiff_t>(component_start_[c + 1]));
          sort_by_label(component_);
          dict_set(component_.front(), new_list(component_));
          for (Vertex m : component_) leader_of_[m] = component_.front();
        }
      }
    }

    /// TorchLens phase 4: members of an iso-group become passes of one layer
    /// when their subgraphs share a parameter type, or are adjacent and pass the
    /// body guard; same-function same-parameter ops always.
    ///
    /// The guard lets two members of adjacent subgraphs merge when either is
    /// anchored (in a module, or a buffer) or both subgraphs hold min_body
    /// vertices. Within one adjacency component of a group that makes anchored
    /// members join everyone, large ones join each other and the rest nobody:
    /// with an anchored member the component is one layer; without, its
    /// members in large subgraphs are.
    void finalize() {
      auto& all = all_;
      all.clear();
      // every vertex of an iso-group, once (a vertex claimed by two subgraphs is
      // in two groups)
      ++all_epoch_;
      for (const Slot& e : slots_) {
        if (!e.alive) continue;
        for (Vertex v : list(e.list)) {
          if (all_stamp_[v] == all_epoch_) continue;
          all_stamp_[v] = all_epoch_;
          all.push_back(v);
        }
      }
      // union-find over positions in `all`
      auto& slot = slot_; // dense, by vertex: only entries of `all` are read
      slot.resize(n);
      for (std::size_t i = 0; i < all.size(); ++i) slot[all[i]] = i;
      auto& uf = uf_;
      uf.reset(all.size());
      // parameter types of each subgraph, as they are now (sorted, distinct)
      const std::size_t k = num_subgraphs;
      param_type_start_.assign(k + 1, 0);
      param_types_.clear();
      for (std::size_t s = 0; s < k; ++s) {
        const auto from = static_cast<std::ptrdiff_t>(param_types_.size());
        for (Vertex p : subgraphs[s].param_nodes) param_types_.push_back(cls[p]);
        std::sort(param_types_.begin() + from, param_types_.end());
        param_types_.erase(std::unique(param_types_.begin() + from, param_types_.end()),
                           param_types_.end());
        param_type_start_[s + 1] = param_types_.size();
      }
      // the first member seen with each key, per group (stamped dense tables:
      // only the partition the unions make matters, not which member is first)
      first_in_component_.resize(k);
      first_large_in_component_.resize(k);
      component_anchored_.resize(k);
      component_stamp_.assign(k, 0);
      std::uint32_t group_stamp = 0;
      for (const Slot& e : slots_) {
        if (!e.alive) continue;
        const auto group = list(e.list);
        if (group.size() < 2) continue;
        ++group_stamp;
        ++param_type_epoch_;
        // adjacent subgraphs: one adjacency component; does it hold an anchored member?
        for (Vertex v : group) {
          const std::size_t sg = sg_of[v];
          if (!in_adjacency[sg]) continue;
          const std::size_t c = adjacency.find(sg);
          if (component_stamp_[c] != group_stamp) {
            component_stamp_[c] = group_stamp;
            first_in_component_[c] = v;
            first_large_in_component_[c] = kNone;
            component_anchored_[c] = 0;
          }
          component_anchored_[c] |= anchored[v];
        }
        for (Vertex v : group) {
          const std::size_t sg = sg_of[v];
          if (in_adjacency[sg]) {
            const std::size_t c = adjacency.find(sg);
            if (component_anchored_[c]) {
              uf.unite(slot[first_in_component_[c]], slot[v]);
            } else if (subgraphs[sg].size >= min_body) {
              if (first_large_in_component_[c] == kNone) {
                first_large_in_component_[c] = v;
              } else {
                uf.unite(slot[first_large_in_component_[c]], slot[v]);
              }
            }
          }
          // a shared parameter type
          for (std::size_t i = param_type_start_[sg]; i < param_type_start_[sg + 1]; ++i) {
            const std::size_t t = param_types_[i];
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
      // applied in does not matter): size, first vertex, the vertex with the
      // smallest raw label, largest group_size. A layer is named, as in
      // TorchLens, by its smallest raw label: an earlier layer's member left out
      // of this one keeps that name, and stays with this layer when it is the same
      auto& layer = layer_of_root_;
      layer.assign(all.size(), LayerSummary{});
      // all[i]'s root, found once; in slot's storage (slot[all[i]] == i, not
      // read after the unions), so no new pages are touched
      auto& root = slot;
      for (std::size_t i = 0; i < all.size(); ++i) {
        const Vertex v = all[i];
        root[i] = static_cast<Index>(uf.find(i)); // slot[v] == i
        LayerSummary& l = layer[root[i]];
        ++l.size;
        l.first = std::min(l.first, static_cast<Index>(v));
        if (l.size == 1 || raw_label_less(v, l.name)) l.name = static_cast<Index>(v);
        l.largest = std::max(l.largest, group_size[v]);
      }
      for (std::size_t i = 0; i < all.size(); ++i) {
        const Vertex v = all[i];
        const LayerSummary& l = layer[root[i]];
        if (l.size < 2 || l.size < l.largest) continue; // never shrink a layer
        raw_layer[v] = l.name;
        group_size[v] = l.size;
        if (v != l.first) cls[v] = cls[l.first];
      }
    }

    ModelGraph* g = nullptr;
    const Adj* adj = nullptr;
    std::size_t n = 0;

   public:
    std::size_t num_classes = 0;
    std::size_t num_seeds = 0;
    ScratchVector<Index> seed;         ///< candidate set an expansion from v starts with:
                                       ///< its class, or for an op with parameters (op,
                                       ///< parameters) whatever its modules (see reset)
    ScratchVector<Index> member_start; ///< seed c's members: member_list[start[c], start[c+1])
    ScratchVector<Index> member_list;  ///< members by seed, each seed in creation order
    ScratchVector<Index> cls;          ///< current class (canonicalised by grouping)
    ScratchVector<Index> raw_layer;    ///< the layer's label vertex
    ScratchVector<Index> group_size;   ///< size of its layer when last grouped
    ScratchVector<char> uses_params;
    ScratchVector<char> anchored;   ///< in a module, or a buffer (TorchLens's recurrence_anchored)
    std::size_t min_body = 2;       ///< options().min_param_free_loop_body()
    ScratchVector<Index> param_key; ///< rule-1 key, kNone without parameters

   private:
    // set-up scratch
    std::string text_;
    EquivalenceScratch scratch_;
    detail::TextIds class_of_, rule1_of_, seed_of_;
    detail::FlatMap64 param_reads_;           ///< address hash → reads (1, or 2 for more)
    bool own_mode_ = false;                   ///< reads_own_params() asked (reads counted)
    bool own_used_ = false;                   ///< some op's texts got ids unlooked
    bool odd_type_ = false;                   ///< an op's layer type holds one of `[(:`
    const void* last_address_ = nullptr;      ///< reads_own_params(): the address looked up last
    std::size_t last_reads_ = 0;              ///< and its reads
    detail::WordIds key_ids_;                 ///< class keys (write_class_key)
    ScratchVector<KeyFacts> key_facts_;       ///< by key id
    std::vector<std::uint64_t> words_;        ///< a class key
    detail::FlatMap64 per_type_;              ///< layer type → its raw-label counter
    ScratchVector<std::uint64_t> type_count_; ///< raw-label numbers given, by counter
    ScratchVector<Name> class_name_;          ///< class c's equivalence type
    /// each vertex's raw-label number while reset() counts, then the label's rank
    /// among its layer type's (raw_label_less)
    ScratchVector<Index> label_rank_;
    ScratchVector<Index> type_slot_;      ///< each vertex's raw-label counter
    ScratchVector<Index> type_start_;     ///< counter t's ranks: rank_of_number_[type_start_[t] ..)
    ScratchVector<Index> rank_of_number_; ///< by counter, then number - 1 (string_order_ranks)
    ScratchVector<Index> fill_;
    // detect_loops
    ScratchVector<char> class_seen_, queued_;
    detail::IndexQueue pending_;
    // expansion scratch (epoch-stamped)
    ScratchVector<std::uint32_t> stamp;
    std::uint32_t epoch = 0;
    ScratchVector<Index> sg_of;        ///< node_to_subgraph: the subgraph that claimed v last
    ScratchVector<Subgraph> subgraphs; ///< the first num_subgraphs are this expansion's
    std::size_t num_subgraphs = 0;
    detail::DisjointSets adjacency;
    ScratchVector<char> in_adjacency;
    // iso-groups: member lists (never changed once made; the queue holds their
    // ids) and TorchLens's dict from leader to list, in insertion order
    /// This expansion's lists end to end (list i: list_items_[list_start_[i] ..
    /// list_start_[i + 1])): one buffer, reused, not a vector per list (an
    /// expansion over many small groups made as many allocations).
    ScratchVector<Index> list_items_;
    ScratchVector<std::size_t> list_start_{0};
    struct Slot {
      Index leader;
      Index list;
      bool alive;
    };
    ScratchVector<Slot> slots_;
    ScratchVector<Index> slot_of_leader_; ///< by leader, valid when slot_stamp_ == epoch
    ScratchVector<std::uint32_t> slot_stamp_;
    ScratchVector<Index> leader_of_; ///< node_to_iso_leader, valid for claimed vertices
    // subgraph membership: the first claim, and later ones
    ScratchVector<Index> first_sg_, first_list_;
    struct ExtraClaim {
      Index sg, list, next; ///< next: the vertex's previous extra claim, or kNone
    };
    ScratchVector<ExtraClaim> extra_claims_;
    /// vertex → its latest extra claim (index into extra_claims_), for vertices
    /// claimed more than once in this expansion (rare: a map, not a table per vertex)
    detail::FlatMap64 extra_head_;
    detail::FlatSet64 extra_member_;   ///< (vertex, subgraph) of later claims
    detail::FlatSet64 list_subgraphs_; ///< (list, subgraph) pairs of hashed lists
    ScratchVector<char> list_indexed_; ///< the list's pairs are in list_subgraphs_
    // advance(): one frontier position per subgraph
    ScratchVector<Index> last_member_, subgraph_pos_, sgs_;
    ScratchVector<std::uint32_t> subgraph_pos_stamp_;
    std::uint32_t step_epoch_ = 0;
    ScratchVector<std::pair<Index, Index>> snapshot_; ///< refine(): (leader, list)
    ScratchVector<Index> starts_, iso_, nodes_;
    ScratchVector<Index> radix_count_;                       ///< sort_by_label's buckets
    ScratchVector<std::pair<Index, Index>> radix_buffer_;    ///< and its other half (pairs)
    ScratchVector<Index> radix_vertices_;                    ///< (vertex lists)
    ScratchVector<Index> queue_;                             ///< iso-groups to grow from, by id
    ScratchVector<std::uint32_t> match_stamp_, match_count_; ///< advance(): matches per vertex
    std::uint32_t match_epoch_ = 0;
    Frontiers frontier_;
    // refinement
    ScratchVector<Index> group_, component_, component_members_;
    ScratchVector<Index> component_index_, component_of_, component_start_;
    detail::DisjointSets uf_;
    ScratchVector<std::uint32_t> refine_stamp_[2]; ///< by dict slot (refine())
    ScratchVector<Index> refine_first_[2];
    std::uint32_t refine_epoch_ = 0;
    // finalize
    ScratchVector<Index> all_;
    ScratchVector<std::uint32_t> all_stamp_; ///< finalize: vertex already in `all`
    std::uint32_t all_epoch_ = 0;
    ScratchVector<Index> slot_; ///< finalize: index of a vertex in `all`
    ScratchVector<Index> param_types_, param_type_start_;
    struct LayerSummary {
      Index size = 0;
      Index first = kNone; ///< creation order: its class becomes the layer's
      Index name = 0;      ///< smallest raw label: the layer's name
      Index largest = 0;
    };
    ScratchVector<LayerSummary> layer_of_root_;
    ScratchVector<Index> first_in_component_, first_with_param_type_, first_with_param_key_;
    ScratchVector<Index> first_large_in_component_;
    ScratchVector<char> component_anchored_;
    ScratchVector<std::uint32_t> component_stamp_, param_type_stamp_, param_key_stamp_;
    std::uint32_t param_type_epoch_ = 0, param_key_epoch_ = 0;
  };
};

} // namespace torchlens::passes
