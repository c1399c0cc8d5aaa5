// `torchlens extract` throughput against plain batched forward passes over the
// same stimuli, in the same run (docs/extract.md). Model: the TorchScript export
// of torchvision's resnet18 (scripts/export_torchvision.py).
//
// Usage: extract_throughput MODEL_DIR [N=256] [BATCH=32] [SIZE=64] [REPS=3] [IMAGES=256]
//
// (a) .npy stimuli: random 3xSIZExSIZE float32, written to a temporary
// [N, 3, S, S] .npy first. Rows: plain forward (rows read from the .npy +
// model.forward, no grad); extract (extract_to_dir: structure logged on batch
// 1, fast captures after, rows written + fdatasync + index.json per batch, the
// reading and writing overlapped with the forward); the same with background_io
// off (read, run, write, record in turn);
// capture only (the Extractor without files), to split capture cost from I/O.
// (b) an image folder: IMAGES JPEGs of 256x256 (fixed seed, written with
// libjpeg into a temporary folder), preprocessed as torchvision's Resize(256),
// CenterCrop(224), Normalize. Rows: plain forward on the already-decoded
// tensors; extract from the folder with the decoding of batch k+1 and the
// writing of batch k-1 overlapped with batch k's forward (the default), and
// without (background_io off); decoding alone. Three layers saved throughout (layer1, layer3,
// avgpool).

#include "timing.hpp"

#include <torchlens/extract/extract.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdio>
// after cstdio, which it needs
#include <jpeglib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace ex = torchlens::extract;
namespace fs = std::filesystem;

namespace {

using torchlens::bench::median;

double seconds(const std::function<void()>& f) {
  return torchlens::bench::time_ms(f) / 1e3;
}

/// A side x side RGB JPEG (quality 90): smooth colour waves plus noise, about
/// the size of a photo of that resolution.
void write_jpeg(const std::string& path, std::mt19937& rng, int side) {
  std::vector<unsigned char> rgb(static_cast<std::size_t>(side) * side * 3);
  std::normal_distribution<double> noise(0, 20);
  std::uniform_real_distribution<double> phase(0, 6.28);
  const double p0 = phase(rng), p1 = phase(rng);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      for (int c = 0; c < 3; ++c) {
        const double v =
            (std::sin(x / 17.0 + c + p0) * std::cos(y / 23.0 - c + p1) * 0.4 + 0.5) * 255 +
            noise(rng);
        rgb[(static_cast<std::size_t>(y) * side + x) * 3 + c] =
            static_cast<unsigned char>(std::clamp(v, 0.0, 255.0));
      }
    }
  }
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  jpeg_stdio_dest(&c, f);
  c.image_width = static_cast<JDIMENSION>(side);
  c.image_height = static_cast<JDIMENSION>(side);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = &rgb[static_cast<std::size_t>(c.next_scanline) * side * 3];
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::fclose(f);
  jpeg_destroy_compress(&c);
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: extract_throughput MODEL_DIR [N=256] [BATCH=32] [SIZE=64] [REPS=3] "
                 "[IMAGES=256]\n";
    return 2;
  }
  const std::string model_path = (fs::path(argv[1]) / "resnet18.pt").string();
  const std::int64_t n = argc > 2 ? std::atoll(argv[2]) : 256;
  const std::int64_t batch = argc > 3 ? std::atoll(argv[3]) : 32;
  const std::int64_t size = argc > 4 ? std::atoll(argv[4]) : 64;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 3;
  const std::int64_t num_images = argc > 6 ? std::atoll(argv[6]) : 256;
  if (!fs::exists(model_path)) {
    std::cerr << model_path << " not found: /usr/bin/python3 scripts/export_torchvision.py "
              << argv[1] << " resnet18\n";
    return 2;
  }
  const std::vector<std::string> keys{"layer1", "layer3", "avgpool"};

  const fs::path tmp = fs::temp_directory_path() / "torchlens-extract-bench";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string stimuli_path = (tmp / "stimuli.npy").string();
  torch::manual_seed(0);
  torchlens::io::write_npy(stimuli_path, torch::randn({n, 3, size, size}));
  const auto stimuli = ex::Stimuli::open(stimuli_path);

  auto model = torch::jit::load(model_path);
  model.eval();

  auto plain = [&] {
    torch::NoGradGuard no_grad;
    for (std::int64_t s = 0; s < n; s += batch) {
      const auto x = stimuli.rows(s, std::min(batch, n - s));
      (void)model.forward({x});
    }
  };
  int run_id = 0;
  ex::ExtractResult last;
  auto extract_with = [&](bool background) {
    ex::ExtractOptions o;
    o.background_io = background;
    o.model_path = model_path;
    o.keys = keys;
    o.batch_size = batch;
    o.seed = 0;
    o.out_dir = (tmp / ("out" + std::to_string(run_id++))).string();
    last = ex::extract_to_dir(model, stimuli, o);
    fs::remove_all(o.out_dir);
  };
  auto extract = [&] { extract_with(true); };
  auto extract_serial = [&] { extract_with(false); };
  auto capture_only = [&] {
    ex::Extractor e(model, keys, 0, std::min(batch, n));
    for (std::int64_t s = 0; s < n; s += batch)
      (void)e.run(stimuli.rows(s, std::min(batch, n - s)));
  };

  // Stop early at about a quarter of resnet18's depth (layer1 only): seconds per
  // batch after the structure batch (which runs the whole model), in memory.
  const std::int64_t rows = std::min(batch, n);
  auto per_batch = [&](bool stop_early) {
    ex::Extractor e(model, {"layer1"}, 0, rows, stop_early);
    (void)e.run(stimuli.rows(0, rows));
    std::int64_t batches = 0;
    const double s = seconds([&] {
      for (std::int64_t start = rows; start < n; start += rows, ++batches)
        (void)e.run(stimuli.rows(start, std::min(rows, n - start)));
    });
    return s / static_cast<double>(std::max<std::int64_t>(batches, 1));
  };

  // measured before any plain forward: once the profiling executor has run
  // the model, later captures in this process may see its optimised graph
  std::vector<double> th, tf;
  (void)per_batch(true);
  for (int i = 0; i < reps; ++i) {
    th.push_back(per_batch(true));
    tf.push_back(per_batch(false));
  }

  // warm up every path (TorchScript's profiling runs included)
  for (int i = 0; i < 2; ++i) {
    plain();
    capture_only();
  }
  extract();
  std::vector<double> tp, te, ts, tc;
  for (int i = 0; i < reps; ++i) { // interleaved, so drift hits all alike
    tp.push_back(seconds(plain));
    te.push_back(seconds(extract));
    ts.push_back(seconds(extract_serial));
    tc.push_back(seconds(capture_only));
  }
  const double p = median(tp), e = median(te), es = median(ts), c = median(tc), h = median(th),
               f = median(tf);
  const double plain_batch = p / static_cast<double>((n + rows - 1) / rows);
  const auto rate = [&](double s) { return static_cast<double>(n) / s; };
  std::cout << "resnet18 (TorchScript), " << n << " stimuli 3x" << size << "x" << size << ", batch "
            << batch << ", layers";
  for (const auto& l : last.layers) {
    std::cout << " " << l.label << "[";
    for (std::size_t i = 1; i < l.shape.size(); ++i) std::cout << (i > 1 ? "," : "") << l.shape[i];
    std::cout << "]";
  }
  std::cout << ", torch threads " << at::get_num_threads() << ", median of " << reps << "\n\n"
            << std::fixed << std::setprecision(2)
            << "| path | seconds | stimuli/s | time vs plain | throughput vs plain |\n"
            << "|---|---|---|---|---|\n"
            << "| plain batched forward | " << p << " | " << std::setprecision(1) << rate(p)
            << " | 1.00x | 1.00x |\n"
            << std::setprecision(2) << "| extract, I/O overlapped (default) | " << e << " | "
            << std::setprecision(1) << rate(e) << " | " << std::setprecision(2) << e / p << "x | "
            << p / e << "x |\n"
            << "| extract, I/O in turn (background_io off) | " << es << " | "
            << std::setprecision(1) << rate(es) << " | " << std::setprecision(2) << es / p << "x | "
            << p / es << "x |\n"
            << "| capture only (Extractor, no files) | " << c << " | " << std::setprecision(1)
            << rate(c) << " | " << std::setprecision(2) << c / p << "x | " << p / c << "x |\n\n"
            << "Stop early (layer1 saved, ~25% of the depth), seconds per batch after the "
               "first:\n\n| path | s/batch | vs plain forward |\n|---|---|---|\n"
            << std::setprecision(4) << "| plain batched forward | " << plain_batch << " | 1.00x |\n"
            << "| capture, whole forward | " << f << " | " << std::setprecision(2)
            << f / plain_batch << "x |\n"
            << std::setprecision(4) << "| capture, stopped after layer1 | " << h << " | "
            << std::setprecision(2) << h / plain_batch << "x |\n";

  if (num_images > 0) {
    // (b) a folder of JPEGs, 224 crops, against plain forwards on the decoded tensors
    const fs::path folder = tmp / "images";
    fs::create_directories(folder);
    std::mt19937 rng(0);
    for (std::int64_t i = 0; i < num_images; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "im%05lld.jpg", static_cast<long long>(i));
      write_jpeg((folder / name).string(), rng, 256);
    }
    const auto images = ex::Stimuli::open(folder.string()); // Resize(256), CenterCrop(224)
    const std::int64_t m = images.size();
    const at::Tensor decoded = images.rows(0, m);
    auto plain_decoded = [&] {
      torch::NoGradGuard no_grad;
      for (std::int64_t s = 0; s < m; s += batch)
        (void)model.forward({decoded.narrow(0, s, std::min(batch, m - s))});
    };
    auto extract_images = [&](bool background) {
      return [&, background] {
        ex::ExtractOptions o;
        o.model_path = model_path;
        o.keys = keys;
        o.batch_size = batch;
        o.seed = 0;
        o.background_io = background;
        o.out_dir = (tmp / ("img" + std::to_string(run_id++))).string();
        (void)ex::extract_to_dir(model, images, o);
        fs::remove_all(o.out_dir);
      };
    };
    auto decode_only = [&] {
      for (std::int64_t s = 0; s < m; s += batch) (void)images.rows(s, std::min(batch, m - s));
    };
    plain_decoded();
    extract_images(true)();
    std::vector<double> ip, io, is, id;
    for (int i = 0; i < reps; ++i) { // interleaved
      ip.push_back(seconds(plain_decoded));
      io.push_back(seconds(extract_images(true)));
      is.push_back(seconds(extract_images(false)));
      id.push_back(seconds(decode_only));
    }
    const double pp = median(ip), po = median(io), ps = median(is), pd = median(id);
    const auto rate_m = [&](double s) { return static_cast<double>(m) / s; };
    std::cout << "\nImage folder: " << m << " JPEGs 256x256, resize 256, crop 224, batch " << batch
              << ", the same 3 layers, median of " << reps << "\n\n"
              << "| path | seconds | stimuli/s | throughput vs plain |\n|---|---|---|---|\n"
              << std::setprecision(2) << "| plain batched forward (decoded tensors) | " << pp
              << " | " << std::setprecision(1) << rate_m(pp) << " | 1.00x |\n"
              << std::setprecision(2) << "| extract, I/O overlapped (default) | " << po << " | "
              << std::setprecision(1) << rate_m(po) << " | " << std::setprecision(2) << pp / po
              << "x |\n"
              << "| extract, I/O in turn (background_io off) | " << ps << " | "
              << std::setprecision(1) << rate_m(ps) << " | " << std::setprecision(2) << pp / ps
              << "x |\n"
              << "| decoding + preprocessing alone | " << pd << " | " << std::setprecision(1)
              << rate_m(pd) << " | |\n";
  }
  fs::remove_all(tmp);
  return 0;
}
