// torchlens extract: activations of chosen layers over many stimuli, one
// [N, ...] .npy per layer plus index.json (docs/extract.md).

#include "common.hpp"

#include <torchlens/extract/extract.hpp>

#include <unistd.h>

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

std::int64_t positive(const Args& a, const std::string& flag) {
  const std::string v = *a.get(flag);
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size() || n <= 0) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    throw CommandLineError("bad " + flag + " '" + v + "': expected a positive integer");
  }
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
        "--batch-size B --out DIR [--resume] [--seed N] [--no-progress]");
  }
  ex::ExtractOptions o;
  o.model_path = a.positional[0];
  o.out_dir = *a.get("--out");
  o.resume = a.has("--resume");
  if (auto s = a.get("--save")) o.keys = split_keys(*s);
  if (a.has("--batch-size")) o.batch_size = positive(a, "--batch-size");
  if (a.has("--seed")) o.seed = seed_of(a);
  if (!o.resume && o.keys.empty())
    throw CommandLineError("give the layers to save: --save KEY,KEY");

  const std::string inputs = *a.get("--inputs");
  if (!fs::exists(inputs)) throw CommandLineError("stimuli not found: " + inputs);
  auto model = load_model(o.model_path);
  Progress progress(!a.has("--no-progress") && ::isatty(STDERR_FILENO) == 1);
  o.on_batch = [&progress](std::int64_t done, std::int64_t total) { progress(done, total); };
  try {
    const auto stimuli = ex::Stimuli::open(inputs);
    const auto r = ex::extract_to_dir(model, stimuli, o);
    if (!a.has("--quiet")) {
      if (r.rows_this_run == 0) {
        std::cout << "Nothing to do: " << o.out_dir << " already holds all " << r.num_stimuli
                  << " stimuli.\n";
      } else {
        std::cout << "Extracted " << r.rows_this_run << " stimuli (" << r.rows_done << "/"
                  << r.num_stimuli << " done, batch size " << r.batch_size << ") in " << r.seconds
                  << " s into " << o.out_dir << ":\n";
      }
      for (const auto& l : r.layers) {
        std::cout << "  " << l.label << ".npy  [";
        for (std::size_t i = 0; i < l.shape.size(); ++i) std::cout << (i ? ", " : "") << l.shape[i];
        std::cout << "]" << (l.key == l.label ? "" : "  (" + l.key + ")") << "\n";
      }
    }
  } catch (const ex::ExtractError& e) {
    throw CommandLineError(plain_message(e));
  }
  return 0;
}

} // namespace torchlens::cli
