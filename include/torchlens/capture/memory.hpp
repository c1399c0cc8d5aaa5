#pragma once
/// \file
/// The memory a capture's tensors come from. While a capture runs, LibTorch's
/// CPU allocator is torchlens's pool: a log's tensors (and the forward's
/// temporaries) are allocated there, and when they are freed their blocks stay
/// in the process for the next capture instead of going back to the operating
/// system, which would hand them out again one page fault at a time
/// (docs/capture.md, "Memory: the capture pool").
/// Like PyTorch's CUDA caching allocator, the pool keeps what it was given, up
/// to a limit (an eighth of physical memory unless set); when a capture begins,
/// blocks that no capture has taken since before the previous one began are
/// freed, so a workload whose sizes keep changing does not pile up blocks
/// nobody asks for, and one that repeats reuses every block. Outside captures
/// LibTorch's own allocator is untouched. On glibc, a capture that has logged
/// 2 048 ops runs the rest with glibc's fastbins off, and a log that large is
/// freed with them off (docs/capture.md: small chunks merge as they are freed
/// instead of piling up for glibc's whole-heap sweeps); restored after.
/// `LogOptions::reuse_memory(false)` skips the pool and leaves glibc alone.

#include <cstdint>

namespace torchlens {

/// What the capture pool holds and has done, process-wide.
struct CaptureMemoryStats {
  std::int64_t cached_bytes = 0;    ///< freed blocks kept for the next capture
  std::int64_t live_bytes = 0;      ///< blocks from the pool still in use (saved activations…)
  std::int64_t peak_live_bytes = 0; ///< the most live_bytes has been
  std::int64_t limit_bytes = 0;     ///< the most cached_bytes may reach
  std::int64_t fresh_blocks = 0;    ///< blocks the pool took from the system
  std::int64_t reused_blocks = 0;   ///< blocks served from the cache
};

/// The pool's state now.
CaptureMemoryStats capture_memory_stats();

/// Returns every cached block to the system (like `torch.cuda.empty_cache()`);
/// blocks in use are not affected. Returns the bytes released.
std::int64_t release_capture_memory();

/// Caps the cached bytes (0: cache nothing; blocks are freed as they come
/// back). Releases cached blocks above the new limit.
void set_capture_memory_limit(std::int64_t bytes);

} // namespace torchlens
