#pragma once
/// \file
/// torchlens::Name: a string stored once per process. The strings a log repeats
/// on every vertex (operator names, overloads, layer types, dtypes, devices,
/// autograd node names, equivalence types, schema argument names, module and
/// parameter addresses) are few and
/// shared by thousands of ops; a Name is one pointer (8 bytes, where a
/// std::string is 32 plus its heap part) to the one stored copy, and copying
/// it is copying the pointer. Torch-free, header-only (passes use it).
///
/// It reads like a `const std::string&` (it converts to one and to
/// std::string_view, compares with strings, prints, concatenates); it is
/// immutable: assign a new string to change it. The stored strings live until
/// the process ends (their number is bounded by the distinct names ever
/// logged, not by the number of ops).

#include <torchlens/detail/probe.hpp>

#include <compare>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <ostream>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace torchlens {

namespace detail {

/// One stored string and its hash (std::hash<std::string_view> of the text),
/// computed once when the string is interned: hashing a Name (a module
/// frame, a parameter or an argument being interned, op after op) reads it.
struct NameEntry {
  std::string text;
  std::size_t hash = 0;
};

/// The empty string: a default Name (every field of a new OpNode) points here
/// without a lookup (it only takes the address, so the order of static
/// initialisation does not matter). Not `constinit`: Clang 14 cannot
/// constant-initialise libstdc++ 12's std::string, though GCC does.
/// Its hash field is not set (std::hash is not constexpr, and computing it here
/// would make the entry dynamically initialised): Name::hash() asks for it.
inline const NameEntry empty_name{std::string(), 0};

/// The process-wide table. Reads take a shared lock; a new string takes the
/// exclusive one once. Entries never move (a deque grows at its end). The index
/// is open-addressed: each slot holds a string's hash beside its address, so a
/// lookup reads one slot and, on a hash match, the string (no list node).
class NameTable {
 public:
  static NameTable& instance() {
    static NameTable* table = new NameTable(); // never destroyed: Names outlive statics
    return *table;
  }

  const NameEntry* intern(std::string_view s) {
    if (s.empty()) return &empty_name;
    const std::size_t h = std::hash<std::string_view>{}(s);
    {
      std::shared_lock lock(mutex_);
      if (const NameEntry* e = find(s, h)) return e;
    }
    std::unique_lock lock(mutex_);
    if (const NameEntry* e = find(s, h)) return e;
    if ((entries_.size() + 1) * 2 > slots_.size()) grow();
    const NameEntry& e = entries_.emplace_back(NameEntry{std::string(s), h});
    place({h, &e});
    return &e;
  }

 private:
  struct Slot {
    std::size_t hash = 0;
    const NameEntry* entry = nullptr; ///< nullptr: empty
  };
  NameTable() = default;
  [[nodiscard]] const NameEntry* find(std::string_view s, std::size_t h) const {
    if (slots_.empty()) return nullptr;
    return slots_[linear_probe(h, slots_.size(),
                               [&](std::size_t i) {
                                 const Slot& slot = slots_[i];
                                 return slot.entry == nullptr ||
                                        (slot.hash == h && slot.entry->text == s);
                               })]
        .entry;
  }
  void place(Slot x) {
    slots_[linear_probe(x.hash, slots_.size(),
                        [&](std::size_t i) { return slots_[i].entry == nullptr; })] = x;
  }
  void grow() {
    std::vector<Slot> old(slots_.empty() ? 256 : slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& x : old) {
      if (x.entry != nullptr) place(x);
    }
  }
  std::shared_mutex mutex_;
  std::deque<NameEntry> entries_;
  std::vector<Slot> slots_; ///< power-of-two size, at most half full
};

} // namespace detail

class Name {
 public:
  using size_type = std::string::size_type;
  static constexpr size_type npos = std::string::npos;

  constexpr Name() noexcept : e_(&detail::empty_name) {}
  Name(std::string_view s) : e_(detail::NameTable::instance().intern(s)) {}
  Name(const char* s) : Name(std::string_view(s)) {}
  Name(const std::string& s) : Name(std::string_view(s)) {}

  const std::string& str() const noexcept { return e_->text; }
  operator const std::string&() const noexcept { return e_->text; }
  operator std::string_view() const noexcept { return e_->text; }

  // ---- the read-only part of std::string ----
  const char* c_str() const noexcept { return e_->text.c_str(); }
  const char* data() const noexcept { return e_->text.data(); }
  size_type size() const noexcept { return e_->text.size(); }
  size_type length() const noexcept { return e_->text.size(); }
  bool empty() const noexcept { return e_->text.empty(); }
  auto begin() const noexcept { return e_->text.begin(); }
  auto end() const noexcept { return e_->text.end(); }
  char operator[](size_type i) const noexcept { return e_->text[i]; }
  size_type find(std::string_view s, size_type pos = 0) const noexcept {
    return e_->text.find(s, pos);
  }
  size_type find(char c, size_type pos = 0) const noexcept { return e_->text.find(c, pos); }
  size_type rfind(std::string_view s, size_type pos = npos) const noexcept {
    return e_->text.rfind(s, pos);
  }
  size_type rfind(char c, size_type pos = npos) const noexcept { return e_->text.rfind(c, pos); }
  std::string substr(size_type pos = 0, size_type n = npos) const {
    return e_->text.substr(pos, n);
  }
  bool starts_with(std::string_view s) const noexcept { return e_->text.starts_with(s); }
  bool ends_with(std::string_view s) const noexcept { return e_->text.ends_with(s); }
  /// Hash of the text (std::hash<std::string_view>), as for the string
  /// (computed once, when the text was interned).
  std::size_t hash() const noexcept {
    return e_ == &detail::empty_name ? std::hash<std::string_view>{}(std::string_view()) : e_->hash;
  }

  // ---- comparisons: by the stored copy, by text when two tables differ ----
  friend bool operator==(const Name& a, const Name& b) noexcept {
    return a.e_ == b.e_ || a.e_->text == b.e_->text;
  }
  friend bool operator==(const Name& a, std::string_view b) noexcept { return a.e_->text == b; }
  friend bool operator==(const Name& a, const std::string& b) noexcept { return a.e_->text == b; }
  friend bool operator==(const Name& a, const char* b) noexcept { return a.e_->text == b; }
  friend std::strong_ordering operator<=>(const Name& a, const Name& b) noexcept {
    return a.e_->text <=> b.e_->text;
  }
  friend std::strong_ordering operator<=>(const Name& a, std::string_view b) noexcept {
    return std::string_view(a.e_->text) <=> b;
  }
  friend std::strong_ordering operator<=>(const Name& a, const std::string& b) noexcept {
    return a.e_->text <=> b;
  }
  friend std::strong_ordering operator<=>(const Name& a, const char* b) noexcept {
    return a.e_->text <=> b;
  }

  // ---- text ----
  friend std::ostream& operator<<(std::ostream& os, const Name& n) { return os << n.e_->text; }
  friend std::string operator+(const Name& a, std::string_view b) {
    std::string s;
    s.reserve(a.size() + b.size());
    return s.append(a.e_->text).append(b);
  }
  friend std::string operator+(std::string_view a, const Name& b) {
    std::string s;
    s.reserve(a.size() + b.size());
    return s.append(a).append(b.e_->text);
  }
  friend std::string operator+(const Name& a, const char* b) { return a + std::string_view(b); }
  friend std::string operator+(const char* a, const Name& b) { return std::string_view(a) + b; }
  friend std::string operator+(const Name& a, const std::string& b) {
    return a + std::string_view(b);
  }
  friend std::string operator+(const std::string& a, const Name& b) {
    return std::string_view(a) + b;
  }
  friend std::string operator+(std::string&& a, const Name& b) {
    a.append(b.e_->text);
    return std::move(a);
  }
  friend std::string operator+(const Name& a, const Name& b) {
    return a + std::string_view(b.e_->text);
  }

 private:
  const detail::NameEntry* e_;
};

} // namespace torchlens

template <>
struct std::hash<torchlens::Name> {
  std::size_t operator()(const torchlens::Name& n) const noexcept { return n.hash(); }
};
