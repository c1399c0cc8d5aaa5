// The NumPy files torchlens reads and writes: round trips read back
// independently (the header parsed field by field, the bytes compared), and
// hostile files — every malformed header, a shape claiming more than the file
// holds (10^15 elements), dimensions that overflow — give a clear c10::Error,
// never a crash, an exception of another kind or an allocation.

#include <torchlens/io/model_file.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

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

// ---- TorchScript archives ------------------------------------------------------

namespace {

/// A TorchScript module defined and saved from C++: y = x @ w.
fs::path save_module(const std::string& name, const at::Tensor& w) {
  torch::jit::Module m("Tiny");
  m.register_parameter("w", w, false);
  m.define("def forward(self, x):\n  return x @ self.w\n");
  const fs::path p = fs::temp_directory_path() / ("torchlens_io_test_" + name + ".pt");
  m.save(p.string());
  return p;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string load_error(const fs::path& p, std::uint64_t limit = 0) {
  try {
    (void)io::load_torchscript(p.string(), limit);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

} // namespace

TEST_CASE("a sound archive loads and runs") {
  const auto w = torch::arange(6, torch::kFloat).reshape({2, 3});
  const auto p = save_module("sound", w);
  CHECK(load_error(p).empty());
  auto m = io::load_torchscript(p.string());
  const auto x = torch::ones({1, 2});
  CHECK(torch::equal(m.forward({x}).toTensor(), x.matmul(w)));
}

TEST_CASE("an archive whose entries claim more than the limit is refused before unpacking") {
  const auto p = save_module("bomb", torch::ones({4, 4}));
  std::string bytes = bytes_of(p);
  // the central directory entry of data/0 (its name follows the 46-byte header):
  // claim 3 GiB uncompressed, as a zip bomb's directory does
  std::size_t entry = bytes.find("PK\x01\x02");
  while (entry != std::string::npos &&
         bytes.substr(entry + 46, static_cast<unsigned char>(bytes[entry + 28])).find("data/0") ==
             std::string::npos) {
    entry = bytes.find("PK\x01\x02", entry + 4);
  }
  REQUIRE(entry != std::string::npos);
  const std::uint32_t claim = 3U << 30U;
  for (int i = 0; i < 4; ++i) bytes[entry + 24 + i] = static_cast<char>((claim >> (8 * i)) & 0xFFU);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  const std::string msg = load_error(p, 1ULL << 30U);
  CHECK(msg.find("unpacks to more than 1073741824 bytes") != std::string::npos);
  CHECK(msg.find("data/0 alone claims 3221225472") != std::string::npos);
}

TEST_CASE("truncated and foreign files give one clear error") {
  const auto p = save_module("cut", torch::ones({8, 8}));
  const std::string bytes = bytes_of(p);
  const auto q = fs::temp_directory_path() / "torchlens_io_test_cut_short.pt";
  std::ofstream(q, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  CHECK(load_error(q).find("no zip directory") != std::string::npos);
  std::ofstream(q, std::ios::binary | std::ios::trunc) << "not a zip archive";
  CHECK(load_error(q).find("too short to be a zip file") != std::string::npos); // 17 bytes < 22
  CHECK(load_error(q).find("is not a TorchScript archive") != std::string::npos);
  // a zip whose directory is sound but that holds no TorchScript: LibTorch's reason, one line
  const auto z = fs::temp_directory_path() / "torchlens_io_test_plain.npz";
  io::write_npz(z.string(), {{"a", torch::ones({2})}});
  const std::string msg = load_error(z);
  CHECK(msg.find("is not a TorchScript archive (") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
}

TEST_CASE("a tensor reaching past its storage is refused, after saving and loading") {
  // what LibTorch's unpickler builds from an archive that lies about a shape:
  // sizes [2, 2^24] over a 24-byte storage, saved as it is
  auto w = torch::arange(6, torch::kFloat);
  w.unsafeGetTensorImpl()->set_sizes_contiguous({2, 1 << 24});
  const auto p = save_module("absurd", w);
  auto m = torch::jit::load(p.string()); // LibTorch itself accepts it
  CHECK(m.attr("w").toTensor().size(1) == (1 << 24));
  const std::string msg = load_error(p);
  CAPTURE(msg);
  CHECK(msg.find("is corrupt or hostile: w (shape [2, 16777216]") != std::string::npos);
  CHECK(msg.find("reaches 134217728 bytes into a storage of 24") != std::string::npos);
  CHECK_THROWS_AS(io::check_tensor_bounds(m, "m"), c10::Error);
}

TEST_CASE("the zip directory checked is the one LibTorch reads: zip64 record first") {
  // miniz (LibTorch's zip reader) takes the zip64 end record whenever its
  // locator is there; a 32-bit end record claiming an empty directory must not
  // make the checks look at nothing while LibTorch reads everything
  const auto p = save_module("zip64", torch::ones({2, 2}));
  std::string bytes = bytes_of(p);
  const std::size_t end = bytes.rfind("PK\x05\x06");
  REQUIRE(end != std::string::npos);
  REQUIRE(end >= 20);
  REQUIRE(bytes.compare(end - 20, 4, "PK\x06\x07") == 0);        // LibTorch writes zip64 records
  for (std::size_t i = end + 8; i < end + 16; ++i) bytes[i] = 0; // no entries, no directory
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  CHECK(load_error(p).empty()); // LibTorch reads it, and so do the checks
  // one byte of data.pkl changed (its local header names it; the data follows)
  std::size_t local = bytes.find("PK\x03\x04");
  auto u16 = [&](std::size_t at) {
    return static_cast<std::size_t>(static_cast<unsigned char>(bytes[at])) |
           static_cast<std::size_t>(static_cast<unsigned char>(bytes[at + 1])) << 8U;
  };
  while (local != std::string::npos &&
         bytes.substr(local + 30, u16(local + 26)).find("data.pkl") == std::string::npos) {
    local = bytes.find("PK\x03\x04", local + 4);
  }
  REQUIRE(local != std::string::npos);
  bytes[local + 30 + u16(local + 26) + u16(local + 28) + 5] ^= 1;
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  CHECK(load_error(p).find("is corrupt: data.pkl does not match its checksum") !=
        std::string::npos);
  // found by libFuzzer: the same, with a 4 GiB string length in constants.pkl
  CHECK(load_error(fs::path(MODEL_FILES) / "regression_zip64_directory.pt")
            .find("does not match its checksum") != std::string::npos);
}

TEST_CASE("archives that lie inside their pickles are refused before LibTorch reads them") {
  // made by tests/fuzz/make_model_seeds.py from a torch.jit.save'd archive
  const fs::path dir = MODEL_FILES;
  CHECK(load_error(dir / "matmul.pt").empty());
  CHECK(load_error(dir / "traced_constant.pt").empty());
  // LibTorch would size the storage by the claim and read past its 24 bytes
  CHECK(load_error(dir / "storage_claim.pt")
            .find("data.pkl gives the storage data/0 (FloatStorage) 16777216 elements, but the "
                  "record holds 24 bytes") != std::string::npos);
  // LibTorch would allocate 4 GiB for one string
  CHECK(load_error(dir / "string_length.pt")
            .find("data.pkl is malformed at byte 107: an argument claims 4294967295 bytes") !=
        std::string::npos);
  // found by fuzzing: the same with a wrong checksum; mutated code LibTorch's
  // TorchScript parser crashed on (both caught by the checksums now)
  for (const char* name : {"regression_string_length.pt", "regression_code_checksum.pt"}) {
    CHECK(load_error(dir / name).find("is corrupt: data.pkl does not match its checksum") !=
          std::string::npos);
  }
  // found by the replay driver under LeakSanitizer: a version record miniz
  // cannot read (encrypted flag; a directory attribute, read as empty) made
  // LibTorch's reader constructor throw and leak its zip state
  CHECK(load_error(dir / "regression_encrypted_version.pt")
            .find("matmul/version is encrypted or patched") != std::string::npos);
  CHECK(load_error(dir / "regression_directory_version.pt")
            .find("matmul/version is marked as a directory") != std::string::npos);
  CHECK(load_error(dir / "absurd_shape.pt").find("is corrupt or hostile: w (shape [2, 16777216]") !=
        std::string::npos);
}
