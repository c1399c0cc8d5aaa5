// The torch side of the error family (include/torchlens/torch_error.hpp).

#include <torchlens/torch_error.hpp>

#include <string_view>

namespace torchlens {

namespace {

/// The first line, without LibTorch's "RuntimeError: " wrapping (errors raised
/// inside TorchScript code), the prefix, trailing spaces and full stops.
std::string first_line(std::string_view text) {
  const auto rt = text.rfind("RuntimeError: ");
  if (rt != std::string_view::npos) text.remove_prefix(rt + 14);
  std::string line = detail::unprefixed(text.substr(0, text.find('\n')));
  while (!line.empty() && (line.back() == ' ' || line.back() == '.')) line.pop_back();
  return line;
}

} // namespace

std::string plain_message(const std::exception& e) {
  if (const auto* ours = dynamic_cast<const Error*>(&e)) return first_line(ours->message());
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    return first_line(c10->what_without_backtrace());
  }
  return first_line(e.what());
}

namespace detail {

void fail(const char* function, const char* file, std::uint32_t line, const std::string& message) {
  throw TorchError(c10::SourceLocation{function, file, line}, message);
}

void fail_key(const char* function, const char* file, std::uint32_t line,
              const std::string& message) {
  throw KeyError(c10::SourceLocation{function, file, line}, message);
}

} // namespace detail

} // namespace torchlens
