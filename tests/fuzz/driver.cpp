// Replays a fuzz target without libFuzzer, for the test suite. For every file
// in the corpus folders named on the command line (seeds, inputs libFuzzer
// found interesting, crashes once fixed): the file itself, its truncations, and
// a fixed-seed set of mutations (bytes, syntax characters, long numbers,
// boundary integers over 4 and 8 bytes). A failure aborts inside the target.
// Usage: <target> [--mutations N] [--dump OUT] DIR...
// --dump writes every input, numbered in run order, into OUT before running it:
// the way to get the bytes of an input the driver made (to debug, or to keep
// as a corpus file).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::size_t runs = 0;
std::filesystem::path dump_dir;

void run(const std::string& bytes) {
  if (!dump_dir.empty()) {
    char name[32];
    std::snprintf(name, sizeof name, "%07zu", runs);
    std::ofstream(dump_dir / name, std::ios::binary) << bytes;
  }
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  ++runs;
}

void overwrite(std::string& s, std::size_t at, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes && at + static_cast<std::size_t>(i) < s.size(); ++i)
    s[at + static_cast<std::size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xFFU);
}

std::string mutate(std::string m, std::mt19937_64& rng) {
  static constexpr std::uint64_t kBoundaries[] = {0,          1,          0x7F,       0xFF,
                                                  0x7FFF,     0xFFFF,     0x7FFFFFFF, 0xFFFFFFFF,
                                                  1ULL << 32, 1ULL << 40, ~0ULL >> 1, ~0ULL};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !m.empty(); ++e) {
    const std::size_t at = rng() % m.size();
    switch (rng() % 6) {
      case 0:
        m[at] = static_cast<char>(rng());
        break;
      case 1:
        m[at] = "0123456789(),'-:[]{}\" "[rng() % 22];
        break;
      case 2:
        m.insert(at, std::string(1 + rng() % 24, "9,([{"[rng() % 5]));
        break;
      case 3:
        m.erase(at, 1 + rng() % 8);
        break;
      case 4:
        overwrite(m, at, kBoundaries[rng() % std::size(kBoundaries)], 4);
        break;
      default:
        overwrite(m, at, kBoundaries[rng() % std::size(kBoundaries)], 8);
        break;
    }
  }
  return m;
}

} // namespace

int main(int argc, char** argv) {
  int mutations = 2000;
  std::vector<std::filesystem::path> dirs;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--mutations") == 0 && a + 1 < argc) {
      mutations = std::atoi(argv[++a]);
    } else if (std::strcmp(argv[a], "--dump") == 0 && a + 1 < argc) {
      dump_dir = argv[++a];
      std::filesystem::create_directories(dump_dir);
    } else {
      dirs.emplace_back(argv[a]);
    }
  }
  std::size_t files = 0;
  std::mt19937_64 rng(20261202); // fixed: the same inputs on every run
  for (const auto& dir : dirs) {
    if (!std::filesystem::is_directory(dir)) {
      std::fprintf(stderr, "fuzz driver: no corpus folder %s\n", dir.c_str());
      return 1;
    }
    std::vector<std::filesystem::path> paths;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.is_regular_file()) paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      std::ifstream f(path, std::ios::binary);
      const std::string seed{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
      ++files;
      run(seed);
      const std::size_t step = std::max<std::size_t>(1, seed.size() / 512);
      for (std::size_t n = 0; n < seed.size(); n += step) run(seed.substr(0, n));
      for (int i = 0; i < mutations; ++i) run(mutate(seed, rng));
    }
  }
  if (files == 0) {
    std::fprintf(stderr, "fuzz driver: no corpus files\n");
    return 1;
  }
  std::printf("fuzz driver: %zu files, %zu inputs, none crashed or broke an invariant\n", files,
              runs);
  return 0;
}
