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

/// Memory a capture needs for its own length (the recorder, the first block of
/// its arena), kept per thread for the next capture: a few blocks of exact
/// sizes. Without it every capture asked glibc for these blocks (requests of
/// 1 KiB or more) after the forward had freed many small chunks, and glibc
/// swept its fastbins on each such request and again when the 64 KiB block
/// came back (docs/performance.md, "Time, not instructions"). Any thread may
/// give back a block another thread took; a thread's kept blocks are freed
/// when it ends.
void* take_scratch(std::size_t bytes);
void give_scratch(void* block, std::size_t bytes) noexcept;

/// A block from take_scratch, given back when destroyed.
class ScratchBlock {
 public:
  explicit ScratchBlock(std::size_t bytes) : data_(take_scratch(bytes)), bytes_(bytes) {}
  ~ScratchBlock() { give_scratch(data_, bytes_); }
  ScratchBlock(const ScratchBlock&) = delete;
  ScratchBlock& operator=(const ScratchBlock&) = delete;
  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_; }

 private:
  void* data_;
  std::size_t bytes_;
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
