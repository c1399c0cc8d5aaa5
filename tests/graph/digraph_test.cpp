// torchlens::Digraph (include/torchlens/graph/digraph.hpp), ModelGraph's
// storage: Boost.Graph's concept checks, its orders and descriptors, and
// Boost's own algorithms run on it against answers worked out by hand.
// Torch-free.
#include <torchlens/graph/model_graph.hpp>

#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/graph_concepts.hpp>
#include <boost/graph/reverse_graph.hpp>
#include <boost/graph/strong_components.hpp>
#include <boost/graph/topological_sort.hpp>

#include "support/doctest.hpp"
#include "support/huge_pages.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

using namespace torchlens;
using torchlens::test::first_page;
using torchlens::test::holds_huge_page;
using torchlens::test::huge_page_eligible;

// What Boost's algorithms require of a graph, checked at compile time.
BOOST_CONCEPT_ASSERT((boost::IncidenceGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::BidirectionalGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::AdjacencyGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::VertexListGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::EdgeListGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::VertexAndEdgeListGraphConcept<ModelGraph>));
BOOST_CONCEPT_ASSERT((boost::AdjacencyMatrixConcept<ModelGraph>)); // boost::edge(u, v, g)
BOOST_CONCEPT_ASSERT(
    (boost::ReadablePropertyGraphConcept<ModelGraph, Vertex, boost::vertex_index_t>));
BOOST_CONCEPT_ASSERT((boost::ReadablePropertyGraphConcept<ModelGraph, Edge, boost::edge_index_t>));
BOOST_CONCEPT_ASSERT((boost::BidirectionalGraphConcept<boost::reverse_graph<ModelGraph>>));

namespace {

/// 0 → 1, 0 → 2, 1 → 3, 2 → 3, 0 → 3, 1 → 3 (a parallel edge), added in that order.
ModelGraph diamond() {
  ModelGraph g;
  for (int i = 0; i < 4; ++i) {
    OpNode n;
    std::string name = std::to_string(i);
    name.insert(name.begin(), 'v'); // not "v" + ...: GCC 12's false -Wrestrict
    n.io_address = name;
    boost::add_vertex(std::move(n), g);
  }
  const std::pair<int, int> edges[] = {{0, 1}, {0, 2}, {1, 3}, {2, 3}, {0, 3}, {1, 3}};
  int arg = 0;
  for (auto [u, v] : edges) {
    TensorEdge e;
    e.arg_pos = arg++;
    boost::add_edge(static_cast<Vertex>(u), static_cast<Vertex>(v), e, g);
  }
  return g;
}

std::vector<int> out_args(const ModelGraph& g, Vertex v) {
  std::vector<int> out;
  for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) out.push_back(g[e].arg_pos);
  return out;
}
std::vector<int> in_args(const ModelGraph& g, Vertex v) {
  std::vector<int> out;
  for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) out.push_back(g[e].arg_pos);
  return out;
}

} // namespace

TEST_CASE("out- and in-edges list in insertion order, edges() lists every edge in order") {
  const ModelGraph g = diamond();
  CHECK(boost::num_vertices(g) == 4);
  CHECK(boost::num_edges(g) == 6);
  CHECK(out_args(g, 0) == std::vector<int>{0, 1, 4});
  CHECK(out_args(g, 1) == std::vector<int>{2, 5});
  CHECK(out_args(g, 3).empty());
  CHECK(in_args(g, 3) == std::vector<int>{2, 3, 4, 5});
  CHECK(in_args(g, 0).empty());
  CHECK(boost::out_degree(1, g) == 2);
  CHECK(boost::in_degree(3, g) == 4);
  CHECK(boost::degree(1, g) == 3);
  std::vector<std::pair<Vertex, Vertex>> listed;
  for (auto e : boost::make_iterator_range(boost::edges(g))) {
    listed.emplace_back(boost::source(e, g), boost::target(e, g));
  }
  CHECK(listed ==
        std::vector<std::pair<Vertex, Vertex>>{{0, 1}, {0, 2}, {1, 3}, {2, 3}, {0, 3}, {1, 3}});
  std::vector<Vertex> next;
  for (auto v : boost::make_iterator_range(boost::adjacent_vertices(0, g))) next.push_back(v);
  CHECK(next == std::vector<Vertex>{1, 2, 3});
  std::vector<Vertex> prev;
  for (auto v : boost::make_iterator_range(boost::inv_adjacent_vertices(3, g))) prev.push_back(v);
  CHECK(prev == std::vector<Vertex>{1, 2, 0, 1});
}

TEST_CASE("boost::edge finds the first u → v edge; descriptors survive additions") {
  ModelGraph g = diamond();
  auto [e13, found] = boost::edge(1, 3, g);
  REQUIRE(found);
  CHECK(g[e13].arg_pos == 2); // the first of the two parallel edges
  CHECK_FALSE(boost::edge(3, 1, g).second);
  const Vertex v4 = boost::add_vertex(g);
  auto [e34, added] = boost::add_edge(3, v4, g);
  CHECK(added);
  for (int i = 0; i < 100; ++i) boost::add_edge(v4, 0, g); // reallocates the edge array
  CHECK(g[e13].arg_pos == 2);
  CHECK(boost::source(e34, g) == 3);
  CHECK(boost::target(e34, g) == v4);
  CHECK(boost::out_degree(v4, g) == 100);
  CHECK(boost::in_degree(0, g) == 100);
  CHECK_THROWS_AS(boost::add_edge(0, 99, g), std::out_of_range);
}

TEST_CASE("an in-edge walk survives edges added to other vertices while it runs") {
  ModelGraph g = diamond();
  std::vector<int> seen;
  for (auto [it, end] = boost::in_edges(3, g); it != end; ++it) {
    seen.push_back(g[*it].arg_pos);
    boost::add_edge(0, 1, g); // grows the edge array under the walk
  }
  CHECK(seen == std::vector<int>{2, 3, 4, 5});
}

TEST_CASE("Boost's algorithms on it: BFS on the graph and its reverse, topological sort, SCCs") {
  const ModelGraph g = diamond();
  std::vector<int> dist(boost::num_vertices(g), -1);
  dist[3] = 0;
  boost::breadth_first_search(
      boost::make_reverse_graph(g), Vertex{3},
      boost::visitor(boost::make_bfs_visitor(boost::record_distances(
          boost::make_iterator_property_map(dist.begin(), boost::get(boost::vertex_index, g)),
          boost::on_tree_edge()))));
  CHECK(dist == std::vector<int>{1, 1, 1, 0}); // 0 → 3 is a direct edge

  std::vector<Vertex> order;
  boost::topological_sort(g, std::back_inserter(order));
  CHECK(order.front() == 3); // reverse topological: the sink first
  CHECK(order.back() == 0);

  ModelGraph cyclic = diamond();
  boost::add_edge(3, 1, cyclic); // 1 → 3 → 1
  std::vector<int> component(boost::num_vertices(cyclic));
  const int count = boost::strong_components(
      cyclic, boost::make_iterator_property_map(component.begin(),
                                                boost::get(boost::vertex_index, cyclic)));
  CHECK(count == 3); // {0}, {2}, {1, 3}
  CHECK(component[1] == component[3]);
  CHECK(component[0] != component[1]);
  CHECK_THROWS_AS(boost::topological_sort(cyclic, std::back_inserter(order)), boost::not_a_dag);
}

TEST_CASE("copies are deep, moves and swaps take the storage, bundles stay with their vertex") {
  ModelGraph g = diamond();
  g[boost::graph_bundle].model_name = "diamond";
  ModelGraph copy = g;
  copy[Vertex{0}].io_address = "changed";
  CHECK(g[Vertex{0}].io_address == "v0");
  ModelGraph moved = std::move(copy);
  CHECK(moved[Vertex{0}].io_address == "changed");
  CHECK(moved[boost::graph_bundle].model_name == "diamond");
  CHECK(boost::num_edges(moved) == 6);
  ModelGraph other(2);
  other.swap(moved);
  CHECK(boost::num_vertices(other) == 4);
  CHECK(boost::num_vertices(moved) == 2);
  CHECK(boost::num_edges(moved) == 0);
  CHECK(out_args(other, 0) == std::vector<int>{0, 1, 4});
  other.reserve(1000, 1000);
  CHECK(other.vertex_capacity() >= 1000);
  other.shrink_if_loose(); // 996 unused slots of 1000: trimmed
  CHECK(other.vertex_capacity() == 4);
  CHECK(other.edge_capacity() == 6);
  CHECK(in_args(other, 3) == std::vector<int>{2, 3, 4, 5});
}

TEST_CASE("vertex bundles sit on cache lines through growth, copies, swaps and trimming") {
  // OpNode is alignas(64); the graph keeps its bundles in a block from plain
  // operator new, aligned inside it (detail::ArrayAllocator)
  static_assert(alignof(OpNode) == 64);
  const auto aligned = [](const ModelGraph& g) {
    for (Vertex v = 0; v < boost::num_vertices(g); ++v) {
      if (reinterpret_cast<std::uintptr_t>(&g[v]) % alignof(OpNode) != 0) return false;
    }
    return true;
  };
  ModelGraph g;
  for (int i = 0; i < 300; ++i) { // grown one vertex at a time, through many reallocations
    OpNode n;
    n.id = static_cast<std::size_t>(i);
    n.shape = std::vector<std::int64_t>{i, 2};
    boost::add_vertex(std::move(n), g);
    REQUIRE(aligned(g));
  }
  ModelGraph copy = g;
  CHECK(aligned(copy));
  ModelGraph small = diamond();
  small.reserve(100, 10);
  CHECK(aligned(small));
  small.swap(copy);
  CHECK(aligned(small));
  CHECK(aligned(copy));
  small.shrink_if_loose();
  CHECK(aligned(small));
  // and the bundles came through every move intact
  for (Vertex v = 0; v < boost::num_vertices(small); ++v) {
    CHECK(small[v].id == v);
    CHECK(small[v].shape == std::vector<std::int64_t>{static_cast<std::int64_t>(v), 2});
  }
  CHECK(copy[Vertex{3}].io_address == "v3");

  // the allocator alone: every size, aligned and writable to its last byte
  detail::ArrayAllocator<OpNode> alloc;
  for (std::size_t n = 1; n < 40; ++n) {
    OpNode* p = alloc.allocate(n);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    std::memset(static_cast<void*>(p), 0xab, n * sizeof(OpNode)); // ASan checks the bounds
    alloc.deallocate(p, n);
  }
}

TEST_CASE("arrays of 2 MiB and more are advised to take huge pages; smaller ones are not") {
  // A 10^5-op graph's bundles are ~20 MB swept a dozen times by the pipeline:
  // on huge pages (Linux's madvise mode gives them to ranges that ask) its
  // sweeps stop missing the TLB every few vertices.
  // the fewest vertices that fill 2 MiB
  constexpr std::size_t per_page = (detail::kHugePageBytes + sizeof(OpNode) - 1) / sizeof(OpNode);
  detail::ArrayAllocator<OpNode> alloc;
  int advised_seen = 0;
  for (const std::size_t n : {per_page / 2, per_page - 1, per_page, 3 * per_page + 7}) {
    OpNode* p = alloc.allocate(n);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % alignof(OpNode) == 0);
    const bool large = n * sizeof(OpNode) >= detail::kHugePageBytes;
#if defined(__linux__)
    CHECK(detail::takes_huge_pages(n * sizeof(OpNode)) == large);
#endif
    // touched first, as a vector's elements are: the kernel reports the advice
    // on the mapping
    std::memset(static_cast<void*>(p), 0xcd, n * sizeof(OpNode)); // ASan checks the bounds
    const int eligible = huge_page_eligible(first_page(p));
    if (detail::takes_huge_pages(n * sizeof(OpNode)) && holds_huge_page(p, n * sizeof(OpNode)) &&
        eligible >= 0) {
      CHECK(eligible == 1);
      ++advised_seen;
    }
    alloc.deallocate(p, n);
  }
  // the largest holds a 2 MiB stretch wherever it lies
  MESSAGE("large arrays whose advice the kernel reported (of 1-2): " << advised_seen);
  // a small array of a plain type: plain operator new
  detail::ArrayAllocator<std::uint32_t> words;
  std::uint32_t* w = words.allocate(5);
  std::memset(w, 0, 5 * sizeof(std::uint32_t));
  words.deallocate(w, 5);

  // a graph grown past the threshold keeps its bundles aligned and intact, and
  // its vertex array (6 MiB and more: it holds a 2 MiB stretch) is advised
  ModelGraph g;
  for (std::size_t i = 0; i < 3 * per_page; ++i) {
    OpNode n;
    n.id = i;
    boost::add_vertex(std::move(n), g);
  }
  CHECK(reinterpret_cast<std::uintptr_t>(&g[Vertex{0}]) % alignof(OpNode) == 0);
  const bool advises = detail::takes_huge_pages(detail::kHugePageBytes);
  if (advises) CHECK(huge_page_eligible(first_page(&g[Vertex{0}])) != 0);
  bool ids = true;
  for (Vertex v = 0; v < boost::num_vertices(g); ++v) ids = ids && g[v].id == v;
  CHECK(ids);
  ModelGraph copy = g;
  CHECK(copy[Vertex{per_page}].id == per_page);
  if (advises) CHECK(huge_page_eligible(first_page(&copy[Vertex{0}])) != 0);
}
