// Sharded extraction (shards.hpp, docs/extract.md "Shards"): who this process
// is (--shard or the launcher's variables), the plan every shard checks, one
// shard's crash-safe files, and the merge and status that read them.

#include "../io/dtypes.hpp"
#include "fileio.hpp"
#include "index.hpp"
#include "prefetch.hpp"
#include "sha256.hpp"

#include <torchlens/detail/text.hpp>
#include <torchlens/extract/shards.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/version.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace torchlens::extract {

namespace fs = std::filesystem;
using namespace detail_io;
using detail::shape_as_list;
using index_file::Plan;
using index_file::Record;
using index_file::ShardProgress;

// ---- who this process is ------------------------------------------------------

std::optional<std::string> process_env(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

namespace {

/// A non-negative integer, all of `text`; nullopt otherwise.
std::optional<std::int64_t> whole_number(const std::string& text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

} // namespace

Shard parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  std::optional<std::int64_t> k, n;
  if (slash != std::string::npos) {
    k = whole_number(text.substr(0, slash));
    n = whole_number(text.substr(slash + 1));
  }
  if (!k || !n || *n <= 0 || *k >= *n) {
    throw ExtractError("bad --shard '" + text +
                       "': expected K/N with 0 <= K < N (shard K of N, counted from 0)");
  }
  return Shard{*k, *n, "--shard " + text};
}

Shard shard_from_environment(const EnvLookup& env) {
  auto number = [&](const std::string& name, const std::string& value) {
    const auto v = whole_number(value);
    if (!v) {
      throw ExtractError("the launcher variable " + name + "='" + value +
                         "' is not a non-negative integer; give --shard K/N");
    }
    return *v;
  };
  auto finish = [](std::int64_t index, std::int64_t count, std::string source) {
    if (count <= 0 || index >= count) {
      throw ExtractError("the launcher variables say shard " + std::to_string(index) + " of " +
                         std::to_string(count) + " (" + source +
                         "), which does not exist; give --shard K/N");
    }
    return Shard{index, count, std::move(source)};
  };
  if (const auto id = env("SLURM_ARRAY_TASK_ID")) {
    const auto count = env("SLURM_ARRAY_TASK_COUNT");
    if (!count) {
      throw ExtractError(
          "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; give "
          "--shard K/N");
    }
    const std::string min = env("SLURM_ARRAY_TASK_MIN").value_or("0");
    const std::int64_t i = number("SLURM_ARRAY_TASK_ID", *id);
    const std::int64_t m = number("SLURM_ARRAY_TASK_MIN", min);
    const std::int64_t n = number("SLURM_ARRAY_TASK_COUNT", *count);
    std::string source = "SLURM_ARRAY_TASK_ID=" + *id + " - SLURM_ARRAY_TASK_MIN=" + min +
                         " of SLURM_ARRAY_TASK_COUNT=" + *count;
    if (i < m || i - m >= n) {
      throw ExtractError("the Slurm array task " + source + " is not shard 0.." +
                         std::to_string(n - 1) + ": use a contiguous array (--array=0-" +
                         std::to_string(n - 1) + ", no step) or give --shard K/N");
    }
    return finish(i - m, n, std::move(source));
  }
  // rank / size pairs, in order of precedence
  const std::pair<const char*, const char*> pairs[] = {
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
      {"PMI_RANK", "PMI_SIZE"},
      {"PMIX_RANK", "SLURM_NTASKS"},
      {"SLURM_PROCID", "SLURM_NTASKS"},
  };
  for (const auto& [rank_name, size_name] : pairs) {
    const auto rank = env(rank_name);
    if (!rank) continue;
    const auto size = env(size_name);
    if (!size) {
      throw ExtractError(std::string(rank_name) + " is set but " + size_name +
                         " is not: the number of shards is unknown; give --shard K/N");
    }
    return finish(number(rank_name, *rank), number(size_name, *size),
                  std::string(rank_name) + "=" + *rank + " of " + size_name + "=" + *size);
  }
  return Shard{};
}

std::pair<std::int64_t, std::int64_t> shard_rows(std::int64_t n, std::int64_t batch,
                                                 std::int64_t index, std::int64_t count) {
  TORCHLENS_CHECK(n > 0 && batch > 0 && count > 0 && index >= 0 && index < count,
                  "shard_rows: bad arguments");
  const std::int64_t b = std::min(batch, n);
  const std::int64_t batches = (n + b - 1) / b;
  auto first_batch = [&](std::int64_t k) {
    // floor(k * batches / count) without overflow for any realistic count
    return k * (batches / count) + k * (batches % count) / count;
  };
  return {std::min(first_batch(index) * b, n), std::min(first_batch(index + 1) * b, n)};
}

std::vector<std::int64_t> RunStatus::to_resubmit() const {
  std::vector<std::int64_t> v;
  for (const auto& s : shards) {
    if (!s.done && !s.running) v.push_back(s.index);
  }
  return v;
}

// ---- one shard ----------------------------------------------------------------

namespace {

std::string shard_name(std::int64_t k, std::int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%05lld-of-%05lld", static_cast<long long>(k),
                static_cast<long long>(n));
  return buf;
}

std::string shard_label(std::int64_t k, std::int64_t n) {
  return "shard " + std::to_string(k) + "/" + std::to_string(n);
}

std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// The type a recorded dtype name (`float32`) stands for.
c10::ScalarType type_named(const std::string& name) {
  for (const auto& d : io::dtypes::kTable) {
    if (name == d.name && d.npy_descr != nullptr) return d.type;
  }
  throw ExtractError("unknown dtype '" + name + "' in an extraction record");
}

std::size_t item_size(const std::string& dtype) {
  return c10::elementSize(type_named(dtype));
}

/// Bytes of one row of a layer ([rows, ...] shape).
std::size_t row_bytes(const std::vector<std::int64_t>& shape, const std::string& dtype) {
  std::int64_t per_row = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) per_row *= shape[i];
  return static_cast<std::size_t>(per_row) * item_size(dtype);
}

/// The lock a shard holds while it runs; nullopt when another process has it.
std::optional<Fd> take_lock(const fs::path& path, int tries) {
  Fd f(path.string(), O_RDWR | O_CREAT);
  for (int i = 0; i < tries; ++i) {
    if (f.try_lock()) return f;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::nullopt;
}

Plan plan_of(const Stimuli& stimuli, const ExtractOptions& o, const std::optional<Plan>& recorded) {
  Plan p;
  p.torchlens_version = TORCHLENS_VERSION_STRING;
  p.model = absolute_text(o.model_path);
  if (!fs::is_regular_file(o.model_path)) {
    throw ExtractError(
        "a sharded run records the sha256 of the model file in its plan: give the "
        "model's file (ExtractOptions::model_path), not '" +
        o.model_path + "'");
  }
  p.model_sha256 = sha256_file(o.model_path);
  p.inputs = absolute_text(stimuli.path());
  p.num_stimuli = stimuli.size();
  p.stimulus_shape = stimuli.item_shape();
  p.stimulus_dtype = io::dtypes::name(stimuli.dtype());
  p.stimulus_ids = stimuli.ids();
  // options left out on --resume are the plan's
  p.keys = o.keys.empty() && recorded ? recorded->keys : o.keys;
  p.batch_size = o.batch_size.value_or(recorded ? recorded->batch_size : 32);
  p.seed = o.seed.value_or(recorded ? recorded->seed : 0);
  p.options = options_text(o, stimuli);
  p.num_shards = o.shard.count;
  if (p.keys.empty()) throw ExtractError("no layers to save: give --save KEY,KEY");
  if (p.batch_size <= 0) throw ExtractError("the batch size must be positive");
  for (std::int64_t k = 0; k < p.num_shards; ++k)
    p.shards.push_back(shard_rows(p.num_stimuli, p.batch_size, k, p.num_shards));
  return p;
}

} // namespace

ExtractResult detail_io::extract_shard(const MakeExtractor& make, const Stimuli& stimuli,
                                       const ExtractOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t k = o.shard.index, count = o.shard.count;
  if (k < 0 || k >= count) throw ExtractError("bad shard " + shard_label(k, count));
  const std::string who = shard_label(k, count);
  const fs::path dir = o.out_dir;
  if (fs::exists(dir) && !fs::is_directory(dir)) {
    throw ExtractError("--out " + dir.string() + " exists and is not a folder");
  }
  const fs::path plan_path = dir / "plan.json";
  if (fs::exists(dir / "index.json") && !fs::exists(plan_path)) {
    throw ExtractError(who + ": " + dir.string() +
                       " holds an unsharded run (index.json, no plan.json); choose another --out");
  }
  fs::create_directories(dir / "shards");

  // The plan: written once by whichever shard comes first, the same for all.
  std::optional<Plan> recorded;
  if (fs::exists(plan_path)) recorded = index_file::read_plan(plan_path, who);
  const Plan plan = plan_of(stimuli, o, recorded);
  if (!recorded && !create_once(plan_path, index_file::plan_json(plan))) {
    recorded = index_file::read_plan(plan_path, who); // another shard was first
  }
  if (recorded) {
    const std::string diff = index_file::plan_difference(*recorded, plan);
    if (!diff.empty()) {
      throw ExtractError(who + " does not match the plan in " + plan_path.string() + ": " + diff +
                         "; every shard of a run is the same command (a new run needs another "
                         "--out)");
    }
  }
  const std::string plan_sha = sha256_hex(read_text(plan_path));

  const std::string name = shard_name(k, count);
  const auto lock = take_lock(dir / "shards" / (name + ".lock"), 20);
  if (!lock) {
    throw ExtractError(who + " is being written by another process (it holds " +
                       (dir / "shards" / (name + ".lock")).string() + ")");
  }
  const fs::path sdir = dir / "shards" / name;
  const fs::path progress_path = sdir / "progress.json", done_path = sdir / "DONE";
  const auto [begin, end] = plan.shards[static_cast<std::size_t>(k)];
  const std::int64_t size = end - begin;

  ExtractResult result;
  result.num_stimuli = plan.num_stimuli;
  result.batch_size = plan.batch_size;
  result.seed = plan.seed;
  result.shard_begin = begin;
  result.shard_end = end;
  result.shard_dir = sdir.string();

  std::optional<ShardProgress> old;
  if (fs::exists(progress_path)) {
    old = index_file::read_progress(progress_path, who);
    if (old->plan_sha256 != plan_sha || old->begin != begin || old->end != end) {
      throw ExtractError(who + ": " + progress_path.string() +
                         " was written under another plan; remove " + sdir.string() +
                         " to extract this shard again");
    }
    if (!fs::exists(done_path) && !o.resume) {
      throw ExtractError(who + " was started before (" + std::to_string(old->rows_done) + "/" +
                         std::to_string(size) + " rows in " + sdir.string() +
                         "); pass --resume to continue it");
    }
  }
  auto fill_layers = [&](const std::vector<ShardProgress::Layer>& layers) {
    for (const auto& l : layers) {
      ExtractLayer e;
      e.label = l.label;
      e.key = l.key;
      e.op = l.op;
      e.module = l.module;
      e.shape = l.shape;
      e.gradient = l.gradient;
      result.layers.push_back(std::move(e));
    }
  };
  if (old && fs::exists(done_path)) { // nothing left to do
    fill_layers(old->layers);
    result.rows_done = old->rows_done;
    return result;
  }
  fs::create_directories(sdir);
  write_atomically(sdir / "plan.json", index_file::plan_json(plan)); // for merge's messages

  ShardProgress progress;
  progress.shard = k;
  progress.num_shards = count;
  progress.begin = begin;
  progress.end = end;
  progress.plan_sha256 = plan_sha;
  progress.rows_done = old ? old->rows_done : 0;

  const std::int64_t rows_per_batch = std::min(plan.batch_size, plan.num_stimuli);
  std::vector<Fd> files;
  std::vector<std::size_t> header_len, row_len;
  std::vector<std::string> descr;
  std::unique_ptr<Extractor> extractor;
  if (size > 0) {
    extractor = make(plan.keys, plan.seed, rows_per_batch, o.stop_early, o.gradients_of);
  }
  std::int64_t batches = 0;
  Prefetcher prefetch([&stimuli](std::int64_t s, std::int64_t c) { return stimuli.rows(s, c); },
                      begin + progress.rows_done, end, rows_per_batch, o.background_io);
  WriteBehind writer(o.background_io); // destroyed first: drains into the files
  for (std::int64_t start = begin + progress.rows_done; start < end; start += rows_per_batch) {
    if (o.max_batches && batches >= *o.max_batches) break;
    const std::int64_t rows = std::min(rows_per_batch, end - start);
    const at::Tensor batch = prefetch.next(start, rows);
    std::vector<at::Tensor> acts;
    try {
      acts = extractor->run(batch, batch_targets(o, start, rows));
    } catch (const GraphChanged& e) {
      throw GraphChanged(TORCHLENS_HERE, who + ", stimuli " + std::to_string(start) + ".." +
                                             std::to_string(start + rows - 1) + ": " + e.message());
    }
    if (files.empty()) {
      // the layers are known: record the structure, create or reopen the files
      progress.layers = layer_records<ShardProgress::Layer>(extractor->layers(), o, size);
      const std::string structure = extractor->structure_text();
      progress.structure_sha256 = sha256_hex(structure);
      if (old) {
        bool same = old->structure_sha256 == progress.structure_sha256 &&
                    old->layers.size() == progress.layers.size();
        for (std::size_t i = 0; same && i < old->layers.size(); ++i) {
          same = old->layers[i].label == progress.layers[i].label &&
                 old->layers[i].shape == progress.layers[i].shape &&
                 old->layers[i].dtype == progress.layers[i].dtype &&
                 old->layers[i].gradient == progress.layers[i].gradient;
        }
        if (!same) {
          throw ExtractError("cannot resume " + who +
                             ": this run's graph or layers differ from those recorded in " +
                             progress_path.string());
        }
      } else {
        write_atomically(sdir / "structure.txt", structure);
      }
      for (const auto& l : progress.layers) {
        const std::string path = (sdir / l.file).string();
        descr.push_back(npy_descr_of(type_named(l.dtype)));
        const std::size_t hlen = io::npy_header(descr.back(), l.shape).size();
        const std::size_t row = row_bytes(l.shape, l.dtype);
        if (old) {
          if (!fs::exists(path))
            throw ExtractError("cannot resume " + who + ": " + path + " is missing");
          const auto h = io::read_npy_header(path);
          if (h.data_offset != hlen || h.shape.empty() || h.shape[0] < progress.rows_done) {
            throw ExtractError("cannot resume " + who + ": " + path +
                               " does not hold the rows its progress record names");
          }
          files.emplace_back(path, O_WRONLY);
        } else {
          files.emplace_back(path, O_WRONLY | O_CREAT | O_TRUNC);
        }
        // drop whatever a killed batch left past the committed rows
        files.back().truncate(hlen + static_cast<std::size_t>(progress.rows_done) * row);
        const std::string h = growing_npy_header(descr.back(), l.shape, progress.rows_done, hlen);
        files.back().pwrite_all(h.data(), h.size(), 0);
        files.back().sync();
        header_len.push_back(hlen);
        row_len.push_back(row);
      }
      write_atomically(progress_path, index_file::progress_json(progress));
    }
    const auto& grads = extractor->gradients(); // the gradient files follow the activations
    acts.insert(acts.end(), grads.begin(), grads.end());
    TORCHLENS_CHECK(acts.size() == files.size(), "extract: ", acts.size(), " tensors for ",
                    files.size(), " files");
    // 1. the rows, flushed; 2. each header's row count, flushed; 3. the record
    // (on the writer's thread while the next batch runs)
    const std::int64_t at_row = start - begin;
    writer.submit([&, acts = std::move(acts), at_row, rows] {
      for (std::size_t i = 0; i < files.size(); ++i) {
        const at::Tensor t = as_written(acts[i], o);
        TORCHLENS_CHECK(
            static_cast<std::size_t>(t.nbytes()) == row_len[i] * static_cast<std::size_t>(rows),
            "layer ", progress.layers[i].label, " changed size");
        files[i].pwrite_all(t.data_ptr(), t.nbytes(),
                            header_len[i] + static_cast<std::size_t>(at_row) * row_len[i]);
      }
      for (auto& f : files) f.sync();
      for (std::size_t i = 0; i < files.size(); ++i) {
        const std::string h =
            growing_npy_header(descr[i], progress.layers[i].shape, at_row + rows, header_len[i]);
        files[i].pwrite_all(h.data(), h.size(), 0);
        files[i].sync();
      }
      progress.rows_done = at_row + rows;
      write_atomically(progress_path, index_file::progress_json(progress));
      if (o.on_batch) o.on_batch(progress.rows_done, size);
    });
    result.rows_this_run += rows;
    ++batches;
  }
  writer.finish();
  if (size == 0) write_atomically(progress_path, index_file::progress_json(progress));
  if (progress.rows_done == size) write_atomically(done_path, plan_sha + "\n");
  if (progress.layers.empty() && old) progress.layers = old->layers;
  fill_layers(progress.layers);
  result.rows_done = progress.rows_done;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

// ---- merge --------------------------------------------------------------------

namespace {

/// Copies `n` bytes from `in` at `in_off` to `out` at `out_off`: in the kernel
/// (copy_file_range) where the file system allows, else through a buffer.
void copy_range(const Fd& in, std::size_t in_off, const Fd& out, std::size_t out_off,
                std::size_t n) {
  while (n > 0) {
    auto src = static_cast<loff_t>(in_off), dst = static_cast<loff_t>(out_off);
    const ssize_t c = ::copy_file_range(in.get(), &src, out.get(), &dst, n, 0);
    if (c < 0 && errno == EINTR) continue;
    if (c <= 0) break; // not supported here (EXDEV, ENOSYS, EINVAL) or short: buffered
    in_off += static_cast<std::size_t>(c);
    out_off += static_cast<std::size_t>(c);
    n -= static_cast<std::size_t>(c);
  }
  std::vector<char> buf(std::min<std::size_t>(n, 8u << 20));
  while (n > 0) {
    const std::size_t take = std::min(n, buf.size());
    in.pread_all(buf.data(), take, in_off);
    out.pwrite_all(buf.data(), take, out_off);
    in_off += take;
    out_off += take;
    n -= take;
  }
}

/// The first line in which two structure.txt files differ, as a sentence.
std::string structure_difference(const std::string& a, const std::string& b,
                                 const std::string& who_a, const std::string& who_b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  while (true) {
    const bool ha = static_cast<bool>(std::getline(ia, la));
    const bool hb = static_cast<bool>(std::getline(ib, lb));
    if (!ha && !hb) return "their structure records differ";
    if (ha && hb && la == lb) continue;
    auto split = [](const std::string& line) -> std::pair<std::string, std::string> {
      const auto sp = line.find(' ');
      if (sp == std::string::npos) return {line, ""};
      return {line.substr(0, sp), line.substr(sp + 1)};
    };
    const auto [label_a, rest_a] = split(la);
    const auto [label_b, rest_b] = split(lb);
    if (!ha || !hb || label_a == "ops" || label_b == "ops") {
      return "the op counts differ (" + (ha ? la : std::string("no more ops")) + " in " + who_a +
             ", " + (hb ? lb : std::string("no more ops")) + " in " + who_b + ")";
    }
    return "first difference at " + label_a + " (" + rest_a + " in " + who_a + ", " + label_b +
           " " + rest_b + " in " + who_b + ")";
  }
}

/// The plan asks for per-layer statistics (ExtractOptions::statistics).
bool wants_statistics(const Plan& plan) {
  return ("; " + plan.options + ";").find("; statistics;") != std::string::npos;
}

bool index_says_complete(const fs::path& dir, const Plan& plan) {
  const fs::path ix = dir / "index.json";
  if (!fs::exists(ix)) return false;
  Record r;
  try {
    r = index_file::read_index(ix);
  } catch (const ExtractError&) {
    return false;
  }
  if (r.rows_done != r.num_stimuli || r.num_stimuli != plan.num_stimuli || r.keys != plan.keys ||
      r.batch_size != plan.batch_size || r.seed != plan.seed || r.layers.empty()) {
    return false;
  }
  for (const auto& l : r.layers) {
    std::error_code ec;
    const auto size = fs::file_size(dir / l.file, ec);
    const std::size_t want = io::npy_header(npy_descr_of(type_named(l.dtype)), l.shape).size() +
                             static_cast<std::size_t>(numel_of(l.shape)) * item_size(l.dtype);
    if (ec || size != want) return false;
  }
  if (wants_statistics(plan)) {
    std::vector<std::string> files;
    for (const auto& l : r.layers) {
      if (!l.gradient) files.push_back(l.file);
    }
    if (!statistics_present(dir, files)) return false;
  }
  return true;
}

} // namespace

MergeResult merge(const std::string& out_dir, bool delete_shards) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path dir = out_dir;
  const fs::path plan_path = dir / "plan.json";
  MergeResult result;
  if (!fs::is_directory(dir)) throw ExtractError("cannot merge: no folder " + dir.string());
  if (!fs::exists(plan_path)) {
    if (fs::exists(dir / "index.json")) {
      const Record r = index_file::read_index(dir / "index.json");
      if (r.rows_done == r.num_stimuli) { // an unsharded run: already what merge makes
        result.already_complete = true;
        result.num_stimuli = r.num_stimuli;
        result.num_shards = 1;
        for (const auto& l : r.layers) result.files.push_back(l.file);
        return result;
      }
      throw ExtractError("cannot merge: " + dir.string() +
                         " is an unsharded run that is not complete; continue it with --resume");
    }
    throw ExtractError("cannot merge: " + dir.string() +
                       " has no plan.json (it is not a sharded extraction)");
  }
  const Plan plan = index_file::read_plan(plan_path, "cannot merge");
  result.num_stimuli = plan.num_stimuli;
  result.num_shards = plan.num_shards;
  if (index_says_complete(dir, plan)) {
    result.already_complete = true;
    for (const auto& l : index_file::read_index(dir / "index.json").layers)
      result.files.push_back(l.file);
    if (delete_shards) fs::remove_all(dir / "shards");
    return result;
  }
  const std::string plan_sha = sha256_hex(read_text(plan_path));

  // every shard done, under this plan
  std::vector<ShardProgress> shards;
  std::vector<std::string> missing;
  for (std::int64_t k = 0; k < plan.num_shards; ++k) {
    const fs::path sdir = dir / "shards" / shard_name(k, plan.num_shards);
    const auto [begin, end] = plan.shards[static_cast<std::size_t>(k)];
    if (!fs::exists(sdir / "progress.json")) {
      missing.push_back(std::to_string(k) + " (not started)");
      shards.emplace_back();
      continue;
    }
    ShardProgress p = index_file::read_progress(sdir / "progress.json", "cannot merge");
    if (p.plan_sha256 != plan_sha || p.begin != begin || p.end != end) {
      std::string diff;
      if (fs::exists(sdir / "plan.json")) {
        diff = index_file::plan_difference(
            plan, index_file::read_plan(sdir / "plan.json", "cannot merge"));
      }
      throw ExtractError("cannot merge: " + shard_label(k, plan.num_shards) + " (" + sdir.string() +
                         ") was extracted under another plan" +
                         (diff.empty() ? std::string() : ": " + diff));
    }
    if (!fs::exists(sdir / "DONE")) {
      missing.push_back(std::to_string(k) + " (" + std::to_string(p.rows_done) + "/" +
                        std::to_string(end - begin) + " rows)");
    }
    shards.push_back(std::move(p));
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    throw ExtractError(
        "cannot merge: " + std::string(missing.size() == 1 ? "shard " : "shards ") + list + " of " +
        std::to_string(plan.num_shards) + (missing.size() == 1 ? " is" : " are") +
        " not done; run them (again) with --resume, see `torchlens status " + dir.string() + "`");
  }

  // the same graph everywhere
  std::optional<std::size_t> ref;
  std::string ref_structure;
  for (std::size_t k = 0; k < shards.size(); ++k) {
    const auto& p = shards[k];
    if (p.end == p.begin) continue;
    const fs::path sdir = dir / "shards" / shard_name(p.shard, plan.num_shards);
    if (!ref) {
      ref = k;
      ref_structure = read_text(sdir / "structure.txt");
      continue;
    }
    const auto& r = shards[*ref];
    bool same_layers = p.layers.size() == r.layers.size();
    for (std::size_t i = 0; same_layers && i < p.layers.size(); ++i) {
      std::vector<std::int64_t> a = p.layers[i].shape, b = r.layers[i].shape;
      a[0] = b[0] = 0;
      same_layers = p.layers[i].label == r.layers[i].label && a == b &&
                    p.layers[i].gradient == r.layers[i].gradient &&
                    p.layers[i].dtype == r.layers[i].dtype && p.layers[i].file == r.layers[i].file;
    }
    if (p.structure_sha256 != r.structure_sha256 || !same_layers) {
      const std::string diff = structure_difference(
          ref_structure, read_text(sdir / "structure.txt"), shard_label(r.shard, plan.num_shards),
          shard_label(p.shard, plan.num_shards));
      throw ExtractError(
          "cannot merge: " + shard_label(p.shard, plan.num_shards) +
          " ran a different graph than " + shard_label(r.shard, plan.num_shards) + ": " + diff +
          "; a data-dependent branch: these stimuli cannot share one file per layer");
    }
  }
  TORCHLENS_CHECK(ref.has_value(), "a plan without stimuli");

  // what an unsharded run records
  Record rec;
  rec.model = plan.model;
  rec.inputs = plan.inputs;
  rec.keys = plan.keys;
  rec.batch_size = plan.batch_size;
  rec.seed = plan.seed;
  rec.num_stimuli = plan.num_stimuli;
  rec.rows_done = plan.num_stimuli;
  rec.stimulus_shape = plan.stimulus_shape;
  rec.stimulus_dtype = plan.stimulus_dtype;
  rec.options = plan.options;
  rec.stimulus_ids = plan.stimulus_ids;
  for (const auto& l : shards[*ref].layers) {
    Record::Layer r;
    r.label = l.label;
    r.file = l.file;
    r.key = l.key;
    r.op = l.op;
    r.module = l.module;
    r.dtype = l.dtype;
    r.shape = l.shape;
    r.shape[0] = plan.num_stimuli;
    r.gradient = l.gradient;
    rec.layers.push_back(std::move(r));
  }

  // one layer at a time: beside its name, then renamed into place
  for (const auto& l : rec.layers) {
    result.files.push_back(l.file);
    const fs::path final_path = dir / l.file;
    const std::string descr = npy_descr_of(type_named(l.dtype));
    const std::string header = io::npy_header(descr, l.shape);
    const std::size_t row = row_bytes(l.shape, l.dtype);
    const std::size_t total = header.size() + static_cast<std::size_t>(plan.num_stimuli) * row;
    {
      std::error_code ec;
      if (fs::file_size(final_path, ec) == total && !ec && !fs::is_symlink(final_path)) {
        const auto h = io::read_npy_header(final_path.string());
        if (h.shape == l.shape && h.descr == descr) continue; // merged by an earlier call
      }
    }
    const fs::path tmp = final_path.string() + ".merging";
    {
      Fd out(tmp.string(), O_RDWR | O_CREAT | O_TRUNC);
      const std::string empty = growing_npy_header(descr, l.shape, 0, header.size());
      out.pwrite_all(empty.data(), empty.size(), 0);
      std::size_t at = header.size();
      for (const auto& p : shards) {
        if (p.end == p.begin) continue;
        const fs::path src = dir / "shards" / shard_name(p.shard, plan.num_shards) / l.file;
        const auto h = io::read_npy_header(src.string());
        const std::size_t bytes = static_cast<std::size_t>(p.end - p.begin) * row;
        if (h.shape.empty() || h.shape[0] != p.end - p.begin || h.descr != descr) {
          throw ExtractError("cannot merge: " + src.string() + " does not hold " +
                             std::to_string(p.end - p.begin) + " rows of " + descr);
        }
        Fd in(src.string(), O_RDONLY);
        copy_range(in, h.data_offset, out, at, bytes);
        at += bytes;
        result.bytes_copied += bytes;
      }
      out.sync();
      out.pwrite_all(header.data(), header.size(), 0);
      out.sync();
    }
    fs::rename(tmp, final_path);
    sync_dir(dir);
    ++result.layers_merged;
  }
  if (wants_statistics(plan)) { // of the activations
    std::vector<std::string> files;
    for (const auto& l : rec.layers) {
      if (!l.gradient) files.push_back(l.file);
    }
    if (!statistics_present(dir, files)) write_statistics(dir, files);
  }
  write_atomically(dir / "index.json", index_file::index_json(rec));
  if (delete_shards) fs::remove_all(dir / "shards");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

// ---- status -------------------------------------------------------------------

RunStatus status(const std::string& out_dir) {
  const fs::path dir = out_dir;
  RunStatus st;
  const fs::path plan_path = dir / "plan.json";
  if (!fs::exists(plan_path)) {
    if (!fs::exists(dir / "index.json")) {
      throw ExtractError(dir.string() + " is not an extraction (no plan.json, no index.json)");
    }
    const Record r = index_file::read_index(dir / "index.json");
    st.num_stimuli = r.num_stimuli;
    st.num_shards = 1;
    st.rows_done = r.rows_done;
    ShardState s;
    s.begin = 0;
    s.end = r.num_stimuli;
    s.rows_done = r.rows_done;
    s.started = true;
    s.done = r.rows_done == r.num_stimuli;
    st.shards.push_back(s);
    st.merged = s.done;
    return st;
  }
  const Plan plan = index_file::read_plan(plan_path, "status");
  st.num_stimuli = plan.num_stimuli;
  st.num_shards = plan.num_shards;
  st.merged = index_says_complete(dir, plan);
  for (std::int64_t k = 0; k < plan.num_shards; ++k) {
    const std::string name = shard_name(k, plan.num_shards);
    const fs::path sdir = dir / "shards" / name;
    ShardState s;
    s.index = k;
    std::tie(s.begin, s.end) = plan.shards[static_cast<std::size_t>(k)];
    if (st.merged) {
      s.done = s.started = true;
      s.rows_done = s.end - s.begin;
    } else {
      if (fs::exists(sdir / "progress.json")) {
        s.started = true;
        s.rows_done = index_file::read_progress(sdir / "progress.json", "status").rows_done;
      }
      s.done = fs::exists(sdir / "DONE");
      const fs::path lock = dir / "shards" / (name + ".lock");
      if (!s.done && fs::exists(lock)) s.running = !take_lock(lock, 1).has_value();
    }
    st.rows_done += s.rows_done;
    st.shards.push_back(s);
  }
  return st;
}

} // namespace torchlens::extract
