#pragma once
/// \file
/// The torch side of torchlens's error family (torchlens/error.hpp): TorchError
/// is a c10::Error, as LibTorch users expect, and a torchlens::Error.
/// TORCHLENS_CHECK(cond, parts...) is TORCH_CHECK with the `torchlens: `
/// prefix added here, once, instead of in every message.

#include <torchlens/error.hpp>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <cstdint>
#include <exception>
#include <string>

namespace torchlens {

/// An error on the torch side: bad input, an unknown key, an unsupported op.
class TorchError : public c10::Error, public Error {
 public:
  TorchError(c10::SourceLocation where, const std::string& message)
      : c10::Error(where, detail::prefixed(message)), torchlens::Error(message) {}
};

/// A lookup key that matches no layer, or is ambiguous, or names a pass that
/// does not exist (with near matches in the message). A c10::IndexError, as
/// TORCH_CHECK_INDEX raises.
class KeyError : public c10::IndexError, public Error {
 public:
  KeyError(c10::SourceLocation where, const std::string& message)
      : c10::IndexError(where, detail::prefixed(message)), torchlens::Error(message) {}
};

/// A later capture of the same model, input and seed ran a different graph
/// than the first (a data-dependent branch, or randomness the seed does not
/// fix): raised by a two-pass save (`LogOptions::save(keys)`) and by extract,
/// naming the first difference.
class GraphChanged : public TorchError {
 public:
  using TorchError::TorchError;
};

/// Any exception's message as a tool prints it after its own `torchlens: `:
/// without the prefix, without LibTorch's backtrace, on one line.
std::string plain_message(const std::exception& e);

namespace detail {
[[noreturn]] void fail(const char* function, const char* file, std::uint32_t line,
                       const std::string& message);
[[noreturn]] void fail_key(const char* function, const char* file, std::uint32_t line,
                           const std::string& message);
} // namespace detail

} // namespace torchlens

/// Where a TorchError was raised, for constructing one directly.
#define TORCHLENS_HERE                                       \
  ::c10::SourceLocation {                                    \
    __func__, __FILE__, static_cast<std::uint32_t>(__LINE__) \
  }

/// TORCH_CHECK that throws torchlens::TorchError, message prefixed once.
#define TORCHLENS_CHECK(cond, ...)                                                      \
  if (C10_UNLIKELY(!(cond))) {                                                          \
    ::torchlens::detail::fail(__func__, __FILE__, static_cast<std::uint32_t>(__LINE__), \
                              ::c10::str(__VA_ARGS__));                                 \
  }

/// TORCH_CHECK_INDEX that throws torchlens::KeyError, message prefixed once.
#define TORCHLENS_CHECK_KEY(cond, ...)                                                      \
  if (C10_UNLIKELY(!(cond))) {                                                              \
    ::torchlens::detail::fail_key(__func__, __FILE__, static_cast<std::uint32_t>(__LINE__), \
                                  ::c10::str(__VA_ARGS__));                                 \
  }
