// torchlens::Interned<E> (include/torchlens/graph/interned.hpp): one stored
// copy per distinct sequence while a handle holds it, freed with the last
// handle. Torch-free.
#include <torchlens/graph/model_graph.hpp>

#include "support/doctest.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using torchlens::Interned;
using torchlens::interned_count;
using torchlens::ModuleFrame;
using torchlens::ScalarArg;
using Shape = Interned<std::int64_t>;

TEST_CASE("Interned: equal sequences share one entry, whatever they were made from") {
  const std::vector<std::int64_t> v{2, 3, 224, 224};
  const Shape a = v;
  const Shape b = {2, 3, 224, 224};
  const Shape c = std::span<const std::int64_t>(v.data(), v.size());
  CHECK(&a.get() == &b.get());
  CHECK(&b.get() == &c.get());
  CHECK(&a.get() != &v);
  CHECK(a == b);
  CHECK(a == v);
  CHECK(Shape{2, 3, 224} != a);
  CHECK(a.hash() == b.hash());
  CHECK(sizeof(Shape) == sizeof(void*)); // what makes the field cheaper than a vector
  // reads like the vector
  CHECK(a.size() == 4);
  CHECK(a[2] == 224);
  CHECK(a.at(1) == 3);
  CHECK(a.front() == 2);
  CHECK(a.back() == 224);
  std::int64_t product = 1;
  for (std::int64_t d : a) product *= d;
  CHECK(product == 2 * 3 * 224 * 224);
  CHECK_THROWS_AS((void)a.at(4), std::out_of_range);
  // the empty sequence has no entry
  CHECK(Shape().empty());
  CHECK(Shape() == Shape(std::vector<std::int64_t>{}));
  CHECK(Shape().size() == 0);
  CHECK(Shape().begin() == Shape().end());
}

TEST_CASE("Interned: an entry lives while a handle holds it, and is freed with the last") {
  const std::vector<std::int64_t> unique{7, 19, 1031, 65537}; // no other test interns it
  const std::size_t before = interned_count<std::int64_t>();
  {
    Shape a = unique;
    CHECK(interned_count<std::int64_t>() == before + 1);
    Shape b = a;            // copy: the same entry
    Shape c = std::move(a); // move: the same entry, `a` left empty
    CHECK(a.empty());       // NOLINT(bugprone-use-after-move): moved-from is specified
    CHECK(&b.get() == &c.get());
    {
      const Shape again = unique; // a lookup takes the live entry
      CHECK(&again.get() == &b.get());
      CHECK(interned_count<std::int64_t>() == before + 1);
    }
    b = Shape{1};
    CHECK(interned_count<std::int64_t>() == before + 2);
    CHECK(c == unique);
  }
  // every handle is gone: both entries are freed, and interning again makes a new one
  CHECK(interned_count<std::int64_t>() == before);
  const Shape fresh = unique;
  CHECK(fresh == unique);
  CHECK(interned_count<std::int64_t>() == before + 1);
}

TEST_CASE("Interned: module frames and scalar arguments compare by value") {
  const Interned<ModuleFrame> a = {{"encoder", "Encoder", 1}, {"encoder.layers.0", "Layer", 2}};
  const Interned<ModuleFrame> b = {{"encoder", "Encoder", 1}, {"encoder.layers.0", "Layer", 2}};
  const Interned<ModuleFrame> other_pass = {{"encoder", "Encoder", 1},
                                            {"encoder.layers.0", "Layer", 3}};
  CHECK(&a.get() == &b.get());
  CHECK(a != other_pass);
  CHECK(a.back().address == "encoder.layers.0");
  const Interned<ScalarArg> s1 = {{"other", "1."}, {"alpha", "1"}};
  const Interned<ScalarArg> s2 = {{"other", "1."}, {"alpha", "2"}};
  CHECK(s1 != s2);
  CHECK(s1[1].value == "1");
}

TEST_CASE("Interned: threads interning, copying and dropping the same sequences agree") {
  const std::size_t before = interned_count<std::int64_t>();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &mismatches] {
      // two of the threads intern as a capture does (a RetainNewEntries scope:
      // entries they take are cached per thread, with references of their own)
      std::optional<torchlens::detail::RetainNewEntries> retain;
      if (t % 2 == 1) retain.emplace();
      for (int i = 0; i < 20000; ++i) {
        // a handful of keys, made and dropped over and over: entries die and
        // are made again while other threads look them up
        const std::int64_t k = 900001 + i % 5;
        Shape s = {k, k + 1};
        Shape copy = s;
        if (copy.size() != 2 || copy[0] != k || copy[1] != k + 1) ++mismatches[t];
        if (i % 3 == 0) {
          const Shape again = {k, k + 1};
          if (again != s) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) CHECK(m == 0);
  CHECK(interned_count<std::int64_t>() == before); // nothing leaked, nothing freed twice
}

TEST_CASE("Interned: a RetainNewEntries scope keeps the thread's last new entries alive") {
  const std::size_t before = interned_count<std::int64_t>();
  // on a thread of its own: its retained entries start empty and go with it
  std::thread([before] {
    const void* first = nullptr;
    {
      const torchlens::detail::RetainNewEntries retain;
      const Shape s = {424242, 1, 2};
      first = s.identity();
    }
    // the handle is gone; the entry stays, and interning it again finds it
    CHECK(interned_count<std::int64_t>() == before + 1);
    Shape again = {424242, 1, 2};
    CHECK(again.identity() == first);
    // outside a scope nothing more is kept: a new sequence dies with its handle
    { const Shape other = {424242, 9}; }
    CHECK(interned_count<std::int64_t>() == before + 1);
    // a scope keeps the last 1 024 entries of each element type: 1 024 newer
    // ones push the first out, which then dies with `again`, its last handle
    {
      const torchlens::detail::RetainNewEntries retain;
      for (std::int64_t i = 0; i < 1024; ++i) (void)Shape{424243, i};
    }
    CHECK(interned_count<std::int64_t>() == before + 1025);
    {
      const Shape drop = std::move(again);
      (void)drop;
    }
    CHECK(interned_count<std::int64_t>() == before + 1024);
  }).join();
  // the thread's retained references went with it
  CHECK(interned_count<std::int64_t>() == before);
}

TEST_CASE("Interned: inside a scope, a thread's last entries are cached with references") {
  const std::size_t before = interned_count<std::int64_t>();
  std::thread([before] {
    // made outside any scope: no ring keeps it, its handle does
    std::optional<Shape> made(Shape{515151, 3});
    const void* entry = made->identity();
    {
      const torchlens::detail::RetainNewEntries retain;
      // found in the table, then in the thread's cache: one entry throughout
      const Shape a = {515151, 3};
      const Shape b = {515151, 3};
      CHECK(a.identity() == entry);
      CHECK(b.identity() == entry);
      CHECK(a == *made);
    }
    // every handle gone: the cache's reference alone keeps the entry (the
    // thread's last 16 entries of each element type), and a look-up finds it
    made.reset();
    CHECK(interned_count<std::int64_t>() == before + 1);
    const Shape again = {515151, 3};
    CHECK(again.identity() == entry);
    {
      const torchlens::detail::RetainNewEntries retain;
      // a different sequence is not taken for it, not even one of the same
      // hash (made here: the second item chosen so that the hashes meet)
      const std::int64_t first = 616161;
      const std::size_t target = torchlens::detail::hash_items<std::int64_t>(again.get());
      std::size_t h = 2;
      torchlens::detail::hash_combine(h, torchlens::intern_hash(first));
      const auto second =
          static_cast<std::int64_t>((target ^ h) - 0x9e3779b97f4a7c15ULL - (h << 6) - (h >> 2));
      const Shape colliding = {first, second};
      REQUIRE(colliding.hash() == again.hash());
      CHECK(colliding.identity() != entry);
      CHECK(colliding.size() == 2);
      CHECK(colliding[0] == first);
      CHECK(colliding[1] == second);
      const Shape other = {515151, 4};
      CHECK(other.identity() != entry);
      CHECK(other[1] == 4);
    }
    // the two sequences new in the second scope stay too (the ring of new entries)
    CHECK(interned_count<std::int64_t>() == before + 3);
  }).join();
  // the thread's cached references went with it
  CHECK(interned_count<std::int64_t>() == before);
}

TEST_CASE("Interned: an OpNode's repeated sequences are shared by its copies") {
  torchlens::OpNode a;
  a.shape = {1, 16};
  a.modules = {{"encoder.layers.0", "TransformerEncoderLayer", 2}};
  a.scalar_args = {{"other", "1."}, {"alpha", "1"}};
  const torchlens::OpNode b = a;
  CHECK(&b.shape.get() == &a.shape.get());
  CHECK(&b.modules.get() == &a.modules.get());
  CHECK(&b.scalar_args.get() == &a.scalar_args.get());
  CHECK(b.shape == std::vector<std::int64_t>{1, 16});
}
