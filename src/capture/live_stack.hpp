#pragma once
// Private to src/: how the live intervention engines put a changed value on
// the dispatcher stack. The full engine (Recorder, recorder.cpp) and the lean
// one (src/intervene/lean.cpp) both go through these, so a site is written
// alike in both (docs/interventions.md, "The three engines").

#include "reexecute.hpp"

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstddef>

namespace torchlens::detail {

/// The tensor at (position, list index) of an argument.
inline at::Tensor stack_tensor(const c10::IValue& arg, int list_index) {
  if (list_index < 0) return arg.isTensor() ? arg.toTensor() : at::Tensor();
  if (arg.isTensorList()) return arg.toTensorList().get(static_cast<std::size_t>(list_index));
  const c10::IValue e = arg.toList().get(static_cast<std::size_t>(list_index));
  return e.isTensor() ? e.toTensor() : at::Tensor();
}

/// Puts `value` where `current` is: into its memory for a value the caller
/// keeps using (an in-place op's argument, an in-place op's return).
inline void write_through(const at::Tensor& current, const at::Tensor& value) {
  at::NoGradGuard no_grad; // gradients through written-through sites: unsupported (docs)
  current.copy_(value);
}

/// Replaces the argument tensor `current` at (`arg`, `list_index`) by `value`
/// before the op runs: an argument the op writes is written through (the
/// caller keeps using it), anything else is rebound.
inline void put_argument(c10::IValue& arg, int list_index, bool written, const at::Tensor& current,
                         const at::Tensor& value) {
  if (written && list_index < 0) {
    write_through(current, value);
  } else {
    set_argument_tensor(arg, list_index, value);
  }
}

/// After an op ran: `change(output_index, tensor)` for each of its tensor
/// returns on the stack (tensor lists flattened, undefined ones included),
/// in order; a changed value of an op that writes an argument (in-place,
/// `out=`) is written through, since C++ callers ignore the return of
/// `x.relu_()` and keep using `x`; others are rebound.
template <class Change>
void change_returns(torch::jit::Stack* stack, std::size_t num_returns, bool writes,
                    Change&& change) {
  int index = 0;
  for (std::size_t r = stack->size() - num_returns; r < stack->size(); ++r) {
    c10::IValue& ret = (*stack)[r];
    if (ret.isTensor()) {
      const at::Tensor t = ret.toTensor();
      const at::Tensor changed = change(index++, t);
      if (changed.is_same(t)) continue;
      if (writes) {
        write_through(t, changed);
      } else {
        ret = changed;
      }
    } else if (ret.isTensorList()) {
      auto list = ret.toTensorList().copy();
      bool any = false;
      for (std::size_t j = 0; j < list.size(); ++j) {
        const at::Tensor t = list.get(j);
        const at::Tensor changed = change(index++, t);
        if (changed.is_same(t)) continue;
        list.set(j, changed);
        any = true;
      }
      if (any) ret = std::move(list);
    }
  }
}

} // namespace torchlens::detail
