// index.json: written with the record's fields in a fixed order, read back
// with Boost.PropertyTree after bounding what the reader is given.

#include "index.hpp"

#include <torchlens/detail/text.hpp>
#include <torchlens/extract/extract.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/version.hpp>

#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace torchlens::extract::index_file {

namespace fs = std::filesystem;

namespace {

constexpr std::streamoff kMaxIndexBytes = 256LL << 20; // ~10^6 layers
constexpr int kMaxDepth = 16;                          // an index has 4 levels

/// Deepest nesting of [ and { outside strings.
int nesting_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

} // namespace

std::string index_json(const Record& r) {
  std::ostringstream os;
  os << "{\n"
     << "  \"format\": \"torchlens-extract\",\n"
     << "  \"torchlens_version\": " << io::json_string(std::string(TORCHLENS_VERSION_STRING))
     << ",\n"
     << "  \"model\": " << io::json_string(r.model) << ",\n"
     << "  \"inputs\": " << io::json_string(r.inputs) << ",\n"
     << "  \"keys\": [";
  for (std::size_t i = 0; i < r.keys.size(); ++i)
    os << (i ? ", " : "") << io::json_string(r.keys[i]);
  os << "],\n"
     << "  \"batch_size\": " << r.batch_size << ",\n"
     << "  \"seed\": " << r.seed << ",\n"
     << "  \"num_stimuli\": " << r.num_stimuli << ",\n"
     << "  \"stimulus_shape\": " << detail::shape_as_list(r.stimulus_shape) << ",\n"
     << "  \"stimulus_dtype\": " << io::json_string(r.stimulus_dtype) << ",\n"
     << "  \"rows_done\": " << r.rows_done << ",\n"
     << "  \"complete\": " << (r.rows_done == r.num_stimuli ? "true" : "false") << ",\n"
     << "  \"layers\": [";
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    const auto& l = r.layers[i];
    os << (i ? ",\n" : "\n") << "    {\"label\": " << io::json_string(l.label)
       << ", \"file\": " << io::json_string(l.file) << ", \"key\": " << io::json_string(l.key)
       << ", \"op\": " << io::json_string(l.op) << ", \"module\": " << io::json_string(l.module)
       << ", \"shape\": " << detail::shape_as_list(l.shape)
       << ", \"dtype\": " << io::json_string(l.dtype) << "}";
  }
  os << (r.layers.empty() ? "]\n" : "\n  ]\n") << "}\n";
  return os.str();
}

Record read_index(const fs::path& path) {
  namespace pt = boost::property_tree;
  const std::string where = "cannot resume: " + path.string();
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw ExtractError(where + " cannot be read");
  const auto size = f.tellg();
  if (size < 0 || size > kMaxIndexBytes) {
    throw ExtractError(where + " is not an extract index (" + std::to_string(size) + " bytes)");
  }
  std::string text(static_cast<std::size_t>(size), '\0');
  f.seekg(0);
  f.read(text.data(), size);
  // Boost's JSON reader recurses once per level: bound the depth first
  if (nesting_depth(text) > kMaxDepth) {
    throw ExtractError(where + " is not an extract index (nested deeper than " +
                       std::to_string(kMaxDepth) + " levels)");
  }
  pt::ptree tree;
  try {
    std::istringstream in(text);
    pt::read_json(in, tree);
  } catch (const pt::json_parser_error& e) {
    throw ExtractError(where + " is not valid JSON (" + e.message() + ")");
  }
  Record r;
  try {
    auto ints = [](const pt::ptree& t) {
      std::vector<std::int64_t> v;
      for (const auto& c : t) v.push_back(c.second.get_value<std::int64_t>());
      return v;
    };
    r.model = tree.get<std::string>("model");
    r.inputs = tree.get<std::string>("inputs");
    for (const auto& k : tree.get_child("keys"))
      r.keys.push_back(k.second.get_value<std::string>());
    r.batch_size = tree.get<std::int64_t>("batch_size");
    r.seed = tree.get<std::uint64_t>("seed");
    r.num_stimuli = tree.get<std::int64_t>("num_stimuli");
    r.rows_done = tree.get<std::int64_t>("rows_done");
    r.stimulus_shape = ints(tree.get_child("stimulus_shape"));
    r.stimulus_dtype = tree.get<std::string>("stimulus_dtype");
    for (const auto& c : tree.get_child("layers")) {
      Record::Layer l;
      l.label = c.second.get<std::string>("label");
      l.file = c.second.get<std::string>("file");
      l.key = c.second.get<std::string>("key");
      l.dtype = c.second.get<std::string>("dtype");
      l.shape = ints(c.second.get_child("shape"));
      r.layers.push_back(std::move(l));
    }
  } catch (const pt::ptree_error& e) {
    throw ExtractError(where + " is not an extract index (" + e.what() + ")");
  }
  if (r.rows_done < 0 || r.rows_done > r.num_stimuli) {
    throw ExtractError(where + " has rows_done " + std::to_string(r.rows_done) + " outside 0.." +
                       std::to_string(r.num_stimuli));
  }
  if (r.batch_size <= 0) {
    throw ExtractError(where + " has batch_size " + std::to_string(r.batch_size));
  }
  auto check_shape = [&](const std::vector<std::int64_t>& shape, const std::string& what) {
    for (auto d : shape) {
      if (d < 0) throw ExtractError(where + " has a negative dimension in " + what);
    }
  };
  check_shape(r.stimulus_shape, "stimulus_shape");
  for (const auto& l : r.layers) {
    check_shape(l.shape, "the shape of " + l.label);
    if (l.file.empty() || l.file == "." || l.file == ".." ||
        l.file.find('/') != std::string::npos || l.file.find('\0') != std::string::npos) {
      throw ExtractError(where + " names the file '" + l.file + "' for " + l.label +
                         ": not a file name in the output folder");
    }
  }
  return r;
}

} // namespace torchlens::extract::index_file
