// TorchScript archives checked around torch::jit::load: the zip directory read
// by hand first (PKWARE APPNOTE 4.3.14, zip64 included), the tensors the
// unpickler built checked against their storages after.

#include "crc32.hpp"
#include "pickle_scan.hpp"

#include <torchlens/detail/text.hpp>
#include <torchlens/io/model_file.hpp>
#include <torchlens/torch_error.hpp>

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/serialization/import.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>
#include <vector>

namespace torchlens::io {

namespace {

constexpr std::uint32_t kEndOfDirectory = 0x06054b50U;
constexpr std::uint32_t kZip64Locator = 0x07064b50U;
constexpr std::uint32_t kZip64EndOfDirectory = 0x06064b50U;
constexpr std::uint32_t kDirectoryEntry = 0x02014b50U;
constexpr std::uint32_t kLocalHeader = 0x04034b50U;
constexpr std::uint32_t kUnset32 = 0xFFFFFFFFU; // "see the zip64 field"
constexpr std::uint64_t kMaxDirectoryBytes = 256ULL << 20;

std::uint64_t le(std::string_view s, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) {
    v = (v << 8U) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  }
  return v;
}

std::string read_range(std::ifstream& f, std::uint64_t offset, std::uint64_t size) {
  std::string out(size, '\0');
  f.clear();
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(out.data(), static_cast<std::streamsize>(size));
  out.resize(static_cast<std::size_t>(std::max<std::streamsize>(f.gcount(), 0)));
  return out;
}

std::uint64_t physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<std::uint64_t>::max();
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

struct Entry {
  std::uint64_t size = 0;   // unpacked
  std::uint64_t packed = 0; // as stored
  std::uint64_t local = 0;  // offset of its local header
  std::uint32_t crc = 0;
  unsigned method = 0; // 0: stored
};

struct Directory {
  std::uint64_t offset = 0, size = 0, entries = 0;
};

/// The central directory's place, from the end-of-directory record, or from
/// the zip64 one whenever its locator is there: that is what miniz (LibTorch's
/// zip reader) does, saturated fields or not, and the directory checked here
/// must be the one LibTorch reads.
Directory find_directory(std::ifstream& f, std::uint64_t file_size, const std::string& path) {
  const std::uint64_t tail_size = std::min<std::uint64_t>(file_size, 22 + 0xFFFF);
  const std::string tail = read_range(f, file_size - tail_size, tail_size);
  TORCHLENS_CHECK(tail.size() >= 22, path,
                  " is not a TorchScript archive (too short to be a zip file)");
  std::size_t at = std::string::npos;
  for (std::size_t i = tail.size() - 22 + 1; i-- > 0;) {
    if (le(tail, i, 4) == kEndOfDirectory) {
      at = i;
      break;
    }
  }
  TORCHLENS_CHECK(at != std::string::npos, path,
                  " is not a TorchScript archive (no zip directory: not a zip file, or truncated)");
  Directory d{le(tail, at + 16, 4), le(tail, at + 12, 4), le(tail, at + 10, 2)};
  const bool saturated = d.offset == kUnset32 || d.size == kUnset32 || d.entries == 0xFFFF;
  const bool located = at >= 20 && le(tail, at - 20, 4) == kZip64Locator;
  TORCHLENS_CHECK(located || !saturated, path,
                  " is not a TorchScript archive (its zip directory needs a zip64 record that "
                  "is missing)");
  if (located) {
    const std::uint64_t record = le(tail, at - 20 + 8, 8);
    TORCHLENS_CHECK(file_size >= 56 && record <= file_size - 56, path,
                    " is corrupt (its zip64 record lies past the end of the file)");
    const std::string z = read_range(f, record, 56);
    TORCHLENS_CHECK(z.size() == 56 && le(z, 0, 4) == kZip64EndOfDirectory, path,
                    " is corrupt (bad zip64 directory record)");
    d = Directory{le(z, 48, 8), le(z, 40, 8), le(z, 32, 8)};
  }
  TORCHLENS_CHECK(d.offset <= file_size && d.size <= file_size - d.offset, path,
                  " is truncated or corrupt (its zip directory lies past the end of the file)");
  TORCHLENS_CHECK(d.size <= kMaxDirectoryBytes, path, " has a zip directory of ", d.size,
                  " bytes: refusing to read it");
  return d;
}

/// Bytes a strided tensor reaches into its storage, or nothing when that
/// overflows 64 bits or a stride is negative.
std::optional<std::uint64_t> reach(const at::Tensor& t) {
  std::uint64_t last = static_cast<std::uint64_t>(t.storage_offset());
  for (std::int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) < 0) return std::nullopt;
    std::uint64_t step = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(t.size(d) - 1),
                               static_cast<std::uint64_t>(t.stride(d)), &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return std::nullopt;
    }
  }
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(last + 1, static_cast<std::uint64_t>(t.element_size()), &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

void check_tensor(const at::Tensor& t, const std::string& what, const std::string& name) {
  if (!t.defined() || t.layout() != c10::kStrided || !t.has_storage() || t.numel() == 0) return;
  const auto needs = reach(t);
  const std::uint64_t holds = t.storage().nbytes();
  TORCHLENS_CHECK(needs && *needs <= holds, name, " is corrupt or hostile: ", what, " (shape ",
                  torchlens::detail::shape_as_list(t.sizes().vec()), ", strides ",
                  torchlens::detail::shape_as_list(t.strides().vec()), ", offset ",
                  t.storage_offset(), ") reaches ",
                  needs ? std::to_string(*needs) : std::string("past 2^64"),
                  " bytes into a storage of ", holds);
}

void check_value(const c10::IValue& v, const std::string& what, const std::string& name,
                 int depth = 0) {
  if (depth > 64) return; // a cycle through objects: tensors below were seen already
  if (v.isTensor()) {
    check_tensor(v.toTensor(), what, name);
  } else if (v.isTensorList()) {
    const auto list = v.toTensorList();
    for (std::size_t i = 0; i < list.size(); ++i)
      check_tensor(list.get(i), what + "." + std::to_string(i), name);
  } else if (v.isList()) {
    const auto list = v.toListRef();
    for (std::size_t i = 0; i < list.size(); ++i)
      check_value(list[i], what + "." + std::to_string(i), name, depth + 1);
  } else if (v.isTuple()) {
    const auto& items = v.toTupleRef().elements();
    for (std::size_t i = 0; i < items.size(); ++i)
      check_value(items[i], what + "." + std::to_string(i), name, depth + 1);
  } else if (v.isGenericDict()) {
    for (const auto& e : v.toGenericDict()) check_value(e.value(), what + "[]", name, depth + 1);
  }
}

void check_constants(torch::jit::Block* block, const std::string& function,
                     const std::string& name) {
  for (torch::jit::Node* n : block->nodes()) {
    if (n->kind() == c10::prim::Constant && n->outputs().size() == 1 &&
        n->output()->type()->kind() == c10::TypeKind::TensorType &&
        n->hasAttribute(c10::attr::value)) {
      check_tensor(n->t(c10::attr::value), "a tensor constant of " + function, name);
    }
    for (torch::jit::Block* b : n->blocks()) check_constants(b, function, name);
  }
}

[[noreturn]] void not_an_archive(const std::string& path, std::string why) {
  std::replace(why.begin(), why.end(), '\n', ' ');
  while (!why.empty() && why.back() == ' ') why.pop_back();
  TORCHLENS_CHECK(false, path, " is not a TorchScript archive (", why, ")");
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/// What LibTorch's PyTorchStreamReader checks when it opens an archive, after
/// its zip reader allocated its state: a reader whose constructor throws there
/// leaks that state (LibTorch 1.13: the destructor that frees it never runs),
/// so these are checked first. Records in one folder, named by the first
/// entry; a `version` record, stored, holding a format version LibTorch reads.
void check_reader_can_open(std::ifstream& f, const std::string& path,
                           const std::map<std::string, Entry>& entries, const std::string& first) {
  TORCHLENS_CHECK(!entries.empty(), path, " is not a TorchScript archive (it holds no files)");
  const auto slash = first.find('/');
  TORCHLENS_CHECK(slash != std::string::npos, path,
                  " is not a TorchScript archive (its files are not in a folder: a zip file, "
                  "but not one torch.jit.save wrote)");
  const std::string folder = first.substr(0, slash + 1);
  auto version = entries.find(folder + ".data/version");
  if (version == entries.end()) version = entries.find(folder + "version");
  TORCHLENS_CHECK(version != entries.end(), path,
                  " is not a TorchScript archive (it has no version record)");
  const Entry& e = version->second;
  TORCHLENS_CHECK(e.method == 0 && e.size == e.packed && e.size <= 32, path,
                  " is corrupt or not written by PyTorch (its version record is compressed or "
                  "longer than a version number)");
  const std::string header = read_range(f, e.local, 30);
  TORCHLENS_CHECK(header.size() == 30 && le(header, 0, 4) == kLocalHeader, path,
                  " is corrupt (bad local header for ", version->first, ")");
  const std::uint64_t data = e.local + 30 + le(header, 26, 2) + le(header, 28, 2);
  const std::string text = read_range(f, data, e.size);
  TORCHLENS_CHECK(text.size() == e.size, path, " is truncated (its version record)");
  std::size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::uint64_t number = 0;
  const std::size_t digits = i;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9' && number < (1ULL << 40); ++i) {
    number = number * 10 + static_cast<std::uint64_t>(text[i] - '0');
  }
  TORCHLENS_CHECK(i > digits, path, " is corrupt (its version record holds no number)");
  TORCHLENS_CHECK(number >= caffe2::serialize::kMinSupportedFileFormatVersion &&
                      number <= caffe2::serialize::kMaxSupportedFileFormatVersion,
                  path, " has file format version ", number, "; this LibTorch reads versions ",
                  caffe2::serialize::kMinSupportedFileFormatVersion, " to ",
                  caffe2::serialize::kMaxSupportedFileFormatVersion);
}

/// Every record but the storages read through LibTorch's own zip reader (which
/// does not check CRCs) and checked against its CRC-32; every pickle walked
/// (pickle_scan.hpp); each storage that data.pkl or constants.pkl names must
/// exist and hold the bytes its numel claims (LibTorch sizes the storage by the
/// claim, not by the record). Storages are not CRC-checked: they are most of
/// the file, and a flipped bit there changes a weight, not what LibTorch does.
/// `first` is the directory's first name: LibTorch takes the archive's folder
/// from it.
void check_records(const std::string& path, const std::map<std::string, Entry>& entries,
                   const std::string& first) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    not_an_archive(path, e.what_without_backtrace());
  }
  // records are named relative to the archive's folder, the first entry's
  const std::string folder = first.substr(0, first.find('/') + 1);
  for (const std::string& record : reader->getAllRecords()) {
    if (record.rfind("data/", 0) == 0 || record.rfind("constants/", 0) == 0) continue;
    const auto entry = entries.find(folder + record);
    // a record LibTorch sees that the directory read here does not list: the
    // two readers disagree about the file, and nothing checked here applies
    TORCHLENS_CHECK(entry != entries.end(), path, " is corrupt (LibTorch's zip reader ",
                    "finds a record ", record, " that its zip directory does not list)");
    std::tuple<at::DataPtr, std::size_t> got;
    try {
      got = reader->getRecord(record);
    } catch (const c10::Error& e) {
      not_an_archive(path, e.what_without_backtrace());
    }
    const std::string_view bytes(static_cast<const char*>(std::get<0>(got).get()),
                                 std::get<1>(got));
    TORCHLENS_CHECK(detail::crc32(bytes) == entry->second.crc, path, " is corrupt: ", record,
                    " does not match its checksum");
    if (!ends_with(record, ".pkl") && !ends_with(record, ".debug_pkl")) continue;
    const auto refs = pickle::scan(bytes, path + ": " + record);
    const std::string store = record == "data.pkl"        ? "data/"
                              : record == "constants.pkl" ? "constants/"
                                                          : "";
    if (store.empty()) continue;
    for (const auto& ref : refs) {
      const std::string name = store + ref.key;
      const auto it = entries.find(folder + name);
      TORCHLENS_CHECK(it != entries.end(), path, " is corrupt: ", record, " names the storage ",
                      name, ", which the archive does not hold");
      const std::uint64_t item = std::max<std::size_t>(1, pickle::storage_element_size(ref.type));
      std::uint64_t bytes_claimed = 0;
      TORCHLENS_CHECK(!__builtin_mul_overflow(ref.numel, item, &bytes_claimed) &&
                          bytes_claimed <= it->second.size,
                      path, " is corrupt or hostile: ", record, " gives the storage ", name, " (",
                      ref.type, ") ", ref.numel, " elements, but the record holds ",
                      it->second.size, " bytes");
    }
  }
}

} // namespace

void check_torchscript_archive(const std::string& path, std::uint64_t max_unpacked_bytes) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  TORCHLENS_CHECK(f.good(), "cannot open model file ", path);
  const auto end = f.tellg();
  TORCHLENS_CHECK(end >= 0, "cannot read model file ", path);
  const auto file_size = static_cast<std::uint64_t>(end);
  const Directory d = find_directory(f, file_size, path);
  const std::string dir = read_range(f, d.offset, d.size);
  TORCHLENS_CHECK(dir.size() == d.size, "cannot read the zip directory of ", path);

  const std::uint64_t limit = max_unpacked_bytes != 0 ? max_unpacked_bytes : physical_memory();
  std::uint64_t unpacked = 0;
  std::uint64_t entries = 0;
  std::map<std::string, Entry> by_name;
  std::string first;
  for (std::size_t at = 0; at + 46 <= dir.size(); ++entries) {
    TORCHLENS_CHECK(le(dir, at, 4) == kDirectoryEntry, path,
                    " is corrupt (bad zip directory entry ", entries, ")");
    std::uint64_t packed = le(dir, at + 20, 4);
    std::uint64_t size = le(dir, at + 24, 4);
    std::uint64_t local = le(dir, at + 42, 4);
    const std::size_t name_len = le(dir, at + 28, 2);
    const std::size_t extra_len = le(dir, at + 30, 2);
    const std::size_t comment_len = le(dir, at + 32, 2);
    const std::size_t next = at + 46 + name_len + extra_len + comment_len;
    TORCHLENS_CHECK(next <= dir.size(), path, " is corrupt (zip directory entry ", entries,
                    " runs past the directory)");
    const std::string name = dir.substr(at + 46, name_len);
    // zip64: the saturated fields, in this order, in extra field 0x0001
    for (std::size_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      const auto id = le(dir, x, 2);
      const std::size_t len = le(dir, x + 2, 2);
      if (id == 0x0001) {
        std::size_t p = x + 4;
        auto take = [&](std::uint64_t& field) {
          if (field != kUnset32) return;
          TORCHLENS_CHECK(p + 8 <= x + 4 + len && p + 8 <= dir.size(), path,
                          " is corrupt (short zip64 field for ", name, ")");
          field = le(dir, p, 8);
          p += 8;
        };
        take(size);
        take(packed);
        take(local);
      }
      x += 4 + len;
    }
    TORCHLENS_CHECK(local <= file_size && packed <= file_size - local, path,
                    " is truncated or corrupt (", name, " ends past the end of the file)");
    TORCHLENS_CHECK(size <= limit - std::min(unpacked, limit), path, " unpacks to more than ",
                    limit, " bytes (", name, " alone claims ", size, "): refusing to load it (",
                    max_unpacked_bytes != 0 ? "the limit given" : "this machine's memory",
                    "; a zip bomb?)");
    unpacked += size;
    // encrypted (bits 0, 6), patched (5) or with a masked header (13): miniz
    // refuses to read such a record, PyTorch never writes one
    TORCHLENS_CHECK((le(dir, at + 8, 2) & 0x2061U) == 0, path, " is not a TorchScript archive (",
                    name, " is encrypted or patched; PyTorch writes neither)");
    // a directory entry (name ending in '/', or the DOS directory attribute):
    // miniz reads it as empty, whatever its sizes say; PyTorch writes none
    TORCHLENS_CHECK((le(dir, at + 38, 4) & 0x10U) == 0 && (name.empty() || name.back() != '/'),
                    path, " is not a TorchScript archive (", name,
                    " is marked as a directory; PyTorch archives hold only files)");
    // two records of one name: which one a reader takes is up to the reader
    TORCHLENS_CHECK(by_name.count(name) == 0, path, " is corrupt (its zip directory ", "lists ",
                    name, " twice)");
    if (by_name.empty()) first = name;
    by_name[name] = Entry{size, packed, local, static_cast<std::uint32_t>(le(dir, at + 16, 4)),
                          static_cast<unsigned>(le(dir, at + 10, 2))};
    at = next;
  }
  TORCHLENS_CHECK(entries == d.entries, path, " is corrupt (its zip directory lists ", entries,
                  " entries, its end record ", d.entries, ")");
  check_reader_can_open(f, path, by_name, first);
  check_records(path, by_name, first);
}

void check_tensor_bounds(const torch::jit::Module& module, const std::string& name) {
  for (const auto& a : module.named_attributes(/*recurse=*/true)) {
    if (!a.value.isModule()) check_value(a.value, a.name, name);
  }
  const auto cu = module._ivalue()->compilation_unit();
  for (torch::jit::Function* fn : cu->get_functions()) {
    if (!fn->isGraphFunction()) continue;
    check_constants(torch::jit::toGraphFunction(*fn).graph()->block(),
                    fn->qualname().qualifiedName(), name);
  }
}

torch::jit::Module load_torchscript(const std::string& path, std::uint64_t max_unpacked_bytes) {
  check_torchscript_archive(path, max_unpacked_bytes);
  torch::jit::Module m;
  try {
    m = torch::jit::load(path);
  } catch (const c10::Error& e) {
    not_an_archive(path, e.what_without_backtrace());
  } catch (const std::exception& e) {
    not_an_archive(path, e.what());
  }
  // TorchScript compiles a function's body when first asked for its graph: the
  // constant check compiles them all, and an archive whose code does not
  // compile is refused here rather than at the first forward
  try {
    check_tensor_bounds(m, path);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    not_an_archive(path, std::string("its code does not compile: ") + e.what());
  }
  return m;
}

} // namespace torchlens::io
