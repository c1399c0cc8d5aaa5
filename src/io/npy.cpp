// .npy and .npz, written and read by hand (format: numpy's NEP 1; zip: PKWARE
// APPNOTE, stored members with CRC-32).

#include <torchlens/io/npy.hpp>

#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstring>
#include <fstream>
#include <sstream>

namespace torchlens::io {

namespace {

struct DtypeMap {
  c10::ScalarType type;
  const char* descr;
};
constexpr std::array<DtypeMap, 9> kDtypes{{{c10::kFloat, "<f4"},
                                           {c10::kDouble, "<f8"},
                                           {c10::kHalf, "<f2"},
                                           {c10::kLong, "<i8"},
                                           {c10::kInt, "<i4"},
                                           {c10::kShort, "<i2"},
                                           {c10::kChar, "|i1"},
                                           {c10::kByte, "|u1"},
                                           {c10::kBool, "|b1"}}};

std::uint32_t crc32(const std::string& data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1U) ? 0xEDB88320U ^ (c >> 1U) : c >> 1U;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFU;
  for (unsigned char b : data) c = table[(c ^ b) & 0xFFU] ^ (c >> 8U);
  return c ^ 0xFFFFFFFFU;
}

void put16(std::string& s, std::uint16_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

} // namespace

std::string npy_descr(const at::Tensor& t) {
  for (const auto& d : kDtypes) {
    if (d.type == t.scalar_type()) return d.descr;
  }
  if (t.scalar_type() == c10::kBFloat16) return "<f4"; // widened on write
  TORCH_CHECK(false, "torchlens: no .npy dtype for ", t.scalar_type());
}

std::string npy_header(const std::string& descr, const std::vector<std::int64_t>& shape) {
  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict << shape[i] << (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  }
  dict << "), }";
  std::string body = dict.str();
  const std::size_t unpadded = 10 + body.size() + 1;
  body.append((64 - unpadded % 64) % 64, ' ');
  body.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  put16(out, static_cast<std::uint16_t>(body.size()));
  return out + body;
}

std::string npy_bytes(const at::Tensor& tensor) {
  at::Tensor t = tensor.detach().to(c10::kCPU);
  if (t.scalar_type() == c10::kBFloat16) t = t.to(c10::kFloat);
  t = t.contiguous();
  std::string out =
      npy_header(npy_descr(t), std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end()));
  out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  return out;
}

void write_npy(const std::string& path, const at::Tensor& t) {
  std::ofstream f(path, std::ios::binary);
  TORCH_CHECK(f.good(), "torchlens: cannot write ", path);
  const std::string bytes = npy_bytes(t);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TORCH_CHECK(f.good(), "torchlens: failed writing ", path);
}

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  TORCH_CHECK(f.good(), "torchlens: cannot open ", path);
  char magic[10];
  f.read(magic, 10);
  TORCH_CHECK(f.gcount() == 10 && std::memcmp(magic, "\x93NUMPY", 6) == 0, "torchlens: ", path,
              " is not a .npy file");
  std::size_t len = 0, offset = 0;
  if (magic[6] == 1) {
    len = static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8);
    offset = 10;
  } else {
    char more[2];
    f.read(more, 2);
    len = static_cast<unsigned char>(magic[8]) | (static_cast<unsigned char>(magic[9]) << 8) |
          (static_cast<unsigned char>(more[0]) << 16) |
          (static_cast<std::size_t>(static_cast<unsigned char>(more[1])) << 24);
    offset = 12;
  }
  std::string dict(len, '\0');
  f.read(dict.data(), static_cast<std::streamsize>(len));
  TORCH_CHECK(f.gcount() == static_cast<std::streamsize>(len), "torchlens: truncated header in ",
              path);
  NpyHeader h;
  h.data_offset = offset + len;
  const auto d = dict.find("'descr':");
  TORCH_CHECK(d != std::string::npos, "torchlens: no descr in ", path);
  const auto q1 = dict.find('\'', d + 8);
  const auto q2 = dict.find('\'', q1 + 1);
  h.descr = dict.substr(q1 + 1, q2 - q1 - 1);
  TORCH_CHECK(dict.find("'fortran_order': False") != std::string::npos, "torchlens: ", path,
              " is in Fortran order; save it with numpy.ascontiguousarray");
  const auto s = dict.find("'shape':");
  const auto p1 = dict.find('(', s);
  const auto p2 = dict.find(')', p1);
  std::string dims = dict.substr(p1 + 1, p2 - p1 - 1);
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto first = item.find_first_not_of(' ');
    if (first == std::string::npos) continue;
    h.shape.push_back(std::stoll(item.substr(first)));
  }
  return h;
}

at::Tensor read_npy(const std::string& path) {
  const NpyHeader h = read_npy_header(path);
  c10::ScalarType type = c10::kFloat;
  bool found = false;
  for (const auto& d : kDtypes) {
    if (h.descr == d.descr) {
      type = d.type;
      found = true;
    }
  }
  TORCH_CHECK(found, "torchlens: unsupported .npy dtype ", h.descr, " in ", path);
  at::Tensor t = at::empty(h.shape, at::TensorOptions().dtype(type));
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(h.data_offset));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  TORCH_CHECK(f.gcount() == static_cast<std::streamsize>(t.nbytes()), "torchlens: ", path,
              " holds fewer values than its shape says");
  return t;
}

void write_npz(const std::string& path,
               const std::vector<std::pair<std::string, at::Tensor>>& arrays) {
  std::ofstream f(path, std::ios::binary);
  TORCH_CHECK(f.good(), "torchlens: cannot write ", path);
  std::string central;
  std::uint32_t offset = 0;
  for (const auto& [name, tensor] : arrays) {
    const std::string file = name + ".npy";
    const std::string data = npy_bytes(tensor);
    TORCH_CHECK(data.size() < 0xFFFFFFFFULL && offset < 0xFFFFFFFFU - data.size(),
                "torchlens: .npz archives over 4 GiB are not supported; use extract");
    const std::uint32_t crc = crc32(data);
    std::string local;
    put32(local, 0x04034b50U);
    put16(local, 20);
    put16(local, 0);
    put16(local, 0); // stored
    put16(local, 0);
    put16(local, 0x21); // 1980-01-01
    put32(local, crc);
    put32(local, static_cast<std::uint32_t>(data.size()));
    put32(local, static_cast<std::uint32_t>(data.size()));
    put16(local, static_cast<std::uint16_t>(file.size()));
    put16(local, 0);
    local += file;
    f.write(local.data(), static_cast<std::streamsize>(local.size()));
    f.write(data.data(), static_cast<std::streamsize>(data.size()));

    put32(central, 0x02014b50U);
    put16(central, 20);
    put16(central, 20);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc);
    put32(central, static_cast<std::uint32_t>(data.size()));
    put32(central, static_cast<std::uint32_t>(data.size()));
    put16(central, static_cast<std::uint16_t>(file.size()));
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, offset);
    central += file;
    offset += static_cast<std::uint32_t>(local.size() + data.size());
  }
  std::string end;
  put32(end, 0x06054b50U);
  put16(end, 0);
  put16(end, 0);
  put16(end, static_cast<std::uint16_t>(arrays.size()));
  put16(end, static_cast<std::uint16_t>(arrays.size()));
  put32(end, static_cast<std::uint32_t>(central.size()));
  put32(end, offset);
  put16(end, 0);
  f.write(central.data(), static_cast<std::streamsize>(central.size()));
  f.write(end.data(), static_cast<std::streamsize>(end.size()));
  TORCH_CHECK(f.good(), "torchlens: failed writing ", path);
}

} // namespace torchlens::io
