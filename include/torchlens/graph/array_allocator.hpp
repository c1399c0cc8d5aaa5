#pragma once
/// \file
/// detail::ArrayAllocator: std::vector's allocator for the graph's flat arrays
/// (Digraph's vertex bundles, adjacency and edge records). Two things plain
/// `std::allocator` does not do:
///
/// - **Types aligned beyond what plain operator new guarantees** (OpNode: a
///   cache line) come from a block of plain operator new, a little larger, with
///   the elements at an aligned address inside it and the block's start in the
///   word before them. Aligned operator new goes to glibc's posix_memalign,
///   which searches for and splits a chunk on every request: ~1 000
///   instructions against ~100, paid by every capture (its graph) and every copy
///   of a graph.
/// - **Arrays of 2 MiB and more ask for transparent huge pages** (Linux:
///   `madvise(MADV_HUGEPAGE)` on the whole pages inside the block). A graph of
///   10⁵ ops is ~20 MB of vertex bundles, swept a dozen times by the pass
///   pipeline; on 4 KiB pages each sweep misses the TLB every few vertices, and
///   under a virtual machine's nested paging a miss walks two page tables.
///   Systems whose transparent huge pages are `madvise` (Debian's default) give
///   them only to ranges that ask; `always` gives them anyway, `never` ignores
///   the advice. The kernel backs every 2 MiB-aligned stretch of the advised
///   range with one huge page; the block itself is allocated as any other (a
///   block aligned to 2 MiB would cost up to 2 MiB of address space more, which
///   glibc counts as held), so up to 2 MiB at each end stay on small pages.
///   Smaller arrays are not advised: a huge page would hold mostly nothing.
///
/// Which path a block took follows from its type alone, so `deallocate` needs
/// no marker.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace torchlens::detail {

/// Size of a transparent huge page on x86-64 and most arm64 kernels: arrays of
/// at least this many bytes are advised.
inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

/// True when an array of `bytes` is advised to take huge pages.
constexpr bool takes_huge_pages(std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  return bytes >= kHugePageBytes;
#else
  (void)bytes;
  return false;
#endif
}

/// Advises the kernel to back the whole pages of [p, p + bytes) with huge pages
/// where it can. Advice only: a kernel without transparent huge pages refuses
/// it, and the block works the same on 4 KiB pages.
inline void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto lo = (reinterpret_cast<std::uintptr_t>(p) + page - 1) & ~(page - 1);
  const auto hi = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(page - 1);
  if (hi > lo) (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

template <class T>
struct ArrayAllocator {
  using value_type = T;
  ArrayAllocator() = default;
  template <class U>
  ArrayAllocator(const ArrayAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > (std::size_t(-1) - kExtra) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    T* items = nullptr;
    if constexpr (kExtra == 0) {
      items = static_cast<T*>(::operator new(bytes));
    } else {
      char* block = static_cast<char*>(::operator new(bytes + kExtra));
      const auto at = (reinterpret_cast<std::uintptr_t>(block) + sizeof(char*) + alignof(T) - 1) &
                      ~std::uintptr_t{alignof(T) - 1};
      char* aligned = block + (at - reinterpret_cast<std::uintptr_t>(block));
      std::memcpy(aligned - sizeof(char*), &block, sizeof(char*));
      items = reinterpret_cast<T*>(aligned);
    }
    if (takes_huge_pages(bytes)) advise_huge_pages(items, bytes);
    return items;
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if constexpr (kExtra == 0) {
      ::operator delete(static_cast<void*>(p), n * sizeof(T));
    } else {
      char* block = nullptr;
      std::memcpy(&block, reinterpret_cast<char*>(p) - sizeof(char*), sizeof(char*));
      ::operator delete(block, n * sizeof(T) + kExtra);
    }
  }
  friend bool operator==(const ArrayAllocator&, const ArrayAllocator&) noexcept { return true; }

 private:
  static constexpr std::size_t kExtra =
      alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ ? 0 : alignof(T) + sizeof(char*);
};

} // namespace torchlens::detail
