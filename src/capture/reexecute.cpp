// Re-executing one recorded op (reexecute.hpp).

#include "reexecute.hpp"

#include "libtorch_compat.hpp"

#include <torchlens/torch_error.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <optional>

namespace torchlens::detail {

void set_argument_tensor(c10::IValue& arg, int list_index, const at::Tensor& t) {
  if (list_index < 0) {
    arg = t;
  } else if (arg.isTensorList()) {
    auto list = arg.toTensorList().copy();
    list.set(static_cast<std::size_t>(list_index), t);
    arg = std::move(list);
  } else {
    auto list = arg.toList().copy();
    list.set(static_cast<std::size_t>(list_index), t);
    arg = std::move(list);
  }
}

std::vector<at::Tensor> reexecute(const OpRecord& rec,
                                  const std::map<std::pair<int, int>, at::Tensor>& inputs) {
  torch::jit::Stack stack = rec.args;
  const auto& schema = rec.op->schema();
  for (const auto& [slot, value] : inputs) {
    const auto [pos, index] = slot;
    TORCHLENS_CHECK(pos >= 0 && static_cast<std::size_t>(pos) < stack.size(),
                    "an in-edge names argument ", pos, " of ", schema.name(), ", which has ",
                    stack.size());
    set_argument_tensor(stack[static_cast<std::size_t>(pos)], index, value);
  }
  // in-place ops must not write into saved activations
  for (std::size_t i = 0; i < schema.arguments().size(); ++i) {
    const auto* alias = schema.arguments()[i].alias_info();
    if (alias != nullptr && alias->isWrite() && stack[i].isTensor()) {
      stack[i] = stack[i].toTensor().clone();
    }
  }
  // an explicit generator: every re-execution starts from the state it had
  // when the op ran (the record's copy stays as it was)
  for (auto& v : stack) {
    if (v.isGenerator()) v = c10::IValue(compat::copy_generator(v.toGenerator()));
  }
  rec.rng.write();
  std::optional<compat::AutocastGuard<AutocastState>> autocast;
  if (rec.autocast) autocast.emplace(*rec.autocast);
  rec.op->callBoxed(&stack);
  autocast.reset();
  const TensorList outputs = flatten_returns(stack);
  return {outputs.begin(), outputs.end()};
}

namespace {
at::Tensor state_of(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
void set_state_of(at::Generator gen, const at::Tensor& state) {
  if (!state.defined()) return;
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}
} // namespace

GeneratorStates GeneratorStates::read() {
  GeneratorStates s;
  s.cpu = state_of(at::detail::getDefaultCPUGenerator());
  if (const auto cuda = compat::cuda_generator()) s.cuda = state_of(*cuda);
  return s;
}

void GeneratorStates::write() const {
  set_state_of(at::detail::getDefaultCPUGenerator(), cpu);
  if (cuda.defined()) {
    if (const auto gen = compat::cuda_generator()) set_state_of(*gen, cuda);
  }
}

GeneratorStateGuard::GeneratorStateGuard() : state_(GeneratorStates::read()) {}

GeneratorStateGuard::~GeneratorStateGuard() {
  state_.write();
}

} // namespace torchlens::detail
