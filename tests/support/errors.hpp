#pragma once
// What a call throws, as the one plain line users see ("" when it does not throw).

#include <torchlens/torch_error.hpp>

#include <exception>
#include <functional>
#include <string>

namespace torchlens::test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return torchlens::plain_message(e);
  }
  return "";
}

} // namespace torchlens::test
