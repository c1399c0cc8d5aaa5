#pragma once
/// \file
/// torchlens::Interned<E>: an immutable sequence of E stored once per process
/// while anything holds it. What a log repeats on vertex after vertex (shapes,
/// module containment, the parameters an op read, its printed scalar
/// arguments, intervention notes) takes one pointer per vertex (8 bytes, where
/// a std::vector is 24 plus its heap block) to the one stored copy.
///
/// It reads like a `const std::vector<E>&` (it converts to one and to
/// std::span<const E>, iterates, indexes, compares); it is immutable: assign a
/// new sequence to change it. Unlike Name, an entry is reference-counted and
/// freed with its last handle, so sequences that never repeat (the shapes of
/// inputs whose sizes change from call to call, a scalar computed from the
/// data) do not accumulate in a long-running process (a capture keeps the last
/// thousand or so it made a while longer: detail::RetainNewEntries). Copying a
/// handle is one atomic increment; interning a sequence is one hash and one
/// lookup under a shared lock (and an entry, the first time). Torch-free,
/// header-only.

#include <torchlens/graph/name.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torchlens {

// ---- element hashes (a type stored in an Interned provides intern_hash) ----
inline std::size_t intern_hash(std::int64_t v) noexcept {
  return std::hash<std::int64_t>{}(v);
}
inline std::size_t intern_hash(const std::string& s) noexcept {
  return std::hash<std::string_view>{}(s);
}
inline std::size_t intern_hash(const Name& n) noexcept {
  return n.hash();
}

namespace detail {

inline void hash_combine(std::size_t& seed, std::size_t h) noexcept {
  seed ^= h + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
}

template <class E>
std::size_t hash_items(std::span<const E> items) noexcept {
  std::size_t h = items.size();
  for (const E& e : items) hash_combine(h, intern_hash(e));
  return h;
}

template <class E>
struct InternEntry {
  std::vector<E> items;
  std::size_t hash = 0;
  std::atomic<std::uint32_t> refs{1};
};

/// Depth of RetainNewEntries scopes open on this thread.
inline thread_local int retain_new_entries = 0;

/// One table per element type. An entry whose count reaches zero is dying: no
/// lookup takes it again (a lookup that finds it makes a new entry), and the
/// handle that dropped it to zero, the only one, erases and frees it.
template <class E>
class InternTable {
 public:
  using Entry = InternEntry<E>;

  static InternTable& instance() {
    static InternTable* table = new InternTable(); // never destroyed: handles outlive statics
    return *table;
  }

  Entry* acquire(std::span<const E> items) {
    const std::size_t hash = hash_items(items);
    if (retain_new_entries == 0) return acquire_shared(items, hash);
    // inside a capture: the entries this thread took last, without the lock
    Recent& recent = this->recent();
    if (Entry* e = recent.find(items, hash)) {
      e->refs.fetch_add(1, std::memory_order_relaxed); // the cache's reference keeps it alive
      return e;
    }
    Entry* e = acquire_shared(items, hash);
    recent.put(e);
    return e;
  }

  /// Called once per entry, by the handle that dropped its count to zero.
  void release(Entry* e) noexcept {
    {
      std::unique_lock lock(mutex_);
      if (auto it = index_.find(Key{e->items, e->hash}); it != index_.end() && it->second == e)
        index_.erase(it);
    }
    delete e;
  }

  /// Entries alive now (tests).
  std::size_t size() const {
    std::shared_lock lock(mutex_);
    return index_.size();
  }

 private:
  /// The table's own look-up: under the shared lock, else inserting under the
  /// exclusive one.
  Entry* acquire_shared(std::span<const E> items, std::size_t hash) {
    const Key key{items, hash};
    {
      std::shared_lock lock(mutex_);
      if (auto it = index_.find(key); it != index_.end() && try_ref(*it->second)) return it->second;
    }
    Entry* e = nullptr;
    {
      std::unique_lock lock(mutex_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        if (try_ref(*it->second)) return it->second;
        index_.erase(it); // dying: its last handle frees it, finding this slot taken
      }
      e = new Entry{std::vector<E>(items.begin(), items.end()), key.hash};
      index_.emplace(Key{e->items, e->hash}, e);
    }
    if (retain_new_entries > 0) retained().keep(e);
    return e;
  }

  struct Key {
    std::span<const E> items;
    std::size_t hash;
    friend bool operator==(const Key& a, const Key& b) {
      return a.hash == b.hash && std::ranges::equal(a.items, b.items);
    }
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept { return k.hash; }
  };

  /// The entries this thread made inside a RetainNewEntries scope, one
  /// reference each, the last kRetained of them: a log's entries then outlive
  /// the log, and the next capture of the same model finds them instead of
  /// making and freeing them again (an allocation, an exclusive lock and an
  /// erase each).
  class Retained {
   public:
    static constexpr std::size_t kRetained = 1024;
    void keep(Entry* e) {
      e->refs.fetch_add(1, std::memory_order_relaxed);
      if (ring_.size() < kRetained) {
        ring_.push_back(e);
        return;
      }
      std::swap(ring_[next_], e);
      next_ = (next_ + 1) % kRetained;
      drop(e);
    }
    ~Retained() {
      for (Entry* e : ring_) drop(e);
    }

   private:
    std::vector<Entry*> ring_;
    std::size_t next_ = 0;
  };
  static Retained& retained() {
    thread_local Retained r;
    return r;
  }

  /// The last entries this thread acquired inside a RetainNewEntries scope, one
  /// per slot by hash, each with a reference of the cache's own (so none dies
  /// while cached): a capture reads the same shapes, module paths and parameter
  /// lists op after op, and a hit costs a compare and an increment instead of
  /// the shared lock and the index. 16 slots per element type and thread,
  /// released when the thread ends.
  class Recent {
   public:
    static constexpr std::size_t kSlots = 16;
    [[nodiscard]] Entry* find(std::span<const E> items, std::size_t hash) const noexcept {
      Entry* e = slots_[hash % kSlots];
      return e != nullptr && e->hash == hash && std::ranges::equal(e->items, items) ? e : nullptr;
    }
    void put(Entry* e) noexcept {
      e->refs.fetch_add(1, std::memory_order_relaxed);
      std::swap(slots_[e->hash % kSlots], e);
      if (e != nullptr) drop(e);
    }
    ~Recent() {
      for (Entry* e : slots_) {
        if (e != nullptr) drop(e);
      }
    }

   private:
    std::array<Entry*, kSlots> slots_{};
  };
  static Recent& recent() {
    thread_local Recent r;
    return r;
  }

  static void drop(Entry* e) noexcept {
    if (e->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) instance().release(e);
  }

  static bool try_ref(Entry& e) noexcept {
    std::uint32_t r = e.refs.load(std::memory_order_relaxed);
    while (r != 0) {
      if (e.refs.compare_exchange_weak(r, r + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  }

  InternTable() = default;
  mutable std::shared_mutex mutex_;
  std::unordered_map<Key, Entry*, KeyHash> index_;
};

template <class E>
inline const std::vector<E> empty_items{};

/// While one is open on a thread, every entry that thread adds to an
/// InternTable stays alive for a while after its last handle: the table keeps
/// a reference to the last 1 024 of each element type the thread made. Inside
/// one, the thread also looks in its cache of the last entries it acquired (16
/// per element type, each with a reference of the cache's own) before taking
/// the table's lock. CaptureSession::capture opens one, so that capturing the
/// same model again finds its shapes, module paths and parameters instead of
/// making them anew, and an op finds the shape the op before it had.
class RetainNewEntries {
 public:
  RetainNewEntries() noexcept { ++retain_new_entries; }
  ~RetainNewEntries() { --retain_new_entries; }
  RetainNewEntries(const RetainNewEntries&) = delete;
  RetainNewEntries& operator=(const RetainNewEntries&) = delete;
};

} // namespace detail

template <class E>
class Interned {
  using Entry = detail::InternEntry<E>;
  using Table = detail::InternTable<E>;

 public:
  using value_type = E;
  using size_type = std::size_t;
  using const_iterator = typename std::vector<E>::const_iterator;
  using iterator = const_iterator;

  /// The empty sequence (no entry: free to make and copy).
  constexpr Interned() noexcept = default;
  Interned(std::span<const E> items)
      : e_(items.empty() ? nullptr : Table::instance().acquire(items)) {}
  Interned(const std::vector<E>& items) : Interned(std::span<const E>(items)) {}
  Interned(std::initializer_list<E> items)
      : Interned(std::span<const E>(items.begin(), items.size())) {}

  Interned(const Interned& o) noexcept : e_(o.e_) {
    if (e_) e_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  Interned(Interned&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Interned& operator=(const Interned& o) noexcept {
    if (e_ != o.e_) Interned(o).swap(*this); // the same entry: no count to change
    return *this;
  }
  Interned& operator=(Interned&& o) noexcept {
    Interned(std::move(o)).swap(*this);
    return *this;
  }
  ~Interned() {
    if (e_ && e_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) Table::instance().release(e_);
  }
  void swap(Interned& o) noexcept { std::swap(e_, o.e_); }

  const std::vector<E>& get() const noexcept { return e_ ? e_->items : detail::empty_items<E>; }
  operator const std::vector<E>&() const noexcept { return get(); }
  operator std::span<const E>() const noexcept { return get(); }
  /// A copy to change and assign back.
  std::vector<E> vec() const { return get(); }

  // ---- the read-only part of std::vector ----
  const_iterator begin() const noexcept { return get().begin(); }
  const_iterator end() const noexcept { return get().end(); }
  size_type size() const noexcept { return e_ ? e_->items.size() : 0; }
  bool empty() const noexcept { return e_ == nullptr; }
  auto rbegin() const noexcept { return get().rbegin(); }
  auto rend() const noexcept { return get().rend(); }
  const E& operator[](size_type i) const noexcept { return e_->items[i]; }
  const E& at(size_type i) const { return get().at(i); }
  const E& front() const noexcept { return e_->items.front(); }
  const E& back() const noexcept { return e_->items.back(); }
  const E* data() const noexcept { return get().data(); }
  std::size_t hash() const noexcept { return e_ ? e_->hash : detail::hash_items<E>({}); }
  /// The stored entry (nullptr when empty): equal identities mean equal
  /// sequences; equal sequences may, rarely, have two entries (one dying).
  /// Unique only while some handle holds the entry.
  const void* identity() const noexcept { return e_; }

  // ---- comparisons: by the entry, by the items when two entries differ ----
  friend bool operator==(const Interned& a, const Interned& b) noexcept {
    return a.e_ == b.e_ || a.get() == b.get();
  }
  friend bool operator==(const Interned& a, const std::vector<E>& b) noexcept {
    return a.get() == b;
  }

 private:
  Entry* e_ = nullptr;
};

template <class E>
std::size_t intern_hash(const Interned<E>& v) noexcept {
  return v.hash();
}

/// Live entries of one element type's table (tests, diagnostics).
template <class E>
std::size_t interned_count() {
  return detail::InternTable<E>::instance().size();
}

} // namespace torchlens

template <class E>
struct std::hash<torchlens::Interned<E>> {
  std::size_t operator()(const torchlens::Interned<E>& v) const noexcept { return v.hash(); }
};
