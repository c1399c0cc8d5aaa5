// Replays the .npy fuzz target without libFuzzer, for the test suite: valid seeds
// made here, every truncation and a fixed set of byte mutations of each, and
// every file of the corpus folders named on the command line (inputs libFuzzer
// found interesting, crashes once fixed). A failure aborts inside the target.

#include <torchlens/io/npy.hpp>

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::size_t runs = 0;

void run(const std::string& bytes) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  ++runs;
}

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  out.push_back(torchlens::io::npy_bytes(at::arange(6, at::kFloat).reshape({2, 3})));
  out.push_back(torchlens::io::npy_bytes(at::arange(4, at::kLong)));
  out.push_back(torchlens::io::npy_bytes(at::ones({2, 2}, at::kBool)));
  out.push_back(torchlens::io::npy_bytes(at::zeros({0, 5}, at::kDouble)));
  out.push_back(torchlens::io::npy_bytes(at::scalar_tensor(2.5)));
  out.push_back(torchlens::io::npy_bytes(at::arange(3, at::kByte)));
  return out;
}

} // namespace

int main(int argc, char** argv) {
  std::mt19937 rng(20261202); // fixed: the same inputs on every run
  for (const auto& seed : seeds()) {
    run(seed);
    for (std::size_t n = 0; n < seed.size(); ++n) run(seed.substr(0, n));
    for (int i = 0; i < 2000; ++i) {
      std::string m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const std::size_t at = rng() % m.size();
        switch (rng() % 4) {
          case 0:
            m[at] = static_cast<char>(rng());
            break; // any byte
          case 1:
            m[at] = "0123456789(),'-: "[rng() % 17];
            break; // header syntax
          case 2:
            m.insert(at, std::string(1 + rng() % 24, "9,("[rng() % 3]));
            break; // big numbers
          default:
            m.erase(at, 1 + rng() % 8);
            break;
        }
      }
      run(m);
    }
  }
  for (int a = 1; a < argc; ++a) {
    if (!std::filesystem::is_directory(argv[a])) continue;
    for (const auto& entry : std::filesystem::directory_iterator(argv[a])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream f(entry.path(), std::ios::binary);
      run(std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()));
    }
  }
  std::printf("fuzz driver: %zu inputs, none crashed or broke an invariant\n", runs);
  return 0;
}
