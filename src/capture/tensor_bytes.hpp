// How many bytes a tensor's data takes, for every layout: the figure a vertex,
// a parameter and a saved activation report (OpNode::bytes, ParamRef::bytes,
// the summary's saved bytes, max_saved_bytes); and whether two tensors hold the
// same bytes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstring>

namespace torchlens::detail {

/// `nbytes()` for a strided tensor; a sparse COO tensor's indices and values
/// (`nbytes()` throws for it); numel × element size for other layouts.
inline std::int64_t tensor_bytes(const at::Tensor& t) {
  if (t.layout() == c10::kStrided) return static_cast<std::int64_t>(t.nbytes());
  if (t.is_sparse()) {
    return static_cast<std::int64_t>(t._indices().nbytes() + t._values().nbytes());
  }
  return t.numel() * static_cast<std::int64_t>(t.element_size());
}

/// Same bytes, checked without ATen (`at::equal` compares element by element
/// into a new bool tensor; this stops at the first differing byte, which is
/// what a changed tensor shows at once). False only means "not known equal":
/// also for tensors it cannot compare so (not CPU, strided and contiguous).
inline bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (!a.device().is_cpu() || !b.device().is_cpu() || a.layout() != at::kStrided ||
      b.layout() != at::kStrided || a.is_quantized() || a.is_conj() != b.is_conj() ||
      a.is_neg() != b.is_neg() || !a.is_contiguous() || !b.is_contiguous() ||
      a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) {
    return false;
  }
  if (a.data_ptr() == b.data_ptr()) return true;
  return std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

} // namespace torchlens::detail
