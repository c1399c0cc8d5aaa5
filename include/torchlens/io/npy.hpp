#pragma once
/// \file
/// NumPy interchange without numpy: `.npy` read/write and `.npz` archives
/// (stored zip, readable by `numpy.load`).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torchlens::io {

/// Bytes of a `.npy` file holding `t` (contiguous, little-endian).
std::string npy_bytes(const at::Tensor& t);
/// Writes `t` as a `.npy` file; throws c10::Error on I/O failure.
void write_npy(const std::string& path, const at::Tensor& t);
/// Reads a `.npy` file (float32/float64/int64/int32/uint8/bool, C order).
at::Tensor read_npy(const std::string& path);
/// The header of a `.npy` file: dtype descriptor, shape, and the data offset.
struct NpyHeader {
  std::string descr;
  std::vector<std::int64_t> shape;
  std::size_t data_offset = 0;
};
NpyHeader read_npy_header(const std::string& path);
/// Parses the header at the start of `bytes` (a whole .npy file or its head);
/// `name` names the source in errors. Throws c10::Error on anything malformed:
/// wrong magic or version, a header over 1 MiB, a missing or bad descr, Fortran
/// order, a shape that is not a tuple of non-negative integers.
NpyHeader parse_npy_header(std::string_view bytes, const std::string& name);
/// Bytes of data the header claims (items of `item_size` bytes), or
/// UINT64_MAX when a dimension is negative or the non-zero dimensions multiply
/// past int64 (even when another is 0): check it against the file before
/// allocating.
std::uint64_t npy_data_bytes(const NpyHeader& h, std::size_t item_size);
/// Header bytes (magic, version, dict, padding) for an array of `descr`/`shape`.
std::string npy_header(const std::string& descr, const std::vector<std::int64_t>& shape);
/// NumPy descriptor (`<f4`) of a tensor's dtype.
std::string npy_descr(const at::Tensor& t);

/// Writes a `.npz` archive: one `<name>.npy` member per entry, stored (no compression).
void write_npz(const std::string& path,
               const std::vector<std::pair<std::string, at::Tensor>>& arrays);

} // namespace torchlens::io
