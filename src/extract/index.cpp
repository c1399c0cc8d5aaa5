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

std::string string_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + io::json_string(v[i]);
  return s + "]";
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
     << "  \"options\": " << io::json_string(r.options) << ",\n"
     << "  \"stimulus_ids\": " << string_list(r.stimulus_ids) << ",\n"
     << "  \"rows_done\": " << r.rows_done << ",\n"
     << "  \"complete\": " << (r.rows_done == r.num_stimuli ? "true" : "false") << ",\n"
     << "  \"layers\": [";
  // activations in "layers", per-stimulus gradients (if any) in "gradients"
  auto list = [&](bool gradients) {
    bool first = true;
    for (const auto& l : r.layers) {
      if (l.gradient != gradients) continue;
      os << (first ? "\n" : ",\n") << "    {\"label\": " << io::json_string(l.label)
         << ", \"file\": " << io::json_string(l.file) << ", \"key\": " << io::json_string(l.key)
         << ", \"op\": " << io::json_string(l.op) << ", \"module\": " << io::json_string(l.module)
         << ", \"shape\": " << detail::shape_as_list(l.shape)
         << ", \"dtype\": " << io::json_string(l.dtype) << "}";
      first = false;
    }
    os << (first ? "]" : "\n  ]");
  };
  list(false);
  if (std::any_of(r.layers.begin(), r.layers.end(), [](const auto& l) { return l.gradient; })) {
    os << ",\n  \"gradients\": [";
    list(true);
  }
  os << "\n}\n";
  return os.str();
}

namespace {

namespace pt = boost::property_tree;

/// A bounded JSON file as a property tree; `where` starts every error.
pt::ptree read_tree(const fs::path& path, const std::string& where, const std::string& what) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw ExtractError(where + " cannot be read");
  const auto size = f.tellg();
  if (size < 0 || size > kMaxIndexBytes) {
    throw ExtractError(where + " is not " + what + " (" + std::to_string(size) + " bytes)");
  }
  std::string text(static_cast<std::size_t>(size), '\0');
  f.seekg(0);
  f.read(text.data(), size);
  // Boost's JSON reader recurses once per level: bound the depth first
  if (nesting_depth(text) > kMaxDepth) {
    throw ExtractError(where + " is not " + what + " (nested deeper than " +
                       std::to_string(kMaxDepth) + " levels)");
  }
  pt::ptree tree;
  try {
    std::istringstream in(text);
    pt::read_json(in, tree);
  } catch (const pt::json_parser_error& e) {
    throw ExtractError(where + " is not valid JSON (" + e.message() + ")");
  }
  return tree;
}

std::vector<std::int64_t> ints(const pt::ptree& t) {
  std::vector<std::int64_t> v;
  for (const auto& c : t) v.push_back(c.second.get_value<std::int64_t>());
  return v;
}

std::vector<std::string> strings(const pt::ptree& t) {
  std::vector<std::string> v;
  for (const auto& c : t) v.push_back(c.second.get_value<std::string>());
  return v;
}

void check_file_name(const std::string& file, const std::string& label, const std::string& where) {
  if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
      file.find('\0') != std::string::npos) {
    throw ExtractError(where + " names the file '" + file + "' for " + label +
                       ": not a file name in the output folder");
  }
}

} // namespace

Record read_index(const fs::path& path) {
  const std::string where = "cannot resume: " + path.string();
  const pt::ptree tree = read_tree(path, where, "an extract index");
  Record r;
  try {
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
    r.options = tree.get<std::string>("options", "");
    if (auto ids = tree.get_child_optional("stimulus_ids")) r.stimulus_ids = strings(*ids);
    auto read_layers = [&](const pt::ptree& list, bool gradient) {
      for (const auto& c : list) {
        Record::Layer l;
        l.label = c.second.get<std::string>("label");
        l.file = c.second.get<std::string>("file");
        l.key = c.second.get<std::string>("key");
        l.op = c.second.get<std::string>("op", "");
        l.module = c.second.get<std::string>("module", "");
        l.dtype = c.second.get<std::string>("dtype");
        l.shape = ints(c.second.get_child("shape"));
        l.gradient = gradient;
        r.layers.push_back(std::move(l));
      }
    };
    read_layers(tree.get_child("layers"), false);
    if (auto g = tree.get_child_optional("gradients")) read_layers(*g, true);
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
    check_file_name(l.file, l.label, where);
  }
  return r;
}

// ---- plan.json ----------------------------------------------------------------

std::string plan_json(const Plan& p) {
  std::ostringstream os;
  os << "{\n"
     << "  \"format\": \"torchlens-extract-plan\",\n"
     << "  \"torchlens_version\": " << io::json_string(p.torchlens_version) << ",\n"
     << "  \"model\": " << io::json_string(p.model) << ",\n"
     << "  \"model_sha256\": " << io::json_string(p.model_sha256) << ",\n"
     << "  \"inputs\": " << io::json_string(p.inputs) << ",\n"
     << "  \"num_stimuli\": " << p.num_stimuli << ",\n"
     << "  \"stimulus_shape\": " << detail::shape_as_list(p.stimulus_shape) << ",\n"
     << "  \"stimulus_dtype\": " << io::json_string(p.stimulus_dtype) << ",\n"
     << "  \"stimulus_ids\": " << string_list(p.stimulus_ids) << ",\n"
     << "  \"keys\": " << string_list(p.keys) << ",\n"
     << "  \"batch_size\": " << p.batch_size << ",\n"
     << "  \"seed\": " << p.seed << ",\n"
     << "  \"options\": " << io::json_string(p.options) << ",\n"
     << "  \"num_shards\": " << p.num_shards << ",\n"
     << "  \"shards\": [";
  for (std::size_t i = 0; i < p.shards.size(); ++i) {
    os << (i ? ", " : "") << "[" << p.shards[i].first << ", " << p.shards[i].second << "]";
  }
  os << "]\n}\n";
  return os.str();
}

Plan read_plan(const fs::path& path, const std::string& what) {
  const std::string where = what + ": " + path.string();
  const pt::ptree tree = read_tree(path, where, "an extraction plan");
  Plan p;
  try {
    if (tree.get<std::string>("format") != "torchlens-extract-plan") {
      throw ExtractError(where + " is not an extraction plan (format '" +
                         tree.get<std::string>("format") + "')");
    }
    p.torchlens_version = tree.get<std::string>("torchlens_version");
    p.model = tree.get<std::string>("model");
    p.model_sha256 = tree.get<std::string>("model_sha256");
    p.inputs = tree.get<std::string>("inputs");
    p.num_stimuli = tree.get<std::int64_t>("num_stimuli");
    p.stimulus_shape = ints(tree.get_child("stimulus_shape"));
    p.stimulus_dtype = tree.get<std::string>("stimulus_dtype");
    p.stimulus_ids = strings(tree.get_child("stimulus_ids"));
    p.keys = strings(tree.get_child("keys"));
    p.batch_size = tree.get<std::int64_t>("batch_size");
    p.seed = tree.get<std::uint64_t>("seed");
    p.options = tree.get<std::string>("options");
    p.num_shards = tree.get<std::int64_t>("num_shards");
    for (const auto& c : tree.get_child("shards")) {
      const auto r = ints(c.second);
      if (r.size() != 2) throw ExtractError(where + " has a shard range that is not [begin, end]");
      p.shards.emplace_back(r[0], r[1]);
    }
  } catch (const pt::ptree_error& e) {
    throw ExtractError(where + " is not an extraction plan (" + e.what() + ")");
  }
  if (p.num_shards <= 0 || static_cast<std::size_t>(p.num_shards) != p.shards.size() ||
      p.num_stimuli <= 0 || p.batch_size <= 0) {
    throw ExtractError(where +
                       " is not a consistent extraction plan (shards, stimuli or batch "
                       "size out of range)");
  }
  std::int64_t next = 0;
  for (const auto& [b, e] : p.shards) {
    if (b != next || e < b) throw ExtractError(where + " has shard ranges that do not tile 0..N");
    next = e;
  }
  if (next != p.num_stimuli) throw ExtractError(where + " has shard ranges that do not tile 0..N");
  return p;
}

std::string plan_difference(const Plan& a, const Plan& b) {
  auto field = [](const std::string& what, const std::string& then, const std::string& now) {
    return what + " (" + then + " in the plan, " + now + " now)";
  };
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
    return s;
  };
  if (a.num_shards != b.num_shards)
    return field("the number of shards", std::to_string(a.num_shards),
                 std::to_string(b.num_shards));
  if (a.model != b.model) return field("the model", a.model, b.model);
  if (a.model_sha256 != b.model_sha256) {
    return field("the model file's sha256", a.model_sha256.substr(0, 12) + "...",
                 b.model_sha256.substr(0, 12) + "...: the file changed");
  }
  if (a.inputs != b.inputs) return field("the stimuli", a.inputs, b.inputs);
  if (a.num_stimuli != b.num_stimuli)
    return field("the number of stimuli", std::to_string(a.num_stimuli),
                 std::to_string(b.num_stimuli));
  if (a.stimulus_shape != b.stimulus_shape || a.stimulus_dtype != b.stimulus_dtype) {
    return field("the stimulus shape",
                 a.stimulus_dtype + " " + detail::shape_as_list(a.stimulus_shape),
                 b.stimulus_dtype + " " + detail::shape_as_list(b.stimulus_shape));
  }
  if (a.stimulus_ids != b.stimulus_ids) {
    std::size_t i = 0;
    while (i < a.stimulus_ids.size() && i < b.stimulus_ids.size() &&
           a.stimulus_ids[i] == b.stimulus_ids[i])
      ++i;
    auto at = [i](const std::vector<std::string>& v) {
      return i < v.size() ? "'" + v[i] + "'" : std::string("none");
    };
    return field("stimulus " + std::to_string(i) + "'s file name", at(a.stimulus_ids),
                 at(b.stimulus_ids));
  }
  if (a.keys != b.keys) return field("--save", join(a.keys), join(b.keys));
  if (a.batch_size != b.batch_size)
    return field("--batch-size", std::to_string(a.batch_size), std::to_string(b.batch_size));
  if (a.seed != b.seed) return field("--seed", std::to_string(a.seed), std::to_string(b.seed));
  if (a.options != b.options)
    return field("the options", "'" + a.options + "'", "'" + b.options + "'");
  if (a.shards != b.shards) return "the shard ranges";
  if (a.torchlens_version != b.torchlens_version)
    return field("the torchlens version", a.torchlens_version, b.torchlens_version);
  return {};
}

// ---- progress.json ------------------------------------------------------------

std::string progress_json(const ShardProgress& p) {
  std::ostringstream os;
  os << "{\n"
     << "  \"format\": \"torchlens-extract-shard\",\n"
     << "  \"shard\": " << p.shard << ",\n"
     << "  \"num_shards\": " << p.num_shards << ",\n"
     << "  \"begin\": " << p.begin << ",\n"
     << "  \"end\": " << p.end << ",\n"
     << "  \"rows_done\": " << p.rows_done << ",\n"
     << "  \"plan_sha256\": " << io::json_string(p.plan_sha256) << ",\n"
     << "  \"structure_sha256\": " << io::json_string(p.structure_sha256) << ",\n"
     << "  \"layers\": [";
  for (std::size_t i = 0; i < p.layers.size(); ++i) {
    const auto& l = p.layers[i];
    os << (i ? ",\n" : "\n") << "    {\"label\": " << io::json_string(l.label)
       << ", \"file\": " << io::json_string(l.file) << ", \"key\": " << io::json_string(l.key)
       << ", \"op\": " << io::json_string(l.op) << ", \"module\": " << io::json_string(l.module)
       << ", \"shape\": " << detail::shape_as_list(l.shape)
       << ", \"dtype\": " << io::json_string(l.dtype)
       << (l.gradient ? ", \"gradient\": true}" : "}");
  }
  os << (p.layers.empty() ? "]\n" : "\n  ]\n") << "}\n";
  return os.str();
}

ShardProgress read_progress(const fs::path& path, const std::string& what) {
  const std::string where = what + ": " + path.string();
  const pt::ptree tree = read_tree(path, where, "a shard's progress record");
  ShardProgress p;
  try {
    p.shard = tree.get<std::int64_t>("shard");
    p.num_shards = tree.get<std::int64_t>("num_shards");
    p.begin = tree.get<std::int64_t>("begin");
    p.end = tree.get<std::int64_t>("end");
    p.rows_done = tree.get<std::int64_t>("rows_done");
    p.plan_sha256 = tree.get<std::string>("plan_sha256");
    p.structure_sha256 = tree.get<std::string>("structure_sha256");
    for (const auto& c : tree.get_child("layers")) {
      ShardProgress::Layer l;
      l.label = c.second.get<std::string>("label");
      l.file = c.second.get<std::string>("file");
      l.key = c.second.get<std::string>("key");
      l.op = c.second.get<std::string>("op");
      l.module = c.second.get<std::string>("module");
      l.dtype = c.second.get<std::string>("dtype");
      l.shape = ints(c.second.get_child("shape"));
      l.gradient = c.second.get<bool>("gradient", false);
      check_file_name(l.file, l.label, where);
      p.layers.push_back(std::move(l));
    }
  } catch (const pt::ptree_error& e) {
    throw ExtractError(where + " is not a shard's progress record (" + e.what() + ")");
  }
  if (p.rows_done < 0 || p.begin < 0 || p.end < p.begin || p.rows_done > p.end - p.begin) {
    throw ExtractError(where + " has rows_done " + std::to_string(p.rows_done) +
                       " outside its range");
  }
  return p;
}

} // namespace torchlens::extract::index_file
