#pragma once
// Private to src/: the one dtype table. Each LibTorch scalar type torchlens
// names or writes: its name in logs and JSON (`float32`, as torch spells it in
// Python) and its .npy descriptor (little-endian, numpy's spelling), or none
// where .npy has no such type (bfloat16 is widened to float32 when written).

#include <c10/core/ScalarType.h>

#include <array>
#include <string>
#include <string_view>

namespace torchlens::io::dtypes {

struct Dtype {
  c10::ScalarType type;
  const char* name;
  const char* npy_descr; ///< nullptr: no .npy type
};

inline constexpr std::array<Dtype, 12> kTable{{
    {c10::ScalarType::Float, "float32", "<f4"},
    {c10::ScalarType::Double, "float64", "<f8"},
    {c10::ScalarType::Half, "float16", "<f2"},
    {c10::ScalarType::BFloat16, "bfloat16", nullptr},
    {c10::ScalarType::Long, "int64", "<i8"},
    {c10::ScalarType::Int, "int32", "<i4"},
    {c10::ScalarType::Short, "int16", "<i2"},
    {c10::ScalarType::Char, "int8", "|i1"},
    {c10::ScalarType::Byte, "uint8", "|u1"},
    {c10::ScalarType::Bool, "bool", "|b1"},
    {c10::ScalarType::ComplexFloat, "complex64", nullptr},
    {c10::ScalarType::ComplexDouble, "complex128", nullptr},
}};

/// The row of `type`, or nullptr.
inline const Dtype* find(c10::ScalarType type) {
  for (const auto& d : kTable) {
    if (d.type == type) return &d;
  }
  return nullptr;
}

/// The row whose .npy descriptor is `descr`, or nullptr.
inline const Dtype* find_npy(std::string_view descr) {
  for (const auto& d : kTable) {
    if (d.npy_descr != nullptr && descr == d.npy_descr) return &d;
  }
  return nullptr;
}

/// `float32`; LibTorch's own name for types outside the table.
inline std::string name(c10::ScalarType type) {
  const Dtype* d = find(type);
  return d != nullptr ? d->name : c10::toString(type);
}

/// The type an activation is written to .npy with (bfloat16 widened to float32).
inline c10::ScalarType npy_type(c10::ScalarType type) {
  return type == c10::ScalarType::BFloat16 ? c10::ScalarType::Float : type;
}

} // namespace torchlens::io::dtypes
