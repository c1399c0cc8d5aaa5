#pragma once
// Private to src/: every LibTorch API torchlens relies on that is internal, not
// a public contract, or could differ between LibTorch versions — in this one
// file. Checked against Debian's LibTorch 1.13.1; the notes say what the 2.x
// headers have (docs/capture.md, "LibTorch versions: one file"). To port torchlens
// to another LibTorch, this file is the place to change.

#include <ATen/record_function.h>
#include <c10/core/DispatchKey.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/csrc/jit/runtime/interpreter.h>

#include <vector>

namespace torchlens::detail::compat {

/// The mode dispatch key capture's boxed fallback is registered on. A testing
/// key, but the only mode key C++ can register a fallback on in 1.13 (Python,
/// PythonTLSSnapshot and Tracer are taken); present in 2.x's key list too. The
/// registration (TORCH_LIBRARY_IMPL) needs the same name as a token: see
/// TORCHLENS_CAPTURE_KEY_TOKEN.
inline constexpr c10::DispatchKey kCaptureKey = c10::DispatchKey::TESTING_ONLY_GenericMode;
#define TORCHLENS_CAPTURE_KEY_TOKEN TESTING_ONLY_GenericMode

/// The thread-local debug-info slot that marks a capture's state for the tasks
/// LibTorch runs on other threads for it (at::launch, TorchScript fork copy
/// ThreadLocalState, debug info included). 1.13 and 2.x both have TEST_INFO_2.
inline constexpr c10::DebugInfoKind kMarkerKind = c10::DebugInfoKind::TEST_INFO_2;

/// Keeps TorchScript's graph executor from optimising (inlining calls,
/// specialising) while capture runs: capture sees the plain graph and one
/// interpreter frame per call. `torch::jit::GraphOptimizerEnabledGuard` in 1.13
/// and 2.x (TorchScript is deprecated in 2.x, still present).
using PlainExecutorGuard = torch::jit::GraphOptimizerEnabledGuard;

/// Registers thread-local callbacks for TorchScript interpreter frames only
/// (scope TORCHSCRIPT_FUNCTION), with the frame's arguments. `at::RecordFunction`
/// callbacks: 1.13 and 2.x alike (start returns an ObserverContext; the
/// arguments, fn.inputs(), are valid in the start callback).
inline at::CallbackHandle add_frame_callbacks(at::RecordFunctionCallback::StartCallback start,
                                              at::RecordFunctionCallback::EndCallback end) {
  return at::addThreadLocalCallback(at::RecordFunctionCallback(start, end)
                                        .needsInputs(true)
                                        .scopes({at::RecordScope::TORCHSCRIPT_FUNCTION}));
}
inline void remove_frame_callbacks(at::CallbackHandle h) {
  at::removeCallback(h);
}

/// The interpreter's call stack: one entry per frame (plus inlined calls),
/// innermost first, each with the source range of the node it is running.
inline std::vector<torch::jit::StackEntry> interpreter_callstack() {
  return torch::jit::currentCallstack();
}

} // namespace torchlens::detail::compat
