#pragma once
/// \file
/// log_forward_pass: run a model once and get back every tensor operation of its
/// forward pass (TorchLens §1.1). Works on TorchScript modules (exact module
/// nesting from the interpreter) and on C++-frontend modules (nesting from
/// parameter ownership and driven Sequentials; see docs/capture.md).

#include <torchlens/capture/recorder.hpp>

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

namespace detail {

template <class T>
struct is_tuple : std::false_type {};
template <class... Ts>
struct is_tuple<std::tuple<Ts...>> : std::true_type {};

template <class M>
torch::nn::Module& module_of(M& model) {
  if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    return model;
  } else if constexpr (requires { model.ptr(); }) {  // ModuleHolder
    return *model.ptr();
  } else {  // shared_ptr<Impl>
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

inline c10::IValue to_ivalue(const at::Tensor& t) { return t; }
inline c10::IValue to_ivalue(const std::vector<at::Tensor>& v) { return c10::IValue(v); }
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

/// Runs a Sequential child by child so each child's ops know their module.
at::Tensor run_sequential(Recorder& rec, torch::nn::SequentialImpl& seq, const std::string& prefix,
                          at::Tensor x);

template <class Arg>
void collect_inputs(const Arg& a, std::vector<std::pair<std::string, at::Tensor>>& out) {
  const std::string address = "input." + std::to_string(out.size());
  if constexpr (std::is_same_v<std::decay_t<Arg>, at::Tensor>) {
    out.emplace_back(address, a);
  } else if constexpr (std::is_same_v<std::decay_t<Arg>, std::vector<at::Tensor>>) {
    for (std::size_t i = 0; i < a.size(); ++i) {
      out.emplace_back(address + "." + std::to_string(i), a[i]);
    }
  }
}

} // namespace detail

/// Logs a C++-frontend module (`Net`, `std::shared_ptr<NetImpl>`, `NetImpl&`,
/// `torch::nn::Sequential`). `input` is one argument of forward, or a
/// std::tuple of them.
template <class Model, class Input>
ModelLog log_forward_pass(Model& model, Input input, const LogOptions& options = {}) {
  torch::nn::Module& root = detail::module_of(model);
  auto args = [&] {
    if constexpr (detail::is_tuple<Input>::value) {
      return input;
    } else {
      return std::make_tuple(std::move(input));
    }
  }();
  std::vector<std::pair<std::string, at::Tensor>> inputs;
  std::apply([&](const auto&... a) { (detail::collect_inputs(a, inputs), ...); }, args);

  detail::ForwardFn forward = [&](detail::Recorder& rec) -> c10::IValue {
    if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&root)) {
      if constexpr (std::tuple_size_v<decltype(args)> == 1 &&
                    std::is_same_v<std::tuple_element_t<0, decltype(args)>, at::Tensor>) {
        return detail::run_sequential(rec, *seq, "", std::get<0>(args));
      }
    }
    (void)rec;
    return std::apply(
        [&](const auto&... a) { return detail::to_ivalue(detail::call_forward(model, a...)); },
        args);
  };
  return detail::run_logged(detail::describe(root), inputs, forward, options);
}

} // namespace torchlens
