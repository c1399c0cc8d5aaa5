#pragma once
/// \file
/// log_forward_pass: run a model once and get back every tensor operation of its
/// forward pass (TorchLens's log_forward_pass). Works on TorchScript modules
/// (exact module nesting from the interpreter) and on C++-frontend modules
/// (exact where a forward opens a ModuleScope or a Sequential is driven,
/// inferred from parameter ownership elsewhere; see docs/capture.md).

#include <torchlens/capture/engine.hpp>
#include <torchlens/capture/module_scope.hpp>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace torch::jit {
struct Module;
}

namespace torchlens {

/// Logs a TorchScript module (`torch::jit::load`ed or defined in C++).
ModelLog log_forward_pass(torch::jit::Module& model, const std::vector<c10::IValue>& inputs,
                          const LogOptions& options = {});

/// How many captures on this thread took the pass pipeline's result from an
/// earlier capture of the same graph instead of running it
/// (LogOptions::reuse_postprocess).
std::size_t postprocess_reuses();

namespace detail {

template <class T>
struct is_tuple : std::false_type {};
template <class... Ts>
struct is_tuple<std::tuple<Ts...>> : std::true_type {};

template <class M>
torch::nn::Module& module_of(M& model) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return model;
  } else if constexpr (requires { model.ptr(); }) { // ModuleHolder
    return *model.ptr();
  } else { // shared_ptr<Impl>
    return *model;
  }
}

template <class M, class... A>
decltype(auto) call_forward(M& model, const A&... a) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return model.forward(a...);
  } else {
    return model->forward(a...);
  }
}

inline c10::IValue to_ivalue(const at::Tensor& t) {
  return t;
}
inline c10::IValue to_ivalue(const std::vector<at::Tensor>& v) {
  return c10::IValue(v);
}
template <class... Ts>
c10::IValue to_ivalue(const std::tuple<Ts...>& t) {
  std::vector<c10::IValue> elems;
  std::apply([&](const auto&... e) { (elems.push_back(to_ivalue(e)), ...); }, t);
  return c10::ivalue::Tuple::create(std::move(elems));
}
template <class A, class B>
c10::IValue to_ivalue(const std::pair<A, B>& p) {
  return to_ivalue(std::make_tuple(p.first, p.second));
}

/// Runs a Sequential child by child, each in a ModuleScope, so each child's
/// ops know their module exactly.
at::Tensor run_sequential(torch::nn::SequentialImpl& seq, at::Tensor x);

template <class Arg>
void collect_inputs(const Arg& a, std::size_t position,
                    std::vector<std::pair<std::string, at::Tensor>>& out) {
  const std::string address = "input." + std::to_string(position);
  if constexpr (std::is_same_v<std::decay_t<Arg>, at::Tensor>) {
    out.emplace_back(address, a);
  } else if constexpr (std::is_same_v<std::decay_t<Arg>, std::vector<at::Tensor>>) {
    for (std::size_t i = 0; i < a.size(); ++i) {
      out.emplace_back(address + "." + std::to_string(i), a[i]);
    }
  }
}

/// The forward of a C++-frontend model as a ForwardFn (Sequentials are driven).
template <class Model, class Args>
ForwardFn forward_fn(Model& model, torch::nn::Module& root, const Args& args) {
  return [&model, &root, args](Recorder*) -> c10::IValue {
    if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&root)) {
      if constexpr (std::tuple_size_v<Args> == 1 &&
                    std::is_same_v<std::tuple_element_t<0, Args>, at::Tensor>) {
        return run_sequential(*seq, std::get<0>(args));
      }
    }
    return std::apply([&](const auto&... a) { return to_ivalue(call_forward(model, a...)); }, args);
  };
}

/// The input tensors of a forward call, with their addresses (`input.0`).
template <class Args>
std::vector<std::pair<std::string, at::Tensor>> input_tensors(const Args& args) {
  std::vector<std::pair<std::string, at::Tensor>> inputs;
  std::size_t position = 0;
  std::apply([&](const auto&... a) { (collect_inputs(a, position++, inputs), ...); }, args);
  return inputs;
}

/// Tuple of forward arguments from one argument or a tuple of them.
template <class Input>
auto as_args(Input input) {
  if constexpr (is_tuple<Input>::value) {
    return input;
  } else {
    return std::make_tuple(std::move(input));
  }
}

} // namespace detail

/// Logs a C++-frontend module (`Net`, `std::shared_ptr<NetImpl>`, `NetImpl&`,
/// `torch::nn::Sequential`). `input` is one argument of forward, or a
/// std::tuple of them.
template <class Model, class Input>
ModelLog log_forward_pass(Model& model, Input input, const LogOptions& options = {}) {
  torch::nn::Module& root = detail::module_of(model);
  const auto args = detail::as_args(std::move(input));
  const auto inputs = detail::input_tensors(args);

  const detail::KeptDescription described(root);
  return detail::run_logged(described.get(), inputs, detail::forward_fn(model, root, args),
                            options);
}

} // namespace torchlens
