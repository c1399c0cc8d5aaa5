#pragma once
// The capture memory pool (torchlens/capture/memory.hpp): a c10 allocator
// installed as LibTorch's CPU allocator for the length of a capture.

namespace torchlens::detail {

/// While alive and `enable`d, LibTorch's CPU allocator is the capture pool.
/// Scopes nest and may overlap across threads: the first installs the pool,
/// the last restores the allocator it found. When another allocator was
/// registered with a higher priority, the pool stays out (nothing changes).
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
