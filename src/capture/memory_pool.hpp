#pragma once
// The capture memory pool (torchlens/capture/memory.hpp): a c10 allocator
// installed as LibTorch's CPU allocator for the length of a capture; and, on
// glibc, its fastbins switched off for the rest of a long capture.

#include <cstddef>

namespace torchlens::detail {

/// Ops a capture logs before glibc's fastbins are switched off for the rest of
/// it (memory_pool.cpp, FastBins), when its CaptureMemoryScope is enabled.
inline constexpr std::size_t kLongCapture = 2048;

/// Called once by a capture when it has logged kLongCapture ops: switches
/// glibc's fastbins off until the last open scope closes (no-op without an
/// enabled scope, and off glibc).
void capture_is_long();

/// While alive and `enable`d (a log of at least kLongCapture vertices is being
/// freed), glibc's fastbins are off: the log's small chunks merge as they are
/// freed instead of waiting, a million at a time, in fastbins that the next
/// large request, the caller's included, would have to sweep.
class LargeTeardown {
 public:
  explicit LargeTeardown(bool enable);
  ~LargeTeardown();
  LargeTeardown(const LargeTeardown&) = delete;
  LargeTeardown& operator=(const LargeTeardown&) = delete;

 private:
  bool entered_ = false;
};

/// While alive and `enable`d, LibTorch's CPU allocator is the capture pool.
/// Scopes nest and may overlap across threads: the first installs the pool,
/// the last restores the allocator it found (and glibc's fastbins, when a
/// capture switched them off). When another allocator was registered with a
/// higher priority, the pool stays out (nothing changes).
class CaptureMemoryScope {
 public:
  explicit CaptureMemoryScope(bool enable);
  ~CaptureMemoryScope();
  CaptureMemoryScope(const CaptureMemoryScope&) = delete;
  CaptureMemoryScope& operator=(const CaptureMemoryScope&) = delete;

 private:
  bool entered_ = false;
};

} // namespace torchlens::detail
