#pragma once
/// \file
/// The errors torchlens raises, one family. Each is a torchlens::Error (its
/// message without the `torchlens: ` prefix, for a tool that prints its own)
/// and a standard exception a caller may already catch:
///  - UsageError (std::invalid_argument): wrong use of a torch-free API — an
///    unknown pass name, an option out of range;
///  - InvariantError (std::logic_error): a graph that breaks an invariant — a
///    cycle, a pass's postcondition, a failed validation inside a pipeline;
///  - TorchError (c10::Error, torchlens/torch_error.hpp): everything on the
///    torch side, raised with TORCHLENS_CHECK, as LibTorch users expect
///    (bad input, unknown layer keys, unsupported ops, a changed graph).
/// The prefix is added in one place: detail::prefixed().
///
/// Torch-free: the graph, pipeline and passes include this header only.

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace torchlens {

/// What every message torchlens raises starts with.
inline constexpr std::string_view kErrorPrefix = "torchlens: ";

namespace detail {
/// `torchlens: ` + message (once: a message that has it already is kept).
inline std::string prefixed(std::string_view message) {
  if (message.substr(0, kErrorPrefix.size()) == kErrorPrefix) return std::string(message);
  std::string out(kErrorPrefix);
  out += message;
  return out;
}
/// The message without the prefix.
inline std::string unprefixed(std::string_view message) {
  if (message.substr(0, kErrorPrefix.size()) == kErrorPrefix)
    message.remove_prefix(kErrorPrefix.size());
  return std::string(message);
}
} // namespace detail

/// The base every torchlens error has besides its standard exception type.
class Error {
 public:
  Error(const Error&) = default;
  Error& operator=(const Error&) = default;
  virtual ~Error() = default;
  /// The message without `torchlens: ` (and without LibTorch's backtrace).
  const std::string& message() const noexcept { return message_; }

 protected:
  explicit Error(std::string_view message) : message_(detail::unprefixed(message)) {}

 private:
  std::string message_;
};

/// Wrong use of a torch-free API: an unknown name, an option out of range.
class UsageError : public std::invalid_argument, public Error {
 public:
  explicit UsageError(std::string_view message)
      : std::invalid_argument(detail::prefixed(message)), Error(message) {}
};

/// A graph that breaks an invariant.
class InvariantError : public std::logic_error, public Error {
 public:
  explicit InvariantError(std::string_view message)
      : std::logic_error(detail::prefixed(message)), Error(message) {}
};

} // namespace torchlens
