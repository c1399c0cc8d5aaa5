// Per-op cost of capture (issue 14): a chain of N tiny ops (N = 10^3 .. 10^5),
// timed plain and captured in the same run; the cost per op is the slope of
// time against N, so fixed costs (describing the model, indexing its graph, the
// capture copy) drop out. Three chains:
//   script      TorchScript, one `x + 1.0` per loop iteration in forward
//   script-call TorchScript, each iteration calls a submodule (a module frame per op)
//   frontend    C++ frontend, the same loop in a torch::nn::Module's forward
//   recurrent   C++ frontend, an RNN cell (two Linear submodules) unrolled N/4 times
// Columns: the plain forward; the same under an empty boxed fallback (the floor
// of any dispatcher-level capture); capture alone (metadata only, all saved; the pass
// pipeline off) and the whole log_forward_pass (pipeline on, metadata only).
// A second table per chain logs it end to end (capture, pipeline, the printed
// summary; metadata only) and reports the heap the log holds while alive, after
// printing (glibc's mallinfo2: bytes in use, its tensors included), per op.
// Usage: op_overhead [REPS] [MAX_N]

#include "timing.hpp"

#include <torchlens/torchlens.hpp>

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <malloc.h>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace tl = torchlens;

namespace {

// The floor: a boxed fallback that only passes the op on, on another mode key
// (capture's own fallback sits on TESTING_ONLY_GenericMode). The per-op cost of
// running a chain with it included is what any dispatcher-level capture pays
// before recording anything.
std::int64_t pass_through_calls = 0;

void pass_through(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  ++pass_through_calls;
  c10::impl::ExcludeDispatchKeyGuard no_recursion(c10::DispatchKey::TESTING_ONLY_GenericWrapper);
  op.callBoxed(stack);
}

} // namespace

TORCH_LIBRARY_IMPL(_, TESTING_ONLY_GenericWrapper, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&pass_through>());
}

namespace {

using torchlens::bench::median;
using torchlens::bench::time_ms;

struct ChainImpl : torch::nn::Module {
  std::int64_t n = 0;
  at::Tensor forward(at::Tensor x) {
    for (std::int64_t i = 0; i < n; ++i) x = x + 1.0;
    return x;
  }
};
TORCH_MODULE(Chain);

/// An RNN cell unrolled: every step calls two Linear submodules, so module
/// passes grow with N (each pass its own frame, under the same two addresses).
struct CellChainImpl : torch::nn::Module {
  static constexpr std::int64_t kOpsPerStep = 4; // N counts ih, hh, + and tanh per step
  std::int64_t n = 0;
  torch::nn::Linear ih{nullptr}, hh{nullptr};
  CellChainImpl() {
    ih = register_module("ih", torch::nn::Linear(16, 16));
    hh = register_module("hh", torch::nn::Linear(16, 16));
  }
  at::Tensor forward(at::Tensor x) {
    at::Tensor h = x;
    for (std::int64_t i = 0; i < n / kOpsPerStep; ++i) h = torch::tanh(ih(x) + hh(h));
    return h;
  }
};
TORCH_MODULE(CellChain);

torch::jit::Module script_chain(bool calls) {
  if (!calls) {
    torch::jit::Module m("Chain");
    m.define(R"(
def forward(self, x, n: int):
    for i in range(n):
        x = x + 1.0
    return x
)");
    return m;
  }
  torch::jit::Module step("Step");
  step.define(R"(
def forward(self, x):
    return x + 1.0
)");
  torch::jit::Module m("CallChain");
  m.register_module("step", step);
  m.define(R"(
def forward(self, x, n: int):
    for i in range(n):
        x = self.step.forward(x)
    return x
)");
  return m;
}

struct Times {
  double plain, floor, meta, all, full;
};

Times measure(int reps, const std::function<void()>& plain,
              const std::function<void(tl::LogOptions)>& logged) {
  const auto floor = [&] {
    c10::impl::IncludeDispatchKeyGuard through(c10::DispatchKey::TESTING_ONLY_GenericWrapper);
    plain();
  };
  const auto meta = tl::LogOptions().seed(0).save(tl::SaveSpec::none()).postprocess(false);
  const auto all = tl::LogOptions().seed(0).postprocess(false);
  const auto full = tl::LogOptions().seed(0).save(tl::SaveSpec::none());
  plain();
  floor();
  logged(meta);
  logged(all);
  logged(full);
  std::vector<double> tp, tb, tm, ta, tf;
  for (int i = 0; i < reps; ++i) { // interleaved, so drift hits all alike
    tp.push_back(time_ms(plain));
    tb.push_back(time_ms(floor));
    tm.push_back(time_ms([&] { logged(meta); }));
    ta.push_back(time_ms([&] { logged(all); }));
    tf.push_back(time_ms([&] { logged(full); }));
  }
  return {median(tp), median(tb), median(tm), median(ta), median(tf)};
}

void table(const std::string& name, std::int64_t max_n,
           const std::function<Times(std::int64_t)>& at_n) {
  std::cout << "\n### " << name << "\n\n"
            << "| N | plain ms | empty fallback ms | capture, metadata ms | capture, all saved "
               "ms | log_forward_pass ms |\n|---:|---:|---:|---:|---:|---:|\n";
  std::vector<std::int64_t> sizes;
  for (std::int64_t n = 1000; n <= max_n; n *= 10) sizes.push_back(n);
  std::vector<Times> rows;
  for (const auto n : sizes) {
    rows.push_back(at_n(n));
    const Times& t = rows.back();
    std::cout << std::fixed << std::setprecision(2) << "| " << n << " | " << t.plain << " | "
              << t.floor << " | " << t.meta << " | " << t.all << " | " << t.full << " |\n";
  }
  if (rows.size() < 2) return;
  const double dn = static_cast<double>(sizes.back() - sizes.front()) / 1e3; // ms -> us per op
  auto slope = [&](double Times::*f) { return (rows.back().*f - rows.front().*f) / dn; };
  pass_through_calls = 0;
  (void)at_n(sizes.front());
  std::cout << "\n(the empty fallback ran " << pass_through_calls << " times in a " << sizes.front()
            << "-op measurement)";
  std::cout << std::setprecision(2) << "\nper op (slope " << sizes.front() << ".." << sizes.back()
            << "): plain " << slope(&Times::plain) << " us; empty fallback "
            << slope(&Times::floor) - slope(&Times::plain) << " us; capture overhead, metadata "
            << slope(&Times::meta) - slope(&Times::plain) << " us, all saved "
            << slope(&Times::all) - slope(&Times::plain) << " us; log_forward_pass overhead "
            << slope(&Times::full) - slope(&Times::plain) << " us\n";
}

// Bytes the allocator has handed out and not had back (small and mmapped chunks).
std::size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

// End to end: capture + pipeline + summary, metadata only; time (median) and the
// heap the live log holds (its graph, strings, replay records, index).
void scaling(const std::string& name, int reps, std::int64_t max_n,
             const std::function<tl::ModelLog(std::int64_t, const tl::LogOptions&)>& log_n) {
  std::cout << "\n### " << name << ": end to end, metadata only\n\n"
            << "| N | log + summary ms | us per op | heap held by the log MB | bytes per op |\n"
               "|---:|---:|---:|---:|---:|\n";
  const auto meta = tl::LogOptions().seed(0).save(tl::SaveSpec::none());
  for (std::int64_t n = 1000; n <= max_n; n *= 10) {
    const auto run = [&] {
      tl::ModelLog log = log_n(n, meta);
      std::ostringstream os;
      os << log;
      return os.str().size();
    };
    (void)run();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) t.push_back(time_ms([&] { (void)run(); }));
    malloc_trim(0);
    const std::size_t before = heap_in_use();
    std::size_t held = 0;
    {
      tl::ModelLog log = log_n(n, meta);
      {
        std::ostringstream os; // what printing builds inside the log stays
        os << log;
      }
      const std::size_t with = heap_in_use();
      held = with > before ? with - before : 0;
    }
    const double ms = median(t);
    std::cout << std::fixed << std::setprecision(2) << "| " << n << " | " << ms << " | "
              << ms * 1e3 / static_cast<double>(n) << " | " << static_cast<double>(held) / 1e6
              << " | " << std::setprecision(0) << static_cast<double>(held) / static_cast<double>(n)
              << " |\n";
  }
}

/// Both tables for a C++-frontend chain: a module holder whose `n` sets the length.
template <class Holder>
void frontend_chain(const std::string& title, const std::string& name, Holder& m,
                    const at::Tensor& x, int reps, std::int64_t max_n) {
  table(title, max_n, [&](std::int64_t n) {
    m->n = n;
    return measure(
        reps, [&] { (void)m->forward(x); },
        [&](const tl::LogOptions& o) { (void)tl::log_forward_pass(m, x, o); });
  });
  scaling(name, reps, max_n, [&](std::int64_t n, const tl::LogOptions& o) {
    m->n = n;
    return tl::log_forward_pass(m, x, o);
  });
}

} // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::stoi(argv[1]) : 5;
  const std::int64_t max_n = argc > 2 ? std::stoll(argv[2]) : 100000;
  torch::NoGradGuard no_grad;
  at::set_num_threads(1);
  std::cout << "threads: 1, reps: " << reps << " (medians), input: float32[16]\n";
  const at::Tensor x = torch::ones({16});

  for (const bool calls : {false, true}) {
    torch::jit::Module m = script_chain(calls);
    table(calls ? "script-call (TorchScript, a submodule call per op)" : "script (TorchScript)",
          max_n, [&](std::int64_t n) {
            const std::vector<c10::IValue> in{x, c10::IValue(n)};
            return measure(
                reps, [&] { (void)m.forward(in); },
                [&](const tl::LogOptions& o) { (void)tl::log_forward_pass(m, in, o); });
          });
    scaling(calls ? "script-call" : "script", reps, max_n,
            [&](std::int64_t n, const tl::LogOptions& o) {
              return tl::log_forward_pass(m, {x, c10::IValue(n)}, o);
            });
  }
  Chain chain;
  frontend_chain("frontend (C++ frontend)", "frontend", chain, x, reps, max_n);
  CellChain cell;
  frontend_chain("recurrent (C++ frontend, an RNN cell: two Linear submodules per step)",
                 "recurrent", cell, x, reps, max_n);
  return 0;
}
