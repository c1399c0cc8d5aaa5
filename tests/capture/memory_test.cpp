// The capture memory pool (torchlens/capture/memory.hpp): a saving capture's
// tensors come from it, a freed log's blocks serve the next capture, LibTorch's
// allocator is back after every capture (also one that throws, also with
// captures on two threads), and the limit and release hold. On glibc, a long
// capture runs its later ops with fastbins off, and they are back after it.

#include "../../src/capture/memory_pool.hpp"
#include "../../src/capture/recorder.hpp"

#include <torchlens/torchlens.hpp>

#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <thread>
#include <vector>

// glibc's own heap (ASan replaces malloc and keeps its own)
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define TORCHLENS_TEST_GLIBC_HEAP 1
#include <malloc.h>
#endif

namespace tl = torchlens;

namespace {

/// Three linears on a 64 x 256 batch (64 KiB activations), noting which CPU
/// allocator its forward ran under.
struct WideImpl : torch::nn::Module {
  torch::nn::Linear a{256, 256}, b{256, 256}, c{256, 256};
  bool throw_now = false;
  std::atomic<c10::Allocator*> seen{nullptr};
  WideImpl() {
    register_module("a", a);
    register_module("b", b);
    register_module("c", c);
  }
  at::Tensor forward(const at::Tensor& x) {
    seen = c10::GetCPUAllocator();
    auto h = torch::relu(a(x));
    TORCH_CHECK(!throw_now, "model failure on purpose");
    return c(torch::tanh(b(h)));
  }
};
TORCH_MODULE(Wide);

constexpr std::int64_t kGiB = std::int64_t{1} << 30;

/// A 1 GiB limit for the test case; the previous one restored when it ends.
struct LargeLimit {
  std::int64_t previous = tl::capture_memory_stats().limit_bytes;
  LargeLimit() { tl::set_capture_memory_limit(kGiB); }
  ~LargeLimit() { tl::set_capture_memory_limit(previous); }
  LargeLimit(const LargeLimit&) = delete;
  LargeLimit& operator=(const LargeLimit&) = delete;
};

} // namespace

TEST_CASE("the capture pool: a freed log's blocks serve the next capture, values unchanged") {
  torch::manual_seed(0);
  Wide model;
  model->eval();
  const auto x = torch::randn({64, 256});
  at::NoGradGuard no_grad;
  // what the activations must be, computed without torchlens
  const auto h1 = model->a(x), r1 = torch::relu(h1), h2 = model->b(r1), t2 = torch::tanh(h2),
             out = model->c(t2);
  const LargeLimit limit;
  tl::release_capture_memory();
  c10::Allocator* const libtorch = c10::GetCPUAllocator();
  const auto s0 = tl::capture_memory_stats();
  CHECK(s0.cached_bytes == 0);

  std::int64_t fresh_after_first = 0;
  {
    auto log = tl::log_forward_pass(model, x, tl::LogOptions().seed(0));
    CHECK(model->seen != libtorch); // the forward ran under the pool
    CHECK(c10::GetCPUAllocator() == libtorch);
    CHECK(torch::equal(log["addmm_1"].activation(), h1));
    CHECK(torch::equal(log["relu_1"].activation(), r1));
    CHECK(torch::equal(log["tanh_1"].activation(), t2));
    CHECK(torch::equal(log["addmm_3"].activation(), out));
    const auto s1 = tl::capture_memory_stats();
    fresh_after_first = s1.fresh_blocks;
    // the five 64 KiB activations (and the input's saved copy, if any) are pool blocks
    CHECK(s1.fresh_blocks - s0.fresh_blocks >= 5);
    CHECK(s1.live_bytes - s0.live_bytes >= 5 * 64 * 256 * 4);
  }
  const auto s2 = tl::capture_memory_stats();
  CHECK(s2.live_bytes == s0.live_bytes);      // every block came back
  CHECK(s2.cached_bytes >= 5 * 64 * 256 * 4); // and stayed in the process

  auto again = tl::log_forward_pass(model, x, tl::LogOptions().seed(0));
  const auto s3 = tl::capture_memory_stats();
  CHECK(s3.fresh_blocks == fresh_after_first); // nothing new from the system
  CHECK(s3.reused_blocks - s2.reused_blocks >= 5);
  CHECK(torch::equal(again["addmm_1"].activation(), h1));
  CHECK(torch::equal(again["tanh_1"].activation(), t2));
  CHECK(torch::equal(again["addmm_3"].activation(), out));

  // outside a capture LibTorch allocates as before: nothing from the pool
  const auto plain = torch::empty({1 << 20});
  CHECK(tl::capture_memory_stats().fresh_blocks == s3.fresh_blocks);
  CHECK(tl::capture_memory_stats().reused_blocks == s3.reused_blocks);
  CHECK(plain.numel() == 1 << 20);
}

TEST_CASE("metadata-only captures use the pool too; reuse_memory(false) stays out") {
  torch::manual_seed(0);
  Wide model;
  const auto x = torch::randn({64, 256});
  c10::Allocator* const libtorch = c10::GetCPUAllocator();
  auto meta = tl::log_forward_pass(model, x, tl::LogOptions().save(tl::SaveSpec::none()));
  CHECK(model->seen != libtorch);
  CHECK(meta.saved_layers().empty());
  const auto s0 = tl::capture_memory_stats();
  auto off = tl::log_forward_pass(model, x, tl::LogOptions().reuse_memory(false));
  CHECK(model->seen == libtorch);
  CHECK(off.saved_layers().size() == off.size());
  const auto s1 = tl::capture_memory_stats();
  CHECK(s1.fresh_blocks == s0.fresh_blocks);
  CHECK(s1.reused_blocks == s0.reused_blocks);
  CHECK(s1.live_bytes == s0.live_bytes);
}

TEST_CASE("LibTorch's allocator is back after a forward that throws") {
  Wide model;
  const auto x = torch::randn({64, 256});
  c10::Allocator* const libtorch = c10::GetCPUAllocator();
  model->throw_now = true;
  CHECK_THROWS_WITH_AS(tl::log_forward_pass(model, x), doctest::Contains("on purpose"), c10::Error);
  CHECK(model->seen != libtorch);
  CHECK(c10::GetCPUAllocator() == libtorch);
  model->throw_now = false;
  auto log = tl::log_forward_pass(model, x);
  CHECK(log.saved_layers().size() == log.size());
  CHECK(c10::GetCPUAllocator() == libtorch);
}

TEST_CASE("the pool's limit and release: blocks in use are kept, the cache obeys the limit") {
  torch::manual_seed(0);
  Wide model;
  const auto x = torch::randn({64, 256});
  at::NoGradGuard no_grad;
  const LargeLimit limit;
  { auto warm = tl::log_forward_pass(model, x); }
  CHECK(tl::capture_memory_stats().cached_bytes > 0);

  auto log = tl::log_forward_pass(model, x);
  const auto live = tl::capture_memory_stats().live_bytes;
  CHECK(live >= 5 * 64 * 256 * 4);
  const auto cached = tl::capture_memory_stats().cached_bytes;
  CHECK(tl::release_capture_memory() == cached);
  CHECK(tl::capture_memory_stats().cached_bytes == 0);
  CHECK(tl::capture_memory_stats().live_bytes == live); // the log's tensors are untouched
  CHECK(torch::equal(log["relu_1"].activation(), torch::relu(model->a(x))));

  // limit 0: a block coming back is freed, not cached
  tl::set_capture_memory_limit(0);
  log = tl::log_forward_pass(model, x, tl::LogOptions().reuse_memory(false));
  CHECK(tl::capture_memory_stats().cached_bytes == 0);
  CHECK(tl::capture_memory_stats().live_bytes < live);

  // a smaller limit releases what is above it
  tl::set_capture_memory_limit(kGiB);
  { auto more = tl::log_forward_pass(model, x); }
  const auto full = tl::capture_memory_stats().cached_bytes;
  CHECK(full >= 5 * 64 * 256 * 4);
  tl::set_capture_memory_limit(64 * 256 * 4);
  CHECK(tl::capture_memory_stats().cached_bytes <= 64 * 256 * 4);
}

TEST_CASE("blocks no capture took since before the previous one are freed when a capture begins") {
  torch::manual_seed(0);
  Wide model;
  at::NoGradGuard no_grad;
  const LargeLimit limit;
  tl::release_capture_memory();
  const auto big = torch::randn({64, 256}), small = torch::randn({48, 256}); // no shared sizes
  { auto a = tl::log_forward_pass(model, big); }
  const auto after_a = tl::capture_memory_stats();
  { auto b = tl::log_forward_pass(model, small); } // a's blocks, unused, survive this one
  const auto after_b = tl::capture_memory_stats();
  CHECK(after_b.fresh_blocks > after_a.fresh_blocks);
  CHECK(after_b.cached_bytes > after_a.cached_bytes);
  { auto b = tl::log_forward_pass(model, small); } // but not the next: only b's blocks stay
  const auto again = tl::capture_memory_stats();
  CHECK(again.fresh_blocks == after_b.fresh_blocks);
  CHECK(again.cached_bytes < after_b.cached_bytes); // a's 64-row blocks are gone
  { auto b = tl::log_forward_pass(model, small); }  // a repeating workload: a steady cache
  CHECK(tl::capture_memory_stats().cached_bytes == again.cached_bytes);
  CHECK(tl::capture_memory_stats().fresh_blocks == again.fresh_blocks);
  { auto a = tl::log_forward_pass(model, big); } // a's sizes come from the system again
  CHECK(tl::capture_memory_stats().fresh_blocks > again.fresh_blocks);
}

TEST_CASE("captures on two threads at once share the pool; LibTorch's allocator is back after") {
  torch::manual_seed(0);
  Wide model;
  model->eval();
  const auto x = torch::randn({64, 256});
  at::NoGradGuard no_grad;
  const auto want = torch::tanh(model->b(torch::relu(model->a(x))));
  c10::Allocator* const libtorch = c10::GetCPUAllocator();
  const auto live0 = tl::capture_memory_stats().live_bytes;
  std::atomic<int> wrong{0};
  auto work = [&] {
    at::NoGradGuard inner;
    for (int i = 0; i < 25; ++i) {
      try {
        auto log = tl::log_forward_pass(model, x, tl::LogOptions().seed(0));
        if (!torch::equal(log["tanh_1"].activation(), want)) ++wrong;
      } catch (const std::exception&) {
        ++wrong;
      }
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  CHECK(wrong == 0);
  CHECK(c10::GetCPUAllocator() == libtorch);
  CHECK(tl::capture_memory_stats().live_bytes == live0);
}

#if defined(TORCHLENS_TEST_GLIBC_HEAP)
namespace {

/// Whether glibc puts a freed small chunk in a fastbin now: frees nine chunks
/// of one fastbin size (the thread cache takes at most seven of a size) and
/// looks whether the count of free fastbin chunks grew.
bool fastbins_in_use() {
  std::array<void*, 9> chunks{};
  for (auto& c : chunks) c = std::malloc(72);
  const auto before = mallinfo2().smblks;
  for (void* c : chunks) std::free(c);
  return mallinfo2().smblks > before;
}

/// A chain of `n` small adds that notes, at op `probe`, whether fastbins are in use.
struct ProbedChainImpl : torch::nn::Module {
  int n = 0, probe = 0;
  bool fastbins_at_probe = true;
  at::Tensor forward(at::Tensor x) {
    for (int i = 0; i < n; ++i) {
      if (i == probe) fastbins_at_probe = fastbins_in_use();
      x = x + 1.0;
    }
    return x;
  }
};
TORCH_MODULE(ProbedChain);

} // namespace

TEST_CASE(
    "glibc: a long capture runs with fastbins off, a short one and a plain forward with them") {
  at::NoGradGuard no_grad;
  const auto x = torch::zeros({4});
  ProbedChain chain;
  chain->n = 3000;
  REQUIRE(fastbins_in_use()); // glibc's default

  chain->probe = 2500; // past the 2048th op
  auto log = tl::log_forward_pass(chain, x, tl::LogOptions().save(tl::SaveSpec::none()));
  CHECK_FALSE(chain->fastbins_at_probe);
  CHECK(fastbins_in_use()); // restored when the capture ended
  CHECK(log.size() == 3002);
  CHECK(log["add_3000"]->shape == std::vector<std::int64_t>{4});

  chain->probe = 1000; // before it: still on
  { auto early = tl::log_forward_pass(chain, x, tl::LogOptions().save(tl::SaveSpec::none())); }
  CHECK(chain->fastbins_at_probe);

  chain->probe = 2500; // reuse_memory(false): capture leaves glibc's settings alone
  {
    auto plain_memory = tl::log_forward_pass(
        chain, x, tl::LogOptions().save(tl::SaveSpec::none()).reuse_memory(false));
  }
  CHECK(chain->fastbins_at_probe);

  const auto out = chain->forward(x); // a plain forward: untouched
  CHECK(chain->fastbins_at_probe);
  CHECK(torch::equal(out, torch::full({4}, 3000.0)));
  CHECK(fastbins_in_use());
}
#endif

namespace {

/// A Linear whose forward asks, while it is being captured, for a block the
/// size of a Recorder from the thread's scratch (and gives it back).
struct ScratchProbeImpl : torch::nn::Module {
  torch::nn::Linear fc{4, 3};
  void* during = nullptr;
  ScratchProbeImpl() { register_module("fc", fc); }
  at::Tensor forward(const at::Tensor& x) {
    during = tl::detail::take_scratch(sizeof(tl::detail::Recorder));
    tl::detail::give_scratch(during, sizeof(tl::detail::Recorder));
    return torch::relu(fc(x));
  }
};
TORCH_MODULE(ScratchProbe);

} // namespace

TEST_CASE("a capture's recorder lives in a block the thread keeps for its next capture") {
  using tl::detail::give_scratch;
  using tl::detail::take_scratch;
  constexpr std::size_t kRecorder = sizeof(tl::detail::Recorder);
  torch::manual_seed(0);
  ScratchProbe model;
  const auto x = torch::randn({2, 4});
  at::NoGradGuard no_grad;
  void* const kept = take_scratch(kRecorder);
  give_scratch(kept, kRecorder); // the thread keeps it
  auto log = tl::log_forward_pass(model, x, tl::LogOptions().seed(0));
  // the capture's recorder had taken the kept block: the forward got another
  CHECK(model->during != nullptr);
  CHECK(model->during != kept);
  // and gave it back when it ended: the thread has both again
  std::vector<void*> taken;
  for (int i = 0; i < 4; ++i) taken.push_back(take_scratch(kRecorder));
  CHECK(std::find(taken.begin(), taken.end(), kept) != taken.end());
  CHECK(std::find(taken.begin(), taken.end(), model->during) != taken.end());
  for (void* p : taken) give_scratch(p, kRecorder);
  // what was captured is what the model computes
  CHECK(torch::allclose(log["relu_1"].activation(), torch::relu(model->fc(x))));
  CHECK(log["addmm_1"]->modules.back().address == "fc");

  // a block may go back on another thread: that thread keeps it, and frees it
  // when it ends (a sanitizer build checks the memory)
  void* moved = take_scratch(kRecorder);
  std::thread([moved] { give_scratch(moved, kRecorder); }).join();
  // sizes are kept apart
  void* one = take_scratch(4096);
  give_scratch(one, 4096);
  void* other = take_scratch(8192);
  CHECK(other != one);
  give_scratch(other, 8192);
  CHECK(take_scratch(4096) == one);
  give_scratch(one, 4096);
}
