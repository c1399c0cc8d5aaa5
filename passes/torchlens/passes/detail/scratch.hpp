#pragma once
/// \file
/// Private helper of the standard passes: one pass run's scratch memory as a
/// few large blocks on transparent huge pages, freed together.
///
/// A pass on a large graph keeps dozens of tables of one entry per vertex
/// (group-recurrences: ~30 of 4 bytes). Each is a separate `std::vector` of
/// 0.4 MB at 10⁵ vertices: too small for a huge page, so a fresh run faults
/// them in 4 KiB at a time (~3 000 faults at 10⁵, 1.6 µs each on a virtual
/// machine's nested paging) and sweeps them through the TLB a page at a time.
/// A `ScratchArena` hands such tables out of blocks of 2 MiB multiples,
/// aligned to 2 MiB and advised `MADV_HUGEPAGE` (Linux; elsewhere, plain
/// operator new), so that the kernel backs them with huge pages where it can.
///
/// The arena is a bump allocator: a table given back is not reused until the
/// arena goes, so it serves state that lives one run (a table that grows
/// leaves its old storage behind: at most as much again as the final sizes).
/// A thread keeps its last arena's largest block for its next arena (given
/// back to the kernel lazily, MADV_FREE): a run after a run of the same size
/// faults nothing in, as heap memory glibc kept would not either.
/// `ScratchVector<T>` is `std::vector` with `ScratchAllocator`, which takes the
/// arena a `ScratchScope` on its thread names when it is constructed (none:
/// plain operator new, exactly `std::allocator`). A workspace whose members are
/// `ScratchVector`s, constructed inside a scope, has all of them on the arena
/// without naming it member by member.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <vector>

#include <torchlens/graph/array_allocator.hpp>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace torchlens::passes::detail {

/// Bump allocation from blocks of whole huge pages, all freed with the arena.
class ScratchArena {
 public:
  /// The first block holds at least `expected_bytes` (rounded up to 2 MiB):
  /// pages of it never touched are never faulted in, so an estimate on the
  /// high side costs only address space.
  /// A block the thread kept from its last arena is taken when it is large
  /// enough (its pages are mapped already: nothing to fault in).
  explicit ScratchArena(std::size_t expected_bytes) : next_block_(round_up(expected_bytes)) {
    Kept& kept = kept_block();
    if (kept.at != nullptr && kept.bytes >= next_block_) {
      start_block(kept.at, kept.bytes);
      kept = {};
    }
  }
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  /// Frees every block but the largest, which the thread keeps for its next
  /// arena instead of the one it kept before, if larger (the kept block's
  /// pages are given back lazily: the kernel may reclaim them under memory
  /// pressure, and otherwise they stay mapped).
  ~ScratchArena() {
    Block* largest = last_;
    for (Block* b = last_; b != nullptr; b = b->earlier) {
      if (b->bytes > largest->bytes) largest = b;
    }
    for (Block* b = last_; b != nullptr;) {
      Block* earlier = b->earlier;
      if (b != largest) release(b, b->bytes);
      b = earlier;
    }
    if (largest == nullptr) return;
    Kept& kept = kept_block();
    if (kept.bytes > largest->bytes) {
      release(largest, largest->bytes);
      return;
    }
    if (kept.at != nullptr) release(kept.at, kept.bytes);
    kept = {largest, largest->bytes};
    give_back_lazily(largest, largest->bytes);
  }

  /// `bytes` aligned to `align` (a power of two, at most 4 KiB).
  void* allocate(std::size_t bytes, std::size_t align) {
    std::uintptr_t at = (cur_ + align - 1) & ~std::uintptr_t{align - 1};
    if (last_ == nullptr || at > end_ || bytes > end_ - at) {
      grow(bytes + align);
      at = (cur_ + align - 1) & ~std::uintptr_t{align - 1};
    }
    cur_ = at + bytes;
    return reinterpret_cast<void*>(at);
  }

  /// Bytes of address space the arena's blocks hold.
  [[nodiscard]] std::size_t reserved() const noexcept { return reserved_; }
  /// How many blocks it holds.
  [[nodiscard]] std::size_t blocks() const noexcept { return blocks_; }

 private:
  /// A block's header, at its start.
  struct Block {
    Block* earlier;
    std::size_t bytes; ///< the whole block, header included
  };

  static std::size_t round_up(std::size_t bytes) {
    constexpr std::size_t page = torchlens::detail::kHugePageBytes;
    if (bytes > std::size_t(-1) - 2 * page) throw std::bad_alloc();
    return bytes < page ? page : (bytes + page - 1) & ~(page - 1);
  }

  /// A block kept between arenas (its header's words may read as zero once the
  /// kernel has reclaimed its pages: its place and size are kept here).
  struct Kept {
    void* at = nullptr;
    std::size_t bytes = 0;
  };
  /// The thread's kept block, freed when the thread ends.
  static Kept& kept_block() noexcept {
    struct Holder {
      Kept kept;
      Holder() = default;
      Holder(const Holder&) = delete;
      Holder& operator=(const Holder&) = delete;
      ~Holder() {
        if (kept.at != nullptr) release(kept.at, kept.bytes);
      }
    };
    thread_local Holder holder;
    return holder.kept;
  }

  void grow(std::size_t need) {
    const std::size_t bytes = round_up(std::max(need + sizeof(Block), next_block_));
    start_block(acquire(bytes), bytes);
  }
  /// Allocation goes on in the block at `at` of `bytes`.
  void start_block(void* at, std::size_t bytes) {
    Block* b = static_cast<Block*>(at);
    b->earlier = last_;
    b->bytes = bytes;
    last_ = b;
    cur_ = reinterpret_cast<std::uintptr_t>(b) + sizeof(Block);
    end_ = reinterpret_cast<std::uintptr_t>(b) + bytes;
    reserved_ += bytes;
    ++blocks_;
    next_block_ = 2 * bytes; // a few blocks however large the run grows
  }

  /// `bytes` (a multiple of 2 MiB) aligned to 2 MiB: whole huge pages.
  static void* acquire(std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr std::size_t page = torchlens::detail::kHugePageBytes;
    // map 2 MiB more, and unmap what lies before and after the aligned stretch
    void* m =
        ::mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const auto lo = reinterpret_cast<std::uintptr_t>(m);
    const auto at = (lo + page - 1) & ~std::uintptr_t{page - 1};
    if (at > lo) ::munmap(m, at - lo);
    ::munmap(reinterpret_cast<void*>(at + bytes), lo + page - at); // at < lo + page: never empty
    torchlens::detail::advise_huge_pages(reinterpret_cast<void*>(at), bytes);
    return reinterpret_cast<void*>(at);
#else
    return ::operator new(bytes);
#endif
  }
  static void release(void* at, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    ::munmap(at, bytes);
#else
    (void)bytes;
    ::operator delete(at);
#endif
  }
  /// Lets the kernel reclaim the pages of a kept block when memory runs short
  /// (Linux 4.5+: MADV_FREE; a page written again before that stays as it is).
  static void give_back_lazily(void* at, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MADV_FREE)
    (void)::madvise(at, bytes, MADV_FREE);
#else
    (void)at;
    (void)bytes;
#endif
  }

  Block* last_ = nullptr;
  std::uintptr_t cur_ = 0, end_ = 0;
  std::size_t next_block_;
  std::size_t reserved_ = 0, blocks_ = 0;
};

/// The arena ScratchAllocators constructed on this thread draw from (none: the heap).
inline ScratchArena*& current_scratch_arena() noexcept {
  thread_local ScratchArena* arena = nullptr;
  return arena;
}

/// Names `arena` for the ScratchAllocators this thread constructs while the
/// scope lasts (the one named before comes back after).
class ScratchScope {
 public:
  explicit ScratchScope(ScratchArena* arena) noexcept : before_(current_scratch_arena()) {
    current_scratch_arena() = arena;
  }
  ScratchScope(const ScratchScope&) = delete;
  ScratchScope& operator=(const ScratchScope&) = delete;
  ~ScratchScope() { current_scratch_arena() = before_; }

 private:
  ScratchArena* before_;
};

/// std::vector's allocator for a workspace: from the arena of the scope it was
/// constructed in, or from plain operator new outside any scope. Containers
/// move, swap and copy-assign it with their storage, so storage always goes
/// back to where it came from.
template <class T>
struct ScratchAllocator {
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                "ScratchAllocator serves types plain operator new aligns");
  using value_type = T;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;

  ScratchArena* arena = current_scratch_arena();

  ScratchAllocator() noexcept = default;
  template <class U>
  ScratchAllocator(const ScratchAllocator<U>& other) noexcept : arena(other.arena) {}

  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    if (arena == nullptr) return static_cast<T*>(::operator new(n * sizeof(T)));
    return static_cast<T*>(arena->allocate(n * sizeof(T), alignof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (arena == nullptr) ::operator delete(static_cast<void*>(p), n * sizeof(T));
    // on an arena: freed with it
  }
  friend bool operator==(const ScratchAllocator& a, const ScratchAllocator& b) noexcept {
    return a.arena == b.arena;
  }
};

/// A workspace's vector (ScratchAllocator).
template <class T>
using ScratchVector = std::vector<T, ScratchAllocator<T>>;

} // namespace torchlens::passes::detail
