// The capture memory pool (torchlens/capture/memory.hpp): a caching c10
// allocator, LibTorch's CPU allocator while a capture runs; and, on glibc, its
// fastbins switched off for as long (FastBins below).

#include "memory_pool.hpp"

#include "libtorch_compat.hpp"

#include <torchlens/capture/memory.hpp>

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace torchlens {

namespace detail {
namespace {

/// Requests below this pass straight to LibTorch's aligned malloc: glibc serves
/// them from its arenas, and caching them would only add look-ups.
constexpr std::size_t kSmallest = 4096;
/// Sizes are kept in multiples of LibTorch's CPU alignment.
constexpr std::size_t kAlign = 64;
/// A cached block serves a request at most 1/32 smaller than itself (at most
/// ~3 % of a block unused): repeated captures of one model reuse exact sizes.
constexpr std::size_t kSlackShift = 5;

std::int64_t default_limit() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return std::int64_t{1} << 30;
  return static_cast<std::int64_t>(pages) * page / 8;
}

class Pool final : public compat::AllocatorBase {
 public:
  /// The one pool. Never destroyed: its tensors may outlive every static.
  static Pool& get() {
    static Pool* const pool = new Pool();
    return *pool;
  }

  c10::DataPtr allocate_block(std::size_t n) override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n < kSmallest) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &Pool::give_back, cpu};
    }
    const std::size_t size = (n + kAlign - 1) / kAlign * kAlign;
    void* p = take_cached(size);
    if (p == nullptr) {
      p = c10::alloc_cpu(size); // throws c10::Error when out of memory
      std::lock_guard lock(mutex_);
      ++stats_.fresh_blocks;
      note_live(p, size);
    }
    return {p, p, &Pool::give_back, cpu};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Pool::give_back; }

  /// The deleter of every block the pool handed out.
  static void give_back(void* p) {
    if (p == nullptr) return;
    if (!get().keep(p)) c10::free_cpu(p);
  }

  CaptureMemoryStats stats() {
    std::lock_guard lock(mutex_);
    return stats_;
  }

  std::int64_t release(std::int64_t keep_bytes) {
    std::vector<void*> freed;
    std::int64_t bytes = 0;
    {
      std::lock_guard lock(mutex_);
      // largest blocks first: the fewest calls to free
      while (stats_.cached_bytes > keep_bytes && !free_.empty()) {
        auto it = std::prev(free_.end());
        freed.push_back(it->second.back().block);
        it->second.pop_back();
        const auto size = static_cast<std::int64_t>(it->first);
        stats_.cached_bytes -= size;
        bytes += size;
        if (it->second.empty()) free_.erase(it);
      }
    }
    for (void* p : freed) c10::free_cpu(p);
    return bytes;
  }

  /// A capture begins: blocks no capture has taken since before the previous
  /// one began are freed (a workload whose sizes change does not pile up
  /// blocks nobody asks for; one that repeats reuses every block).
  void begin_capture() {
    std::vector<void*> freed;
    {
      std::lock_guard lock(mutex_);
      ++epoch_;
      for (auto it = free_.begin(); it != free_.end();) {
        auto& blocks = it->second;
        // kept: came back since the previous capture began
        const auto keep_end = std::stable_partition(
            blocks.begin(), blocks.end(), [&](const Cached& c) { return c.epoch + 1 >= epoch_; });
        for (auto b = keep_end; b != blocks.end(); ++b) {
          freed.push_back(b->block);
          stats_.cached_bytes -= static_cast<std::int64_t>(it->first);
        }
        blocks.erase(keep_end, blocks.end());
        it = blocks.empty() ? free_.erase(it) : std::next(it);
      }
    }
    for (void* p : freed) c10::free_cpu(p);
  }

  void set_limit(std::int64_t bytes) {
    {
      std::lock_guard lock(mutex_);
      stats_.limit_bytes = std::max<std::int64_t>(bytes, 0);
    }
    release(std::max<std::int64_t>(bytes, 0));
  }

 private:
  Pool() { stats_.limit_bytes = default_limit(); }

  void* take_cached(std::size_t size) {
    std::lock_guard lock(mutex_);
    auto it = free_.lower_bound(size);
    if (it == free_.end() || it->first - size > (size >> kSlackShift)) return nullptr;
    void* p = it->second.back().block; // the last one back: the warmest
    it->second.pop_back();
    const std::size_t block = it->first;
    if (it->second.empty()) free_.erase(it);
    stats_.cached_bytes -= static_cast<std::int64_t>(block);
    ++stats_.reused_blocks;
    note_live(p, block);
    return p;
  }

  void note_live(void* p, std::size_t size) {
    live_.emplace(p, size);
    stats_.live_bytes += static_cast<std::int64_t>(size);
    stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
  }

  /// Takes block p back; false when p is not a pooled block or the cache is
  /// full (the caller frees it).
  bool keep(void* p) {
    std::lock_guard lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) return false; // a small block
    const std::size_t size = it->second;
    live_.erase(it);
    const auto bytes = static_cast<std::int64_t>(size);
    stats_.live_bytes -= bytes;
    if (stats_.cached_bytes + bytes > stats_.limit_bytes) return false;
    free_[size].push_back({p, epoch_});
    stats_.cached_bytes += bytes;
    return true;
  }

  /// A cached block and the capture count when it came back.
  struct Cached {
    void* block;
    std::uint64_t epoch;
  };
  std::mutex mutex_;
  std::unordered_map<void*, std::size_t> live_;     ///< blocks handed out, by address
  std::map<std::size_t, std::vector<Cached>> free_; ///< cached blocks by size
  std::uint64_t epoch_ = 0;                         ///< captures begun
  CaptureMemoryStats stats_;
};

/// glibc's fastbins, off from the moment a capture has logged kLongCapture ops
/// until the last open capture ends, and while a log of that size is freed
/// (short captures and logs never switch: they gain nothing, and the switch
/// consolidates the main arena each time). A freed chunk of up to 128 bytes
/// that its thread cache cannot take waits in a fastbin, unmerged, until glibc
/// consolidates every fastbin at once: on any request of 1 KiB or more, and on
/// any free that leaves a free chunk of 64 KiB or more (one next to the top of
/// the heap). A capture keeps a few small allocations per op (the vertex, its
/// edges, shape, arguments) among the forward's transient ones, so those sweeps
/// and the slow paths after them grew with the log: with fastbins off, such
/// chunks merge as they are freed. Measured (docs/performance.md, "Allocations
/// per op, and glibc's fastbins"): metadata capture over 10^3-10^5 ops 2.5-3.3
/// us per op over the forward, from 2.9-4.1. Only the main arena's fastbins are
/// emptied when switching; other threads' arenas keep theirs until their next
/// consolidation.
/// `mallopt` cannot read the setting back, so it is restored to glibc's default
/// or to the one GLIBC_TUNABLES gave (a value set with mallopt at run time is
/// not seen: reuse_memory(false) leaves it alone).
class FastBins {
 public:
  static void off() {
#if defined(__GLIBC__)
    mallopt(M_MXFAST, 0);
#endif
  }
  static void restore() {
#if defined(__GLIBC__)
    mallopt(M_MXFAST, configured());
#endif
  }

 private:
  /// GLIBC_TUNABLES's glibc.malloc.mxfast, else glibc's default (64 * sizeof(size_t) / 4).
  static int configured() {
    static const int value = [] {
      int v = static_cast<int>(64 * sizeof(std::size_t) / 4);
      const char* env = std::getenv("GLIBC_TUNABLES");
      if (env == nullptr) return v;
      const std::string_view tunables(env), key("glibc.malloc.mxfast=");
      for (std::size_t at = 0; at < tunables.size();) {
        const std::size_t end = std::min(tunables.find(':', at), tunables.size());
        const std::string_view item = tunables.substr(at, end - at);
        if (item.starts_with(key)) v = std::atoi(std::string(item.substr(key.size())).c_str());
        at = end + 1;
      }
      return v;
    }();
    return value;
  }
};

/// Which scopes are open, process-wide.
struct Installation {
  std::mutex mutex;
  int depth = 0;
  c10::Allocator* previous = nullptr;
  bool installed = false;
  bool long_capture = false; ///< an open capture is long (capture_is_long)
  int long_teardowns = 0;    ///< large logs being freed (LargeTeardown)
  bool fastbins_off = false; ///< what FastBins was last set to

  /// Fastbins off while a long capture or a large teardown runs, else restored.
  void update_fastbins() {
    const bool off = long_capture || long_teardowns > 0;
    if (off == fastbins_off) return;
    if (off) {
      FastBins::off();
    } else {
      FastBins::restore();
    }
    fastbins_off = off;
  }
};

Installation& installation() {
  static Installation* const state = new Installation();
  return *state;
}

/// The scratch blocks a thread keeps (take_scratch): trivially destructible, so
/// that a block given back while the thread ends, after ScratchCleanup ran,
/// finds it `closed` and goes to the heap.
struct ScratchCache {
  static constexpr std::size_t kSlots = 4;
  std::array<void*, kSlots> block{};
  std::array<std::size_t, kSlots> bytes{};
  bool closed = false;
};
thread_local ScratchCache scratch_cache;

/// Frees the thread's kept blocks when it ends.
struct ScratchCleanup {
  bool armed = false; ///< set on first use, which registers the destructor
  ScratchCleanup() = default;
  ScratchCleanup(const ScratchCleanup&) = delete;
  ScratchCleanup& operator=(const ScratchCleanup&) = delete;
  ~ScratchCleanup() {
    ScratchCache& c = scratch_cache;
    c.closed = true;
    for (std::size_t i = 0; i < ScratchCache::kSlots; ++i) {
      if (c.block[i] != nullptr) ::operator delete(c.block[i], c.bytes[i]);
      c.block[i] = nullptr;
    }
  }
};
thread_local ScratchCleanup scratch_cleanup;

} // namespace

void* take_scratch(std::size_t bytes) {
  ScratchCache& c = scratch_cache;
  for (std::size_t i = 0; i < ScratchCache::kSlots; ++i) {
    if (c.block[i] != nullptr && c.bytes[i] == bytes) {
      return std::exchange(c.block[i], nullptr);
    }
  }
  return ::operator new(bytes);
}

void give_scratch(void* block, std::size_t bytes) noexcept {
  ScratchCache& c = scratch_cache;
  if (!c.closed) {
    for (std::size_t i = 0; i < ScratchCache::kSlots; ++i) {
      if (c.block[i] == nullptr) {
        scratch_cleanup.armed = true; // its destructor runs when the thread ends
        c.block[i] = block;
        c.bytes[i] = bytes;
        return;
      }
    }
  }
  ::operator delete(block, bytes);
}

CaptureMemoryScope::CaptureMemoryScope(bool enable) {
  if (!enable) return;
  Installation& s = installation();
  std::lock_guard lock(s.mutex);
  if (s.depth++ == 0) {
    Pool::get().begin_capture();
    s.previous = c10::GetCPUAllocator();
    // priority 0, LibTorch's own: an allocator registered above it stays
    c10::SetCPUAllocator(&Pool::get(), 0);
    s.installed = c10::GetCPUAllocator() == &Pool::get();
  }
  entered_ = true;
}

CaptureMemoryScope::~CaptureMemoryScope() {
  if (!entered_) return;
  Installation& s = installation();
  std::lock_guard lock(s.mutex);
  if (--s.depth == 0) {
    s.long_capture = false;
    s.update_fastbins();
    if (s.installed && c10::GetCPUAllocator() == &Pool::get()) {
      c10::SetCPUAllocator(s.previous, 0);
    }
    s.installed = false;
  }
}

void capture_is_long() {
  Installation& s = installation();
  std::lock_guard lock(s.mutex);
  if (s.depth == 0) return;
  s.long_capture = true;
  s.update_fastbins();
}

LargeTeardown::LargeTeardown(bool enable) : entered_(enable) {
  if (!enable) return;
  Installation& s = installation();
  std::lock_guard lock(s.mutex);
  ++s.long_teardowns;
  s.update_fastbins();
}

LargeTeardown::~LargeTeardown() {
  if (!entered_) return;
  Installation& s = installation();
  std::lock_guard lock(s.mutex);
  --s.long_teardowns;
  s.update_fastbins();
}

} // namespace detail

CaptureMemoryStats capture_memory_stats() {
  return detail::Pool::get().stats();
}

std::int64_t release_capture_memory() {
  return detail::Pool::get().release(0);
}

void set_capture_memory_limit(std::int64_t bytes) {
  detail::Pool::get().set_limit(bytes);
}

} // namespace torchlens
