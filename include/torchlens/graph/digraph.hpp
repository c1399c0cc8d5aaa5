#pragma once
/// \file
/// torchlens::Digraph: a compact, append-only bidirectional graph with bundled
/// properties that models Boost.Graph's concepts (IncidenceGraph,
/// BidirectionalGraph, AdjacencyGraph, VertexListGraph, EdgeListGraph,
/// VertexAndEdgeListGraph, the add-only half of MutablePropertyGraph, and
/// bundled-property access `g[v]`, `g[e]`, `g[boost::graph_bundle]`). Boost's
/// algorithms (breadth_first_search, topological_sort, reverse_graph, ...)
/// run on it unchanged; it is ModelGraph's storage (model_graph.hpp).
///
/// Why not `boost::adjacency_list<vecS, vecS, bidirectionalS>`: that keeps,
/// per vertex, two std::vectors (48 bytes and two heap blocks) and, per edge,
/// a std::list node plus an entry in each of those vectors (~128 bytes and a
/// heap block): ~176 bytes per op of a chain before any of our fields. Here
/// a vertex costs 24 bytes of adjacency and an edge 16 bytes plus its bundle,
/// all in three flat arrays (vertex bundles, adjacency, edges), and a graph
/// moves in O(1) (Boost 1.74's adjacency_list has no move operations).
///
/// Layout: each vertex keeps the first and last of its out-edges and of its
/// in-edges; each edge record keeps its source and target and the next edge
/// out of its source and into its target. Edges are appended at the tail of
/// both lists, so `out_edges` and `in_edges` list them in insertion order and
/// `edges` lists every edge in insertion order: the orders adjacency_list
/// gives with vecS out-edge lists and a listS edge list.
///
/// What it does not do: remove vertices or edges (passes that drop vertices
/// build a compacted graph, passes/torchlens/passes/detail/graph_ops.hpp).
/// Descriptors stay valid for the graph's lifetime; references to bundles
/// (`g[v]`, `g[e]`) and iterators over `vertices`/`edges` are invalidated by
/// adding a vertex or an edge (as `std::vector` growth invalidates them);
/// `out_edges`/`in_edges` iterators read the graph through its address and
/// survive additions. At most 2³² − 2 vertices and as many edges.

#include <torchlens/graph/array_allocator.hpp>

#include <boost/graph/adjacency_iterator.hpp>
#include <boost/graph/graph_traits.hpp>
#include <boost/graph/properties.hpp>
#include <boost/iterator/counting_iterator.hpp>
#include <boost/iterator/iterator_facade.hpp>
#include <boost/property_map/property_map.hpp>
#include <boost/range/iterator_range.hpp> // make_iterator_range, as adjacency_list.hpp brings it

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace torchlens {

namespace detail {
/// Gives back a vector's unused capacity when more than an eighth of it (plus
/// 64 slots) is unused: one grown by doubling can keep up to half of its
/// storage unused for its lifetime. Moves the elements.
template <class Vector>
void shrink_if_loose(Vector& v) {
  if (v.capacity() - v.size() > v.size() / 8 + 64) v.shrink_to_fit();
}

} // namespace detail

/// Edge descriptor of a Digraph: the edge's index in insertion order.
struct DigraphEdge {
  std::size_t index = static_cast<std::size_t>(-1);
  friend bool operator==(const DigraphEdge&, const DigraphEdge&) = default;
  friend auto operator<=>(const DigraphEdge&, const DigraphEdge&) = default;
};

template <class VertexBundle, class EdgeBundle, class GraphBundle>
class Digraph {
  using Index = std::uint32_t;
  static constexpr Index kNone = static_cast<Index>(-1);

  static constexpr int kOut = 0, kIn = 1;
  /// One vertex's out-edges or in-edges: a list threaded through the records.
  struct EdgeList {
    Index first = kNone, last = kNone, degree = 0;
  };
  struct Adjacency {
    EdgeList lists[2]; // [kOut], [kIn]
  };
  struct EdgeRecord {
    Index source, target;
    Index next[2]; // the next edge out of source [kOut], into target [kIn]
    EdgeBundle bundle;
  };

  /// Walks one vertex's out-edges (`Out`) or in-edges through the records.
  template <bool Out>
  class IncidenceIterator
      : public boost::iterator_facade<IncidenceIterator<Out>, DigraphEdge,
                                      boost::forward_traversal_tag, DigraphEdge> {
   public:
    IncidenceIterator() = default;
    IncidenceIterator(const Digraph* g, Index at) : g_(g), at_(at) {}

   private:
    friend class boost::iterator_core_access;
    DigraphEdge dereference() const { return DigraphEdge{at_}; }
    bool equal(const IncidenceIterator& o) const { return at_ == o.at_; }
    void increment() { at_ = g_->edges_[at_].next[Out ? kOut : kIn]; }
    const Digraph* g_ = nullptr;
    Index at_ = kNone;
  };

 public:
  // ---- boost::graph_traits (read from these members) ----
  using vertex_descriptor = std::size_t;
  using edge_descriptor = DigraphEdge;
  using directed_category = boost::bidirectional_tag;
  using edge_parallel_category = boost::allow_parallel_edge_tag;
  struct traversal_category : boost::bidirectional_graph_tag,
                              boost::adjacency_graph_tag,
                              boost::vertex_list_graph_tag,
                              boost::edge_list_graph_tag {};
  using vertices_size_type = std::size_t;
  using edges_size_type = std::size_t;
  using degree_size_type = std::size_t;
  using out_edge_iterator = IncidenceIterator<true>;
  using in_edge_iterator = IncidenceIterator<false>;
  using vertex_iterator = boost::counting_iterator<std::size_t>;
  class edge_iterator
      : public boost::iterator_facade<edge_iterator, DigraphEdge,
                                      boost::random_access_traversal_tag, DigraphEdge> {
   public:
    edge_iterator() = default;
    explicit edge_iterator(std::size_t i) : i_(i) {}

   private:
    friend class boost::iterator_core_access;
    DigraphEdge dereference() const { return DigraphEdge{i_}; }
    bool equal(const edge_iterator& o) const { return i_ == o.i_; }
    void increment() { ++i_; }
    void decrement() { --i_; }
    void advance(std::ptrdiff_t n) { i_ += static_cast<std::size_t>(n); }
    std::ptrdiff_t distance_to(const edge_iterator& o) const {
      return static_cast<std::ptrdiff_t>(o.i_) - static_cast<std::ptrdiff_t>(i_);
    }
    std::size_t i_ = 0;
  };
  using adjacency_iterator =
      typename boost::adjacency_iterator_generator<Digraph, vertex_descriptor,
                                                   out_edge_iterator>::type;
  using inv_adjacency_iterator =
      typename boost::inv_adjacency_iterator_generator<Digraph, vertex_descriptor,
                                                       in_edge_iterator>::type;
  static vertex_descriptor null_vertex() noexcept { return static_cast<vertex_descriptor>(-1); }

  // ---- bundled properties (boost::vertex_bundle_type and friends) ----
  using vertex_bundled = VertexBundle;
  using edge_bundled = EdgeBundle;
  using graph_bundled = GraphBundle;
  using vertex_property_type = VertexBundle;
  using edge_property_type = EdgeBundle;
  using graph_property_type = GraphBundle;

  Digraph() = default;
  /// `n` default-constructed vertices and no edges (as adjacency_list(n)).
  explicit Digraph(std::size_t n) : vertices_(n), adjacency_(n) { check_room(n); }

  VertexBundle& operator[](vertex_descriptor v) { return vertices_[v]; }
  const VertexBundle& operator[](vertex_descriptor v) const { return vertices_[v]; }
  EdgeBundle& operator[](edge_descriptor e) { return edges_[e.index].bundle; }
  const EdgeBundle& operator[](edge_descriptor e) const { return edges_[e.index].bundle; }
  GraphBundle& operator[](boost::graph_bundle_t) { return graph_; }
  const GraphBundle& operator[](boost::graph_bundle_t) const { return graph_; }

  [[nodiscard]] std::size_t vertex_count() const noexcept { return vertices_.size(); }
  [[nodiscard]] std::size_t edge_count() const noexcept { return edges_.size(); }

  /// Adds a vertex with this bundle (moved in: one move, where a by-value
  /// parameter cost two).
  vertex_descriptor add_vertex(VertexBundle&& bundle) {
    check_room(vertices_.size());
    vertices_.push_back(std::move(bundle));
    adjacency_.emplace_back();
    return vertices_.size() - 1;
  }
  vertex_descriptor add_vertex(const VertexBundle& bundle) {
    return add_vertex(VertexBundle(bundle));
  }
  /// Adds a vertex with a default bundle, built in place.
  vertex_descriptor add_vertex() {
    check_room(vertices_.size());
    vertices_.emplace_back();
    adjacency_.emplace_back();
    return vertices_.size() - 1;
  }

  edge_descriptor add_edge(vertex_descriptor u, vertex_descriptor v, EdgeBundle bundle) {
    if (u >= vertices_.size() || v >= vertices_.size()) {
      throw std::out_of_range("torchlens::Digraph::add_edge: no such vertex");
    }
    check_room(edges_.size());
    const auto e = static_cast<Index>(edges_.size());
    edges_.push_back(EdgeRecord{
        static_cast<Index>(u), static_cast<Index>(v), {kNone, kNone}, std::move(bundle)});
    append(adjacency_[u].lists[kOut], kOut, e);
    append(adjacency_[v].lists[kIn], kIn, e);
    return DigraphEdge{e};
  }

  [[nodiscard]] vertex_descriptor source(edge_descriptor e) const { return edges_[e.index].source; }
  [[nodiscard]] vertex_descriptor target(edge_descriptor e) const { return edges_[e.index].target; }
  [[nodiscard]] std::size_t out_degree(vertex_descriptor v) const {
    return adjacency_[v].lists[kOut].degree;
  }
  [[nodiscard]] std::size_t in_degree(vertex_descriptor v) const {
    return adjacency_[v].lists[kIn].degree;
  }
  [[nodiscard]] std::pair<out_edge_iterator, out_edge_iterator> out_edges(
      vertex_descriptor v) const {
    return {out_edge_iterator(this, adjacency_[v].lists[kOut].first),
            out_edge_iterator(this, kNone)};
  }
  [[nodiscard]] std::pair<in_edge_iterator, in_edge_iterator> in_edges(vertex_descriptor v) const {
    return {in_edge_iterator(this, adjacency_[v].lists[kIn].first), in_edge_iterator(this, kNone)};
  }

  /// Room for `vertices` vertices and `edges` edges without reallocating.
  void reserve(std::size_t vertices, std::size_t edges) {
    vertices_.reserve(vertices);
    adjacency_.reserve(vertices);
    edges_.reserve(edges);
  }
  [[nodiscard]] std::size_t vertex_capacity() const noexcept { return vertices_.capacity(); }
  [[nodiscard]] std::size_t edge_capacity() const noexcept { return edges_.capacity(); }
  /// detail::shrink_if_loose on each array (a graph grown by doubling).
  void shrink_if_loose() {
    detail::shrink_if_loose(vertices_);
    detail::shrink_if_loose(adjacency_);
    detail::shrink_if_loose(edges_);
  }
  void clear() noexcept {
    vertices_.clear();
    adjacency_.clear();
    edges_.clear();
    graph_ = GraphBundle{};
  }
  void swap(Digraph& other) noexcept {
    vertices_.swap(other.vertices_);
    adjacency_.swap(other.adjacency_);
    edges_.swap(other.edges_);
    using std::swap;
    swap(graph_, other.graph_);
  }
  friend void swap(Digraph& a, Digraph& b) noexcept { a.swap(b); }

 private:
  /// Edge e goes to the tail of `list`, linked through the records' next[side].
  void append(EdgeList& list, int side, Index e) {
    if (list.last == kNone) {
      list.first = e;
    } else {
      edges_[list.last].next[side] = e;
    }
    list.last = e;
    ++list.degree;
  }
  static void check_room(std::size_t n) {
    if (n >= kNone - 1) throw std::length_error("torchlens::Digraph: more than 2^32 - 2 elements");
  }

  // (cache-line aligned bundles; huge pages for arrays of 2 MiB and more)
  std::vector<VertexBundle, detail::ArrayAllocator<VertexBundle>> vertices_;
  std::vector<Adjacency, detail::ArrayAllocator<Adjacency>> adjacency_;
  std::vector<EdgeRecord, detail::ArrayAllocator<EdgeRecord>> edges_;
  GraphBundle graph_{};
};

// ---- Boost.Graph's free functions, found by ADL (Boost's algorithms) and, through
// the using-declarations below, as boost::out_edges(v, g) etc. ----

template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::vertex_iterator, typename Digraph<V, E, G>::vertex_iterator>
vertices(const Digraph<V, E, G>& g) {
  return {typename Digraph<V, E, G>::vertex_iterator(0),
          typename Digraph<V, E, G>::vertex_iterator(g.vertex_count())};
}
template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::edge_iterator, typename Digraph<V, E, G>::edge_iterator> edges(
    const Digraph<V, E, G>& g) {
  return {typename Digraph<V, E, G>::edge_iterator(0),
          typename Digraph<V, E, G>::edge_iterator(g.edge_count())};
}
template <class V, class E, class G>
std::size_t num_vertices(const Digraph<V, E, G>& g) {
  return g.vertex_count();
}
template <class V, class E, class G>
std::size_t num_edges(const Digraph<V, E, G>& g) {
  return g.edge_count();
}
template <class V, class E, class G>
std::size_t vertex(std::size_t n, const Digraph<V, E, G>&) {
  return n;
}
template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::out_edge_iterator,
          typename Digraph<V, E, G>::out_edge_iterator>
out_edges(std::size_t v, const Digraph<V, E, G>& g) {
  return g.out_edges(v);
}
template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::in_edge_iterator, typename Digraph<V, E, G>::in_edge_iterator>
in_edges(std::size_t v, const Digraph<V, E, G>& g) {
  return g.in_edges(v);
}
template <class V, class E, class G>
std::size_t out_degree(std::size_t v, const Digraph<V, E, G>& g) {
  return g.out_degree(v);
}
template <class V, class E, class G>
std::size_t in_degree(std::size_t v, const Digraph<V, E, G>& g) {
  return g.in_degree(v);
}
template <class V, class E, class G>
std::size_t degree(std::size_t v, const Digraph<V, E, G>& g) {
  return g.out_degree(v) + g.in_degree(v);
}
template <class V, class E, class G>
std::size_t source(DigraphEdge e, const Digraph<V, E, G>& g) {
  return g.source(e);
}
template <class V, class E, class G>
std::size_t target(DigraphEdge e, const Digraph<V, E, G>& g) {
  return g.target(e);
}
template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::adjacency_iterator,
          typename Digraph<V, E, G>::adjacency_iterator>
adjacent_vertices(std::size_t v, const Digraph<V, E, G>& g) {
  using It = typename Digraph<V, E, G>::adjacency_iterator;
  auto [first, last] = g.out_edges(v);
  auto* graph = const_cast<Digraph<V, E, G>*>(&g); // Boost's iterator takes a non-const pointer
  return {It(first, graph), It(last, graph)};
}
template <class V, class E, class G>
std::pair<typename Digraph<V, E, G>::inv_adjacency_iterator,
          typename Digraph<V, E, G>::inv_adjacency_iterator>
inv_adjacent_vertices(std::size_t v, const Digraph<V, E, G>& g) {
  using It = typename Digraph<V, E, G>::inv_adjacency_iterator;
  auto [first, last] = g.in_edges(v);
  auto* graph = const_cast<Digraph<V, E, G>*>(&g);
  return {It(first, graph), It(last, graph)};
}
/// The first edge u → v, if any (a scan of u's out-edges).
template <class V, class E, class G>
std::pair<DigraphEdge, bool> edge(std::size_t u, std::size_t v, const Digraph<V, E, G>& g) {
  for (auto [it, end] = g.out_edges(u); it != end; ++it) {
    if (g.target(*it) == v) return {*it, true};
  }
  return {DigraphEdge{}, false};
}
template <class V, class E, class G>
std::size_t add_vertex(Digraph<V, E, G>& g) {
  return g.add_vertex();
}
template <class V, class E, class G>
std::size_t add_vertex(const V& bundle, Digraph<V, E, G>& g) {
  return g.add_vertex(bundle);
}
template <class V, class E, class G>
std::size_t add_vertex(V&& bundle, Digraph<V, E, G>& g) {
  return g.add_vertex(std::move(bundle));
}
/// Always adds (parallel edges are allowed): the bool is always true.
template <class V, class E, class G>
std::pair<DigraphEdge, bool> add_edge(std::size_t u, std::size_t v, Digraph<V, E, G>& g) {
  return {g.add_edge(u, v, E{}), true};
}
template <class V, class E, class G>
std::pair<DigraphEdge, bool> add_edge(std::size_t u, std::size_t v, const E& bundle,
                                      Digraph<V, E, G>& g) {
  return {g.add_edge(u, v, bundle), true};
}
template <class V, class E, class G>
std::pair<DigraphEdge, bool> add_edge(std::size_t u, std::size_t v, E&& bundle,
                                      Digraph<V, E, G>& g) {
  return {g.add_edge(u, v, std::move(bundle)), true};
}
/// Vertex indices are the descriptors themselves.
template <class V, class E, class G>
boost::typed_identity_property_map<std::size_t> get(boost::vertex_index_t,
                                                    const Digraph<V, E, G>&) {
  return {};
}
template <class V, class E, class G>
std::size_t get(boost::vertex_index_t, const Digraph<V, E, G>&, std::size_t v) {
  return v;
}
/// Edge indices: insertion order.
struct DigraphEdgeIndexMap {
  using key_type = DigraphEdge;
  using value_type = std::size_t;
  using reference = std::size_t;
  using category = boost::readable_property_map_tag;
  friend std::size_t get(DigraphEdgeIndexMap, DigraphEdge e) { return e.index; }
  std::size_t operator[](DigraphEdge e) const { return e.index; }
};
template <class V, class E, class G>
DigraphEdgeIndexMap get(boost::edge_index_t, const Digraph<V, E, G>&) {
  return {};
}
template <class V, class E, class G>
std::size_t get(boost::edge_index_t, const Digraph<V, E, G>&, DigraphEdge e) {
  return e.index;
}

} // namespace torchlens

namespace boost {

// Qualified calls (boost::out_edges(v, g), as written against adjacency_list)
// find the overloads above.
using torchlens::add_edge;
using torchlens::add_vertex;
using torchlens::adjacent_vertices;
using torchlens::degree;
using torchlens::edge;
using torchlens::edges;
using torchlens::get;
using torchlens::in_degree;
using torchlens::in_edges;
using torchlens::inv_adjacent_vertices;
using torchlens::num_edges;
using torchlens::num_vertices;
using torchlens::out_degree;
using torchlens::out_edges;
using torchlens::source;
using torchlens::target;
using torchlens::vertex;
using torchlens::vertices;

template <class V, class E, class G>
struct property_map<torchlens::Digraph<V, E, G>, vertex_index_t> {
  using type = typed_identity_property_map<std::size_t>;
  using const_type = type;
};
template <class V, class E, class G>
struct property_map<torchlens::Digraph<V, E, G>, edge_index_t> {
  using type = torchlens::DigraphEdgeIndexMap;
  using const_type = type;
};

} // namespace boost

template <>
struct std::hash<torchlens::DigraphEdge> {
  std::size_t operator()(torchlens::DigraphEdge e) const noexcept {
    return std::hash<std::size_t>{}(e.index);
  }
};
