#pragma once
/// \file
/// Project-wide macros (torch-free): the version (version.hpp) and the
/// TORCHLENS_ARG fluent option macro, a clone of torch/arg.h's TORCH_ARG.

#include <torchlens/version.hpp>

#include <utility>

/// Declares a fluent option `name` of type `T` (torch/arg.h style):
/// `struct Options { TORCHLENS_ARG(bool, keep_buffers) = false; };` gives
/// `Options().keep_buffers(true)` (setter returning *this) and
/// `options.keep_buffers()` (getter). The value lives in `name##_`.
#define TORCHLENS_ARG(T, name)                                          \
 public:                                                                \
  inline auto name(const T& new_##name)->decltype(*this) { /* NOLINT */ \
    this->name##_ = new_##name;                                         \
    return *this;                                                       \
  }                                                                     \
  inline auto name(T&& new_##name)->decltype(*this) { /* NOLINT */      \
    this->name##_ = std::move(new_##name);                              \
    return *this;                                                       \
  }                                                                     \
  inline const T& name() const noexcept { /* NOLINT */                  \
    return this->name##_;                                               \
  }                                                                     \
  inline T& name() noexcept { /* NOLINT */                              \
    return this->name##_;                                               \
  }                                                                     \
                                                                        \
 private:                                                               \
  T name##_ /* NOLINT */
