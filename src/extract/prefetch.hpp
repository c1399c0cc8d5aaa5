#pragma once
// Private to src/extract: the I/O of a batch overlapped with the forward of
// another (ExtractOptions::background_io).
//
// Prefetcher: the stimuli of batch k+1 are read (a folder of images: decoded
// and preprocessed) on one background thread while batch k runs the forward.
// Bounded: at most one batch waits, ready, beside the one in use. Batches come
// out in order; a batch that failed to load rethrows its error (the same
// ExtractError, naming the file) when it is asked for, not before, so the
// batches before it are written as without prefetch. The destructor stops the
// thread and joins it: when the forward throws, at stop-early (max_batches),
// at the end.
//
// WriteBehind: the rows of batch k are written, flushed and recorded (the
// crash-safe sequence of each batch, unchanged) on one background thread while
// batch k+1 runs the forward. Jobs run in order, one at a time; at most one
// waits. A failed job's error is rethrown by the next submit() or by finish(),
// and no later job runs (a later record never claims rows an earlier batch
// failed to write). The destructor (the forward threw) lets the jobs already
// submitted finish, so the batches before the failure stay committed, as they
// were without the thread.

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace torchlens::extract::detail_io {

class Prefetcher {
 public:
  /// Rows [start, start + count) of the stimuli as one tensor.
  using Load = std::function<at::Tensor(std::int64_t start, std::int64_t count)>;

  /// The batches [begin, end) in steps of `step` rows (the last one shorter).
  /// `background` false: each batch is loaded by next() itself (no thread).
  Prefetcher(Load load, std::int64_t begin, std::int64_t end, std::int64_t step,
             bool background = true)
      : load_(std::move(load)), next_start_(begin), end_(end), step_(step) {
    if (background && begin < end) thread_ = std::thread([this] { work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  /// The batch starting at `start` (the next one in order); rethrows its error.
  at::Tensor next(std::int64_t start, std::int64_t count) {
    if (!thread_.joinable()) return load_(start, count);
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return slot_.has_value() || finished_; });
    if (!slot_) throw std::logic_error("stimuli asked for past the prefetched range");
    Slot s = std::move(*slot_);
    slot_.reset();
    lock.unlock();
    changed_.notify_all();
    if (s.start != start || (s.error == nullptr && s.batch.size(0) != count)) {
      throw std::logic_error("stimuli prefetched out of order");
    }
    if (s.error) std::rethrow_exception(s.error);
    return s.batch;
  }

 private:
  struct Slot {
    std::int64_t start = 0;
    at::Tensor batch;
    std::exception_ptr error;
  };

  void work() {
    for (std::int64_t start = next_start_; start < end_; start += step_) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [this] { return stop_ || !slot_.has_value(); });
        if (stop_) break;
      }
      Slot s;
      s.start = start;
      try {
        s.batch = load_(start, std::min(step_, end_ - start));
      } catch (...) {
        s.error = std::current_exception();
      }
      const bool failed = s.error != nullptr;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        slot_ = std::move(s);
      }
      changed_.notify_all();
      if (failed) break; // the run stops at this batch: load nothing after it
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    changed_.notify_all();
  }

  Load load_;
  std::int64_t next_start_, end_, step_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Slot> slot_;
  bool stop_ = false;
  bool finished_ = false; // work() has returned
  std::thread thread_;
};

class WriteBehind {
 public:
  /// `background` false: submit() runs each job at once (no thread).
  explicit WriteBehind(bool background) {
    if (background) thread_ = std::thread([this] { work(); });
  }
  ~WriteBehind() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closing_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join(); // after the queued jobs; their errors are dropped
  }
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  /// Queues `job` after the others (waits while one is already waiting);
  /// rethrows the error of an earlier job.
  void submit(std::function<void()> job) {
    if (!thread_.joinable()) {
      job();
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return error_ != nullptr || !waiting_; });
    if (error_) std::rethrow_exception(error_);
    waiting_ = std::move(job);
    lock.unlock();
    changed_.notify_all();
  }

  /// Waits until every job has run; rethrows the first error.
  void finish() {
    if (!thread_.joinable()) return;
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return error_ != nullptr || (!waiting_ && !running_); });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [this] { return closing_ || waiting_; });
        if (!waiting_ || error_) return; // closing, nothing (more) to do
        job = std::move(waiting_);
        waiting_ = nullptr;
        running_ = true;
      }
      changed_.notify_all();
      std::exception_ptr error;
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        running_ = false;
        if (error) error_ = error;
      }
      changed_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::function<void()> waiting_; // the next job, if any
  bool running_ = false;
  bool closing_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

} // namespace torchlens::extract::detail_io
