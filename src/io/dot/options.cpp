// The out-of-line parts of torchlens/io/dot_options.hpp: directions and DOT
// attribute lists. Torch-free.
#include <torchlens/error.hpp>
#include <torchlens/io/dot_options.hpp>

#include <boost/graph/graphviz.hpp>

#include <algorithm>
#include <ostream>
#include <stdexcept>

namespace torchlens::io {

std::string_view rankdir(Direction d) noexcept {
  switch (d) {
    case Direction::top_down:
      return "TB";
    case Direction::left_right:
      return "LR";
    case Direction::bottom_up:
      break;
  }
  return "BT";
}

Direction parse_direction(std::string_view text) {
  std::string s(text);
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (s == "bt" || s == "bottom-up" || s == "bottom_up" || s == "bottomup")
    return Direction::bottom_up;
  if (s == "tb" || s == "top-down" || s == "top_down" || s == "topdown") return Direction::top_down;
  if (s == "lr" || s == "left-right" || s == "left_right" || s == "leftright")
    return Direction::left_right;
  throw UsageError("unknown graph direction '" + std::string(text) +
                   "' (expected BT, TB or LR / bottom-up, top-down, left-right)");
}

DotAttributes& DotAttributes::set(std::string key, std::string value) {
  for (auto& kv : items_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return *this;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
  return *this;
}

const std::string* DotAttributes::get(std::string_view key) const {
  for (const auto& kv : items_) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

std::string DotAttributes::value(std::string_view key) const {
  const std::string* v = get(key);
  return v ? *v : std::string();
}

bool DotAttributes::erase(std::string_view key) {
  auto it =
      std::find_if(items_.begin(), items_.end(), [&](const auto& kv) { return kv.first == key; });
  if (it == items_.end()) return false;
  items_.erase(it);
  return true;
}

std::ostream& operator<<(std::ostream& os, const DotAttributes& a) {
  if (a.items_.empty()) return os;
  os << '[';
  bool first = true;
  for (const auto& [k, v] : a.items_) {
    if (!first) os << ", ";
    first = false;
    os << k << '=';
    if (v.size() >= 2 && v.front() == '<' && v.back() == '>') {
      os << v;
    } else {
      os << boost::escape_dot_string(v);
    }
  }
  return os << ']';
}

} // namespace torchlens::io
