#pragma once
// Fuzz targets read files, not memory: each writes its input to a scratch file
// of its own (per process) and aborts on a broken invariant.

#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace torchlens::fuzz {

[[noreturn]] inline void fail(const char* target, const char* what) {
  std::fprintf(stderr, "%s: %s\n", target, what);
  std::abort();
}

/// Writes `bytes` to this process's scratch file `<stem>.<ext>` and returns its path.
inline const std::string& write_scratch(std::string_view bytes, const char* file) {
  static const std::string dir =
      (std::filesystem::temp_directory_path() / ("torchlens_fuzz_" + std::to_string(::getpid())))
          .string();
  static std::string path;
  std::filesystem::create_directories(dir);
  path = dir + "/" + file;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

} // namespace torchlens::fuzz
