// How many bytes a tensor's data takes, for every layout: the figure a vertex,
// a parameter and a saved activation report (OpNode::bytes, ParamRef::bytes,
// the summary's saved bytes, max_saved_bytes).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

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

} // namespace torchlens::detail
