// The recorder's side of the Python binding's module hooks (python/): a Python
// module's forward post-hook reports what the call returned, which gives exact
// module exits and `identity` nodes for modules that return an argument
// unchanged. Kept apart from recorder.cpp: only the binding calls it.

#include "recorder.hpp"

#include <unordered_set>

namespace torchlens::detail {

void Recorder::exit_module_returning(const std::vector<at::Tensor>& outputs,
                                     const std::vector<at::Tensor>& unchanged) {
  TORCH_INTERNAL_ASSERT(!calls_.empty(), "torchlens: a module scope closed twice");
  if (calls_.back().module >= 0) {
    for (const auto& t : unchanged) log_identity(t);
    const ModuleFrame frame = containment_.back();
    std::unordered_set<std::size_t> seen;
    for (const auto& t : outputs) {
      const std::size_t id = lookup(t);
      if (id == SIZE_MAX || !seen.insert(id).second) continue;
      OpNode& n = graph[id];
      if (n.kind != NodeKind::op) continue;
      // a value leaves nested calls innermost first: this call is the next
      // frame outward of those it already left
      const std::size_t depth = n.modules.size();
      const auto left = static_cast<std::size_t>(n.modules_exited);
      if (left < depth && n.modules[depth - 1 - left] == frame) {
        ++n.modules_exited;
        n.exits_observed = true;
      }
    }
  }
  exit_module();
}

} // namespace torchlens::detail
