// The NumPy files torchlens reads and writes: round trips read back
// independently (the header parsed field by field, the bytes compared), and
// hostile files — every malformed header, a shape claiming more than the file
// holds (10^15 elements), dimensions that overflow — give a clear c10::Error,
// never a crash, an exception of another kind or an allocation.

#include <torchlens/io/npy.hpp>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace io = torchlens::io;
namespace fs = std::filesystem;

namespace {

fs::path temp_file(const std::string& name, const std::string& bytes) {
  const fs::path p = fs::temp_directory_path() / ("torchlens_io_test_" + name);
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

/// A .npy v1 file: magic, version, header length, header dict (padded), data.
std::string npy(const std::string& dict, const std::string& data = "") {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

std::string error_of(const std::string& name, const std::string& bytes) {
  const auto p = temp_file(name, bytes);
  try {
    (void)io::read_npy(p.string());
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

} // namespace

TEST_CASE("npy round trip: header and bytes as numpy writes them") {
  const auto t = torch::arange(24, torch::kFloat).reshape({2, 3, 4});
  const auto p = fs::temp_directory_path() / "torchlens_io_test_round.npy";
  io::write_npy(p.string(), t);
  std::ifstream f(p, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto h = io::parse_npy_header(bytes, "round");
  CHECK(h.descr == "<f4");
  CHECK(h.shape == std::vector<std::int64_t>{2, 3, 4});
  CHECK(h.data_offset % 64 == 0); // numpy aligns the data
  CHECK(bytes.size() == h.data_offset + 24 * 4);
  CHECK(std::memcmp(bytes.data() + h.data_offset, t.data_ptr(), 24 * 4) == 0);
  CHECK(torch::equal(io::read_npy(p.string()), t));
  for (auto type : {torch::kDouble, torch::kLong, torch::kInt, torch::kUInt8, torch::kBool}) {
    const auto u = (torch::arange(6) % 2).to(type).reshape({3, 2});
    io::write_npy(p.string(), u);
    CHECK(torch::equal(io::read_npy(p.string()), u));
  }
  const auto scalar = torch::tensor(3.5);
  io::write_npy(p.string(), scalar);
  CHECK(io::read_npy(p.string()).dim() == 0);
  CHECK(io::read_npy(p.string()).item<float>() == 3.5F);
}

TEST_CASE("files numpy wrote read back as numpy wrote them") {
  const fs::path dir = NUMPY_FILES;
  auto read = [&](const char* name) { return io::read_npy((dir / name).string()); };
  CHECK(torch::equal(read("f4_2x3.npy"), torch::arange(6, torch::kFloat).reshape({2, 3})));
  CHECK(torch::equal(read("i8_4.npy"), torch::arange(4, torch::kLong)));
  CHECK(torch::equal(read("b1_2x2.npy"), torch::ones({2, 2}, torch::kBool)));
  CHECK(read("f8_0x5.npy").sizes() == c10::IntArrayRef{0, 5});
  CHECK(read("f8_scalar.npy").dim() == 0);
  CHECK(read("f8_scalar.npy").item<double>() == 2.5);
  CHECK(torch::equal(read("u1_3.npy"), torch::arange(3, torch::kByte)));
  CHECK(torch::equal(read("f4_v2.npy"), torch::arange(5, torch::kFloat))); // format 2.0
  CHECK(torch::equal(read("i4_v3.npy"), torch::arange(5, torch::kInt)));   // format 3.0
  CHECK_THROWS_WITH_AS(read("f4_fortran.npy"), doctest::Contains("Fortran"), c10::Error);
  CHECK_THROWS_WITH_AS(read("f4_bigendian.npy"), doctest::Contains("unsupported .npy dtype >f4"),
                       c10::Error);
}

TEST_CASE("hostile .npy files give one clear error each") {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  CHECK(error_of("ok", npy(ok_dict, std::string(8, '\0'))).empty());
  CHECK(error_of("empty ok", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }"))
            .empty());
  struct Case {
    const char* name;
    std::string bytes;
    const char* message;
  };
  const Case cases[] = {
      {"empty", "", "is not a .npy file"},
      {"magic", "\x93NUMPZ\x01\x00\x10\x00", "is not a .npy file"},
      {"version", std::string("\x93NUMPY\x07\x00\x10\x00", 10), "unknown .npy version"},
      {"truncated", npy(ok_dict).substr(0, 30), "truncated header"},
      {"huge header", std::string("\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12), "a .npy header of"},
      {"no descr", npy("{'fortran_order': False, 'shape': (2,), }"), "no dtype"},
      {"bad descr", npy("{'descr': <f4, 'fortran_order': False, 'shape': (2,), }"), "no dtype"},
      {"fortran", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }"), "Fortran"},
      {"no shape", npy("{'descr': '<f4', 'fortran_order': False, }"), "no shape"},
      {"shape garbage", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }"),
       "bad dimension"},
      {"negative", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }"),
       "bad dimension"},
      {"dtype",
       npy("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", std::string(16, '\0')),
       "unsupported .npy dtype"},
      {"short data", npy(ok_dict, std::string(7, '\0')), "holds only 7 bytes"},
      {"10^15 elements",
       npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000000,), }", "abcd"),
       "claims shape"},
      {"overflow",
       npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000, "
           "100000000000000000, 100000000000000000), }"),
       "claims shape"},
      {"empty but overflowing strides",
       npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1000000000000, "
           "1000000000000), }"),
       "claims shape"},
  };
  for (const auto& c : cases) {
    const std::string name = c.name;
    const std::string msg = error_of(name, c.bytes);
    CAPTURE(name);
    CAPTURE(msg);
    CHECK(msg.find(c.message) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos); // one line
  }
}
