#pragma once
/// \file
/// Private helpers of the standard passes: a map and a set of 64-bit keys
/// (interned texts' addresses, packed pairs of indices) that reuse their
/// storage from run to run.

#include <torchlens/detail/probe.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace torchlens::passes::detail {

/// A key for a FlatMap64 from an address: interned texts and sequences are
/// equal exactly when they are the same stored copy, so their addresses key them.
inline std::uint64_t address_key(const void* p) {
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p));
}

/// A map from 64-bit keys to indices: open addressing, linear probing;
/// clear() costs what was inserted since the last clear(), not the capacity.
class FlatMap64 {
 public:
  /// The value slot of key, holding `value` when key is new.
  std::size_t* try_emplace_ref(std::uint64_t key, std::size_t value) {
    if ((used_.size() + 1) * 2 > keys_.size()) grow();
    const std::size_t i = slot_of(key);
    if (values_[i] != kEmptyValue) return &values_[i];
    keys_[i] = key;
    values_[i] = value;
    used_.push_back(i);
    return &values_[i];
  }
  /// The value of key and true when it was inserted now (with `value`).
  std::pair<std::size_t, bool> try_emplace(std::uint64_t key, std::size_t value) {
    const std::size_t before = used_.size();
    const std::size_t* slot = try_emplace_ref(key, value);
    return {*slot, used_.size() != before};
  }
  /// The value of key, or nullptr when key was not inserted since the last clear().
  [[nodiscard]] const std::size_t* find(std::uint64_t key) const {
    if (keys_.empty()) return nullptr;
    const std::size_t i = slot_of(key);
    return values_[i] != kEmptyValue ? &values_[i] : nullptr;
  }
  /// True when key was inserted since the last clear().
  [[nodiscard]] bool contains(std::uint64_t key) const { return find(key) != nullptr; }
  /// Removes every key.
  void clear() {
    for (std::size_t i : used_) values_[i] = kEmptyValue;
    used_.clear();
  }

 private:
  static constexpr std::size_t kEmptyValue = static_cast<std::size_t>(-1);
  /// The slot holding key, or the empty slot where it would go.
  [[nodiscard]] std::size_t slot_of(std::uint64_t key) const {
    return torchlens::detail::linear_probe( // (mixes the key)
        static_cast<std::size_t>(key), keys_.size(),
        [&](std::size_t i) { return values_[i] == kEmptyValue || keys_[i] == key; });
  }
  void grow() {
    std::vector<std::uint64_t> old_keys;
    std::vector<std::size_t> old_values;
    old_keys.swap(keys_);
    old_values.swap(values_);
    const std::size_t size = old_keys.empty() ? 64 : old_keys.size() * 2;
    keys_.assign(size, 0);
    values_.assign(size, kEmptyValue);
    used_.clear();
    for (std::size_t i = 0; i < old_keys.size(); ++i) {
      if (old_values[i] != kEmptyValue) try_emplace_ref(old_keys[i], old_values[i]);
    }
  }
  std::vector<std::uint64_t> keys_;
  std::vector<std::size_t> values_;
  std::vector<std::size_t> used_; ///< occupied slots
};

/// A set of 64-bit keys (a FlatMap64 whose values are unused).
class FlatSet64 {
 public:
  /// Inserts key.
  void insert(std::uint64_t key) { map_.try_emplace_ref(key, 0); }
  /// True when key was inserted since the last clear().
  [[nodiscard]] bool contains(std::uint64_t key) const { return map_.contains(key); }
  /// Removes every key.
  void clear() { map_.clear(); }

 private:
  FlatMap64 map_;
};

} // namespace torchlens::passes::detail
