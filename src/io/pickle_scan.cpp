// The pickle walk of pickle_scan.hpp. Opcodes and arguments as Python's
// pickletools documents them (protocols 0-5); the stack is modelled only as
// far as it matters: its depth, the MARKs, and small tuples of scalars (what a
// persistent storage id is).

#include "pickle_scan.hpp"

#include <torchlens/torch_error.hpp>

#include <c10/util/Exception.h>

#include <array>
#include <cstdlib>
#include <iterator>

namespace torchlens::io::pickle {

namespace {

struct Item {
  enum class Kind { other, str, integer, global, tuple } kind = Kind::other;
  std::string text;        // str, global ("torch FloatStorage")
  std::int64_t number = 0; // integer
  std::vector<Item> items; // tuple, only of scalars and at most kSmallTuple long
};
constexpr std::size_t kSmallTuple = 8;
constexpr std::size_t kShortText = 256; // longer strings are not kept

class Walker {
 public:
  Walker(std::string_view bytes, const std::string& name) : b_(bytes), name_(name) {}

  std::vector<StorageRef> run() {
    while (true) {
      TORCHLENS_CHECK(at_ < b_.size(), name_, " is malformed: it ends without STOP");
      start_ = at_;
      const auto op = static_cast<unsigned char>(b_[at_++]);
      ++ops_;
      if (op == '.') break;
      step(op);
    }
    return std::move(storages_);
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    TORCHLENS_CHECK(false, name_, " is malformed at byte ", start_, ": ", what);
  }
  std::uint64_t fixed(int n) {
    if (b_.size() - at_ < static_cast<std::size_t>(n)) bad("an argument runs past the end");
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i)
      v = (v << 8U) | static_cast<unsigned char>(b_[at_ + static_cast<std::size_t>(i)]);
    at_ += static_cast<std::size_t>(n);
    return v;
  }
  std::string_view counted(int width) {
    const std::uint64_t n = fixed(width);
    if (n > b_.size() - at_) {
      bad("an argument claims " + std::to_string(n) + " bytes, " + std::to_string(b_.size() - at_) +
          " remain");
    }
    const auto s = b_.substr(at_, static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return s;
  }
  std::string_view line() {
    const auto end = b_.find('\n', at_);
    if (end == std::string_view::npos) bad("a text argument has no end of line");
    const auto s = b_.substr(at_, end - at_);
    at_ = end + 1;
    return s;
  }
  void need(std::size_t n) const {
    if (stack_.size() < n + floor()) bad("the stack holds fewer values than the opcode takes");
  }
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Item pop() {
    need(1);
    Item it = std::move(stack_.back());
    stack_.pop_back();
    return it;
  }
  void push(Item it) { stack_.push_back(std::move(it)); }
  void push_other() { stack_.emplace_back(); }
  std::vector<Item> pop_mark() {
    if (marks_.empty()) bad("no MARK to pop to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Item> items(
        std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
        std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  static Item tuple(std::vector<Item> items) {
    Item t;
    t.kind = Item::Kind::tuple;
    if (items.size() <= kSmallTuple) {
      for (auto& i : items) {
        if (i.kind == Item::Kind::tuple) i = Item{};
      }
      t.items = std::move(items);
    }
    return t;
  }
  void memo_put(std::uint64_t id) {
    need(1);
    // a pickler numbers its memo entries 0, 1, 2, ...: an id past the opcodes
    // read so far would make the unpickler grow its memo table without bound
    if (id > ops_) {
      bad("memo id " + std::to_string(id) + " after " + std::to_string(ops_) + " opcodes");
    }
    if (id >= memo_.size()) memo_.resize(id + 1);
    memo_[id] = stack_.back();
  }
  void memo_get(std::uint64_t id) {
    if (id >= memo_.size()) bad("memo id " + std::to_string(id) + " was never set");
    push(memo_[id]);
  }
  void text(std::string_view s) {
    Item it;
    it.kind = Item::Kind::str;
    if (s.size() <= kShortText) it.text = std::string(s);
    push(std::move(it));
  }
  void integer(std::int64_t v) {
    Item it;
    it.kind = Item::Kind::integer;
    it.number = v;
    push(std::move(it));
  }
  void persistent_id(const Item& id) {
    // ('storage', torch.XStorage, key, location, numel)
    if (id.kind != Item::Kind::tuple || id.items.size() != 5) return;
    const auto& f = id.items;
    if (f[0].kind != Item::Kind::str || f[0].text != "storage") return;
    if (f[1].kind != Item::Kind::global || f[2].kind != Item::Kind::str ||
        f[4].kind != Item::Kind::integer || f[4].number < 0) {
      bad("a storage id that is not (name, type, key, location, numel)");
    }
    const auto space = f[1].text.find(' ');
    storages_.push_back(StorageRef{f[1].text.substr(space + 1), f[2].text,
                                   static_cast<std::uint64_t>(f[4].number)});
  }

  void step(unsigned char op) {
    switch (op) {
      case '(':
        marks_.push_back(stack_.size());
        break;
      case '0':
        pop();
        break;
      case '1':
        pop_mark();
        break;
      case '2':
        need(1);
        push(stack_.back());
        break;
      case 'N':
      case 0x88:
      case 0x89:
      case ']':
      case '}':
      case 0x8f:
        push_other();
        break;
      case ')':
        push(tuple({}));
        break;
      case 'J':
        integer(static_cast<std::int32_t>(fixed(4)));
        break;
      case 'K':
        integer(static_cast<std::int64_t>(fixed(1)));
        break;
      case 'M':
        integer(static_cast<std::int64_t>(fixed(2)));
        break;
      case 0x8a:
      case 0x8b: { // LONG1, LONG4: little-endian two's complement
        const auto s = counted(op == 0x8a ? 1 : 4);
        if (s.size() <= 8) {
          std::uint64_t v = 0;
          for (std::size_t i = s.size(); i-- > 0;) v = (v << 8U) | static_cast<unsigned char>(s[i]);
          if (!s.empty() && s.size() < 8 && (static_cast<unsigned char>(s.back()) & 0x80U)) {
            v |= ~0ULL << (8 * s.size());
          }
          integer(static_cast<std::int64_t>(v));
        } else {
          push_other();
        }
        break;
      }
      case 'G':
        fixed(8);
        push_other();
        break;
      case 'X':
        text(counted(4));
        break;
      case 0x8c:
        text(counted(1));
        break;
      case 0x8d:
        text(counted(8));
        break;
      case 'T':
      case 'B':
        counted(4);
        push_other();
        break;
      case 'U':
      case 'C':
        counted(1);
        push_other();
        break;
      case 0x8e:
      case 0x96:
        counted(8);
        push_other();
        break;
      case 'F':
      case 'I':
      case 'L':
      case 'S':
      case 'V':
        line();
        push_other();
        break;
      case 'P':
        line();
        push_other();
        break;
      case 'c': {
        const auto module = line();
        const auto cls = line();
        Item g;
        g.kind = Item::Kind::global;
        g.text = std::string(module) + " " + std::string(cls);
        push(std::move(g));
        break;
      }
      case 'i':
        line();
        line();
        pop_mark();
        push_other();
        break;
      case 0x93:
        pop();
        pop();
        push_other();
        break; // STACK_GLOBAL
      case 'g':
        memo_get(std::strtoull(std::string(line()).c_str(), nullptr, 10));
        break;
      case 'h':
        memo_get(fixed(1));
        break;
      case 'j':
        memo_get(fixed(4));
        break;
      case 'p':
        memo_put(std::strtoull(std::string(line()).c_str(), nullptr, 10));
        break;
      case 'q':
        memo_put(fixed(1));
        break;
      case 'r':
        memo_put(fixed(4));
        break;
      case 0x94:
        memo_put(memo_.size());
        break; // MEMOIZE
      case 'Q':
        persistent_id(pop());
        push_other();
        break;
      case 'R':
        pop();
        pop();
        push_other();
        break; // REDUCE: callable, args
      case 'b':
        need(2);
        pop();
        break; // BUILD: state onto the object
      case 0x81:
        pop();
        pop();
        push_other();
        break; // NEWOBJ
      case 0x92:
        pop();
        pop();
        pop();
        push_other();
        break; // NEWOBJ_EX
      case 'o':
        pop_mark();
        push_other();
        break;
      case 't':
        push(tuple(pop_mark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const std::size_t n = op - 0x84U;
        need(n);
        std::vector<Item> items(
            std::make_move_iterator(stack_.end() - static_cast<std::ptrdiff_t>(n)),
            std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        push(tuple(std::move(items)));
        break;
      }
      case 'l':
      case 'd':
      case 0x91:
        pop_mark();
        push_other();
        break;
      case 'a':
        need(2);
        pop();
        break;
      case 's':
        need(3);
        pop();
        pop();
        break;
      case 'e':
      case 'u':
      case 0x90:
        pop_mark();
        need(1);
        break;
      case 0x80:
        fixed(1);
        break; // PROTO
      case 0x95:
        fixed(8);
        break; // FRAME
      case 0x82:
        fixed(1);
        push_other();
        break; // EXT1
      case 0x83:
        fixed(2);
        push_other();
        break;
      case 0x84:
        fixed(4);
        push_other();
        break;
      case 0x97:
        push_other();
        break; // NEXT_BUFFER
      case 0x98:
        break; // READONLY_BUFFER
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        bad(std::string("unknown opcode 0x") + kHex[op >> 4U] + kHex[op & 15U]);
      }
    }
  }

  std::string_view b_;
  const std::string& name_;
  std::size_t at_ = 0, start_ = 0;
  std::uint64_t ops_ = 0;
  std::vector<Item> stack_;
  std::vector<std::size_t> marks_;
  std::vector<Item> memo_;
  std::vector<StorageRef> storages_;
};

} // namespace

std::size_t storage_element_size(const std::string& type) {
  struct Size {
    const char* type;
    std::size_t bytes;
  };
  static constexpr std::array<Size, 17> kSizes{{{"FloatStorage", 4},
                                                {"DoubleStorage", 8},
                                                {"HalfStorage", 2},
                                                {"BFloat16Storage", 2},
                                                {"LongStorage", 8},
                                                {"IntStorage", 4},
                                                {"ShortStorage", 2},
                                                {"CharStorage", 1},
                                                {"ByteStorage", 1},
                                                {"BoolStorage", 1},
                                                {"ComplexHalfStorage", 4},
                                                {"ComplexFloatStorage", 8},
                                                {"ComplexDoubleStorage", 16},
                                                {"QInt8Storage", 1},
                                                {"QUInt8Storage", 1},
                                                {"QInt32Storage", 4},
                                                {"QUInt4x2Storage", 1}}};
  for (const auto& s : kSizes) {
    if (type == s.type) return s.bytes;
  }
  return 0;
}

std::vector<StorageRef> scan(std::string_view bytes, const std::string& name) {
  return Walker(bytes, name).run();
}

} // namespace torchlens::io::pickle
