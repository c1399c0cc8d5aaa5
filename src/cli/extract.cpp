// torchlens extract: activations of chosen layers over many stimuli, one
// [N, ...] .npy per layer plus index.json (docs/extract.md).

#include "common.hpp"

#include <torchlens/extract/extract.hpp>
#include <torchlens/extract/shards.hpp>
#include <torchlens/io/npy.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace torchlens::cli {

namespace {

namespace ex = torchlens::extract;

std::vector<std::string> split_keys(const std::string& text) {
  std::vector<std::string> keys;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(' ');
    const auto e = item.find_last_not_of(' ');
    if (b == std::string::npos) continue;
    keys.push_back(item.substr(b, e - b + 1));
  }
  if (keys.empty()) throw CommandLineError("--save needs layer keys: --save KEY,KEY");
  for (const auto& k : keys) {
    if (k == "all" || k == "none") {
      throw CommandLineError(
          "extract saves chosen layers: give their keys (--save conv2d_1,layer1), not '" + k + "'");
    }
  }
  return keys;
}

/// A non-negative integer flag.
std::int64_t size_flag(const Args& a, const std::string& flag) {
  const std::string v = *a.get(flag);
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size() || n < 0) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    throw CommandLineError("bad " + flag + " '" + v + "': expected a non-negative integer");
  }
}

/// Three numbers, `0.485,0.456,0.406`.
std::array<double, 3> three(const Args& a, const std::string& flag) {
  const std::string v = *a.get(flag);
  std::array<double, 3> out{};
  std::stringstream ss(v);
  std::string item;
  std::size_t i = 0;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const double d = std::stod(item, &used);
      if (used != item.size() || i >= 3) throw std::invalid_argument(item);
      out[i++] = d;
    } catch (const std::exception&) {
      i = 4;
      break;
    }
  }
  if (i != 3) {
    throw CommandLineError("bad " + flag + " '" + v +
                           "': expected three numbers, one per channel (R,G,B)");
  }
  return out;
}

/// --resize, --crop, --mean, --std, --channels (a folder of images).
ex::ImageOptions image_options(const Args& a) {
  ex::ImageOptions o;
  if (a.has("--resize")) o.resize = size_flag(a, "--resize");
  if (a.has("--crop")) o.crop = size_flag(a, "--crop");
  if (a.has("--mean")) o.mean = three(a, "--mean");
  if (a.has("--std")) o.std = three(a, "--std");
  if (auto c = a.get("--channels")) {
    if (*c != "rgb" && *c != "bgr") {
      throw CommandLineError("bad --channels '" + *c + "': use rgb or bgr");
    }
    o.bgr = *c == "bgr";
  }
  return o;
}

/// `[#####.....] 128/256 stimuli  41.3/s  ETA 3s` on stderr, redrawn in place.
class Progress {
 public:
  explicit Progress(bool on) : on_(on), t0_(std::chrono::steady_clock::now()) {}
  void operator()(std::int64_t done, std::int64_t total) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (first_done_ < 0) { // the rate counts from the first finished batch of this run
      first_done_ = done;
      t0_ = now;
    }
    const double s = std::chrono::duration<double>(now - t0_).count();
    const double rate = s > 0 ? static_cast<double>(done - first_done_) / s : 0;
    const int width = 30;
    const auto filled = static_cast<std::size_t>(width * done / std::max<std::int64_t>(total, 1));
    std::string bar(filled, '#');
    bar.append(static_cast<std::size_t>(width) - filled, '.');
    if (rate > 0) {
      std::fprintf(stderr, "\r[%s] %lld/%lld stimuli  %.1f/s  ETA %.0fs   ", bar.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total), rate,
                   static_cast<double>(total - done) / rate);
    } else {
      std::fprintf(stderr, "\r[%s] %lld/%lld stimuli   ", bar.c_str(), static_cast<long long>(done),
                   static_cast<long long>(total));
    }
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point t0_;
  std::int64_t first_done_ = -1;
};

} // namespace

int cmd_extract(const Args& a) {
  if (a.positional.size() != 1 || !a.has("--inputs") || !a.has("--out")) {
    throw CommandLineError(
        "usage: torchlens extract MODEL.pt --inputs STIMULI.npy|DIR --save KEY,KEY "
        "--batch-size B --out DIR [--shard K/N] [--resume] [--seed N] [--no-progress] "
        "(see torchlens --help)");
  }
  ex::ExtractOptions o;
  o.model_path = a.positional[0];
  o.out_dir = *a.get("--out");
  o.resume = a.has("--resume");
  o.stop_early = !a.has("--full-forward");
  o.flatten = a.has("--flatten");
  o.statistics = a.has("--statistics");
  if (auto d = a.get("--dtype")) {
    if (*d == "float16") {
      o.dtype = c10::kHalf;
    } else if (*d == "float32") {
      o.dtype = c10::kFloat;
    } else if (*d == "float64") {
      o.dtype = c10::kDouble;
    } else {
      throw CommandLineError("bad --dtype '" + *d + "': use float16, float32 or float64");
    }
  }
  if (auto g = a.get("--gradients-of")) {
    try {
      o.gradients_of = ex::GradientTarget::parse(*g);
    } catch (const ex::ExtractError& e) {
      throw CommandLineError(plain_message(e));
    }
  }
  if (auto t = a.get("--targets")) {
    if (!fs::exists(*t)) throw CommandLineError("targets not found: " + *t);
    try {
      o.targets = tl::io::read_npy(*t);
    } catch (const c10::Error& e) {
      throw CommandLineError("cannot read --targets " + *t + ": " + plain_message(e));
    }
  }
  if (auto s = a.get("--save")) o.keys = split_keys(*s);
  if (a.has("--batch-size")) o.batch_size = positive(a, "--batch-size");
  if (a.has("--seed")) o.seed = seed_of(a);
  if (!o.resume && o.keys.empty())
    throw CommandLineError("give the layers to save: --save KEY,KEY");

  try {
    o.shard = a.has("--shard") ? ex::parse_shard(*a.get("--shard")) : ex::shard_from_environment();
  } catch (const ex::ExtractError& e) {
    throw CommandLineError(plain_message(e));
  }
  const bool quiet = a.has("--quiet");
  const std::string inputs = *a.get("--inputs");
  if (!fs::exists(inputs)) throw CommandLineError("stimuli not found: " + inputs);
  auto model = load_model(o.model_path);
  Progress progress(!a.has("--no-progress") && ::isatty(STDERR_FILENO) == 1);
  o.on_batch = [&progress](std::int64_t done, std::int64_t total) { progress(done, total); };
  try {
    const auto stimuli = ex::Stimuli::open(inputs, image_options(a));
    for (const char* flag : {"--resize", "--crop", "--mean", "--std", "--channels"}) {
      if (a.has(flag) && !stimuli.is_images()) {
        throw CommandLineError(std::string(flag) + " applies to a folder of images; " + inputs +
                               " holds .npy stimuli");
      }
    }
    if (!quiet && !o.shard.source.empty()) {
      if (o.shard.count > 1) {
        const auto [b, e] =
            ex::shard_rows(stimuli.size(), o.batch_size.value_or(32), o.shard.index, o.shard.count);
        std::cout << "Shard " << o.shard.index << "/" << o.shard.count << " (from "
                  << o.shard.source << ")";
        if (o.batch_size) std::cout << ": stimuli " << b << ".." << e - 1;
        std::cout << std::endl;
      } else {
        std::cout << "One shard (from " << o.shard.source << "): writing " << o.out_dir
                  << " directly" << std::endl;
      }
    }
    const auto r = ex::extract_to_dir(model, stimuli, o);
    if (!quiet) {
      if (!r.shard_dir.empty()) {
        if (r.rows_this_run == 0) {
          std::cout << "Nothing to do: shard " << o.shard.index << "/" << o.shard.count
                    << " (stimuli " << r.shard_begin << ".." << r.shard_end - 1 << ") is done in "
                    << r.shard_dir << ".\n";
        } else {
          std::cout << "Extracted " << r.rows_this_run << " stimuli of shard " << o.shard.index
                    << "/" << o.shard.count << " (" << r.rows_done << "/"
                    << r.shard_end - r.shard_begin << " done, stimuli " << r.shard_begin << ".."
                    << r.shard_end - 1 << ") in " << r.seconds << " s into " << r.shard_dir << "\n";
        }
        if (r.rows_done == r.shard_end - r.shard_begin) {
          std::cout << "When every shard is done: torchlens merge " << o.out_dir << "\n";
        }
        return 0;
      }
      if (r.rows_this_run == 0) {
        std::cout << "Nothing to do: " << o.out_dir << " already holds all " << r.num_stimuli
                  << " stimuli.\n";
      } else {
        std::cout << "Extracted " << r.rows_this_run << " stimuli (" << r.rows_done << "/"
                  << r.num_stimuli << " done, batch size " << r.batch_size << ") in " << r.seconds
                  << " s into " << o.out_dir << ":\n";
      }
      for (const auto& l : r.layers) {
        std::cout << "  " << l.label << (l.gradient ? ".grad.npy  [" : ".npy  [");
        for (std::size_t i = 0; i < l.shape.size(); ++i) std::cout << (i ? ", " : "") << l.shape[i];
        std::cout << "]" << (l.key == l.label ? "" : "  (" + l.key + ")") << "\n";
      }
    }
  } catch (const ex::ExtractError& e) {
    throw CommandLineError(plain_message(e));
  }
  return 0;
}

int cmd_merge(const Args& a) {
  if (a.positional.size() != 1)
    throw CommandLineError("usage: torchlens merge DIR [--delete-shards]");
  try {
    const auto r = ex::merge(a.positional[0], a.has("--delete-shards"));
    if (a.has("--quiet")) return 0;
    if (r.already_complete) {
      std::cout << "Nothing to do: " << a.positional[0] << " already holds all " << r.num_stimuli
                << " stimuli (" << r.files.size() << " layer files).\n";
    } else {
      const double mb = static_cast<double>(r.bytes_copied) / 1e6;
      std::cout << "Merged " << r.num_shards << " shards (" << r.num_stimuli << " stimuli) into "
                << a.positional[0] << ": " << r.layers_merged << " of " << r.files.size()
                << " layer files written this time, " << mb << " MB in " << r.seconds << " s";
      if (r.seconds > 0) std::cout << " (" << mb / r.seconds << " MB/s)";
      std::cout << "\n";
    }
  } catch (const ex::ExtractError& e) {
    throw CommandLineError(plain_message(e));
  }
  return 0;
}

int cmd_status(const Args& a) {
  if (a.positional.size() != 1) throw CommandLineError("usage: torchlens status DIR");
  ex::RunStatus st;
  try {
    st = ex::status(a.positional[0]);
  } catch (const ex::ExtractError& e) {
    throw CommandLineError(plain_message(e));
  }
  std::int64_t done = 0;
  std::cout << a.positional[0] << ": " << st.num_stimuli << " stimuli in " << st.num_shards
            << (st.num_shards == 1 ? " shard" : " shards") << "\n";
  for (const auto& s : st.shards) {
    const char* state = s.done      ? "done"
                        : s.running ? "running"
                        : s.started ? "stopped"
                                    : "not started";
    done += s.done ? 1 : 0;
    std::cout << "  shard " << s.index << "/" << st.num_shards << "  stimuli " << s.begin << ".."
              << s.end - 1 << "  " << state << "  " << s.rows_done << "/" << s.end - s.begin
              << " rows\n";
  }
  std::cout << done << "/" << st.num_shards << " shards done, " << st.rows_done << "/"
            << st.num_stimuli << " rows committed; merged: " << (st.merged ? "yes" : "no") << "\n";
  const auto again = st.to_resubmit();
  if (!again.empty()) {
    std::string list;
    for (auto k : again) {
      if (!list.empty()) list += ',';
      list += std::to_string(k);
    }
    std::cout << "resubmit: " << list << "  (e.g. sbatch --array=" << list
              << " ..., each with --resume)\n";
  } else if (done == st.num_shards && !st.merged) {
    std::cout << "next: torchlens merge " << a.positional[0] << "\n";
  }
  return 0;
}

} // namespace torchlens::cli
