// .npy and .npz, written and read by hand (format: numpy's NEP 1; zip: PKWARE
// APPNOTE, stored members with CRC-32).

#include "crc32.hpp"

#include "dtypes.hpp"

#include <torchlens/io/npy.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace torchlens::io {

namespace {

void put16(std::string& s, std::uint16_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

} // namespace

std::string npy_descr(const at::Tensor& t) {
  const dtypes::Dtype* d = dtypes::find(dtypes::npy_type(t.scalar_type()));
  TORCHLENS_CHECK(d != nullptr && d->npy_descr != nullptr, "no .npy dtype for ", t.scalar_type());
  return d->npy_descr;
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
  TORCHLENS_CHECK(f.good(), "cannot write ", path);
  const std::string bytes = npy_bytes(t);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TORCHLENS_CHECK(f.good(), "failed writing ", path);
}

namespace {

/// The value text after `'key':` in a .npy header dict, or "" when absent.
std::string dict_value(const std::string& dict, const std::string& key) {
  const auto k = dict.find("'" + key + "':");
  if (k == std::string::npos) return "";
  const auto begin = k + key.size() + 3;
  // a value ends at the next top-level comma or the closing brace
  int depth = 0;
  for (auto i = begin; i < dict.size(); ++i) {
    const char c = dict[i];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) return dict.substr(begin, i - begin);
    if (depth < 0) break;
  }
  return "";
}

std::string trimmed(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

constexpr std::size_t kMaxHeader = 1 << 20; // numpy writes a few hundred bytes

} // namespace

NpyHeader parse_npy_header(std::string_view bytes, const std::string& name) {
  TORCHLENS_CHECK(bytes.size() >= 10 && bytes.substr(0, 6) == "\x93NUMPY", name,
                  " is not a .npy file");
  const auto byte = [&](std::size_t i) {
    return static_cast<std::size_t>(static_cast<unsigned char>(bytes[i]));
  };
  const std::size_t major = byte(6);
  TORCHLENS_CHECK(major >= 1 && major <= 3, name, ": unknown .npy version ", major);
  std::size_t len = 0, offset = 0;
  if (major == 1) {
    len = byte(8) | (byte(9) << 8);
    offset = 10;
  } else {
    TORCHLENS_CHECK(bytes.size() >= 12, "truncated header in ", name);
    len = byte(8) | (byte(9) << 8) | (byte(10) << 16) | (byte(11) << 24);
    offset = 12;
  }
  TORCHLENS_CHECK(len <= kMaxHeader, name, ": a .npy header of ", len,
                  " bytes (numpy writes a few hundred)");
  TORCHLENS_CHECK(bytes.size() >= offset + len, "truncated header in ", name);
  const std::string dict(bytes.substr(offset, len));
  NpyHeader h;
  h.data_offset = offset + len;
  const std::string descr = trimmed(dict_value(dict, "descr"));
  TORCHLENS_CHECK(descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"') &&
                      descr.back() == descr.front(),
                  name, ": no dtype (descr) in its .npy header");
  h.descr = descr.substr(1, descr.size() - 2);
  TORCHLENS_CHECK(trimmed(dict_value(dict, "fortran_order")) == "False", name,
                  " is in Fortran order (or says nothing); save it with numpy.ascontiguousarray");
  const std::string shape = trimmed(dict_value(dict, "shape"));
  TORCHLENS_CHECK(shape.size() >= 2 && shape.front() == '(' && shape.back() == ')', name,
                  ": no shape in its .npy header");
  std::stringstream ss(shape.substr(1, shape.size() - 2));
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trimmed(item);
    if (item.empty()) continue;
    TORCHLENS_CHECK(item.size() <= 18 && item.find_first_not_of("0123456789") == std::string::npos,
                    name, ": bad dimension '", item, "' in its .npy shape");
    h.shape.push_back(std::stoll(item));
  }
  return h;
}

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  TORCHLENS_CHECK(f.good(), "cannot open ", path);
  std::string head(12, '\0');
  f.read(head.data(), 12);
  head.resize(static_cast<std::size_t>(f.gcount()));
  std::size_t len = 0;
  if (head.size() >= 10) {
    const auto b = [&](std::size_t i) {
      return static_cast<std::size_t>(static_cast<unsigned char>(head[i]));
    };
    len = head[6] == 1        ? (b(8) | (b(9) << 8))
          : head.size() >= 12 ? (b(8) | (b(9) << 8) | (b(10) << 16) | (b(11) << 24))
                              : 0;
  }
  if (len <= kMaxHeader) {
    std::string rest(len, '\0');
    f.read(rest.data(), static_cast<std::streamsize>(len));
    rest.resize(static_cast<std::size_t>(f.gcount()));
    head += rest;
  }
  return parse_npy_header(head, path);
}

std::uint64_t npy_data_bytes(const NpyHeader& h, std::size_t item_size) {
  // The strides of an empty array still multiply its other dimensions: the
  // product of every non-zero dimension must fit in int64 even when one is 0.
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  constexpr auto kLimit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t span = item_size;
  bool empty = false;
  for (auto d : h.shape) {
    if (d < 0) return kMax;
    const auto u = static_cast<std::uint64_t>(d);
    if (u == 0) {
      empty = true;
      continue;
    }
    if (span > kLimit / u) return kMax; // would overflow
    span *= u;
  }
  return empty ? 0 : span;
}

at::Tensor read_npy(const std::string& path) {
  const NpyHeader h = read_npy_header(path);
  const dtypes::Dtype* d = dtypes::find_npy(h.descr);
  TORCHLENS_CHECK(d != nullptr, "unsupported .npy dtype ", h.descr, " in ", path);
  const c10::ScalarType type = d->type;
  // what the header claims must fit in the file, before anything is allocated
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  const auto file_size = static_cast<std::uint64_t>(std::max<std::streamoff>(f.tellg(), 0));
  const std::uint64_t available = file_size > h.data_offset ? file_size - h.data_offset : 0;
  const std::uint64_t need = npy_data_bytes(h, c10::elementSize(type));
  TORCHLENS_CHECK(need <= available, path, " claims shape ", c10::IntArrayRef(h.shape),
                  " but holds only ", available, " bytes of data");
  at::Tensor t = at::empty(h.shape, at::TensorOptions().dtype(type));
  f.seekg(static_cast<std::streamoff>(h.data_offset));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  TORCHLENS_CHECK(f.gcount() == static_cast<std::streamsize>(t.nbytes()), path,
                  " holds fewer values than its shape says");
  return t;
}

void write_npz(const std::string& path,
               const std::vector<std::pair<std::string, at::Tensor>>& arrays) {
  std::ofstream f(path, std::ios::binary);
  TORCHLENS_CHECK(f.good(), "cannot write ", path);
  std::string central;
  std::uint32_t offset = 0;
  for (const auto& [name, tensor] : arrays) {
    const std::string file = name + ".npy";
    const std::string data = npy_bytes(tensor);
    TORCHLENS_CHECK(data.size() < 0xFFFFFFFFULL && offset < 0xFFFFFFFFU - data.size(),
                    ".npz archives over 4 GiB are not supported; use extract");
    const std::uint32_t crc = detail::crc32(data);
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
  TORCHLENS_CHECK(f.good(), "failed writing ", path);
}

} // namespace torchlens::io
