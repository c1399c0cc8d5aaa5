#pragma once
// Private to src/: one recorded op called again through the dispatcher, the
// way validation and the replay engine re-execute a log.

#include "recorder.hpp"

#include <map>
#include <utility>
#include <vector>

namespace torchlens::detail {

/// Puts `t` into an argument: the tensor itself (`list_index` < 0), or element
/// `list_index` of a Tensor[] / Tensor?[] argument (a copy of the list).
void set_argument_tensor(c10::IValue& arg, int list_index, const at::Tensor& t);

/// Calls a recorded op again with `inputs` for its in-edges (keyed by argument
/// position and list index), with the generator state it ran with. Arguments
/// it writes are cloned first, so saved activations are never changed. Returns
/// its outputs flattened as capture logged them.
std::vector<at::Tensor> reexecute(const OpRecord& rec,
                                  const std::map<std::pair<int, int>, at::Tensor>& inputs);

/// Puts the default generators (CPU, and CUDA's current device) back as they
/// were (replays restore recorded states).
class GeneratorStateGuard {
 public:
  GeneratorStateGuard();
  ~GeneratorStateGuard();
  GeneratorStateGuard(const GeneratorStateGuard&) = delete;
  GeneratorStateGuard& operator=(const GeneratorStateGuard&) = delete;

 private:
  GeneratorStates state_;
};

} // namespace torchlens::detail
