// Per-layer statistics (statistics.hpp): written beside a finished layer file
// in one streaming pass, read back for interventions.

#include "fileio.hpp"
#include "index.hpp"

#include "../io/dtypes.hpp"

#include <torchlens/extract/statistics.hpp>
#include <torchlens/io/npy.hpp>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <algorithm>

namespace torchlens::extract {

namespace fs = std::filesystem;
using namespace detail_io;

namespace {

std::string stem_of(const std::string& file) {
  return fs::path(file).stem().string();
}

fs::path mean_path(const fs::path& dir, const std::string& file) {
  return dir / (stem_of(file) + ".mean.npy");
}

fs::path var_path(const fs::path& dir, const std::string& file) {
  return dir / (stem_of(file) + ".var.npy");
}

} // namespace

bool detail_io::statistics_present(const fs::path& dir, const std::vector<std::string>& files) {
  for (const auto& f : files) {
    if (!fs::exists(mean_path(dir, f)) || !fs::exists(var_path(dir, f))) return false;
  }
  return true;
}

void detail_io::write_statistics(const fs::path& dir, const std::vector<std::string>& files) {
  constexpr std::size_t kBlockBytes = 64u << 20; // rows read at a time
  for (const auto& file : files) {
    const std::string path = (dir / file).string();
    const io::NpyHeader h = io::read_npy_header(path);
    const io::dtypes::Dtype* d = io::dtypes::find_npy(h.descr);
    TORCHLENS_CHECK(d != nullptr && !h.shape.empty(), "statistics: ", path, " is not a layer file");
    const std::vector<std::int64_t> row_shape(h.shape.begin() + 1, h.shape.end());
    std::int64_t features = 1;
    for (auto v : row_shape) features *= v;
    const std::int64_t n = h.shape[0];
    const std::size_t row_bytes = static_cast<std::size_t>(features) * c10::elementSize(d->type);
    const std::int64_t block = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(kBlockBytes / std::max<std::size_t>(row_bytes, 1)));
    Fd in(path, O_RDONLY);
    at::Tensor mean = at::zeros({features}, at::kDouble);
    at::Tensor m2 = at::zeros({features}, at::kDouble);
    std::int64_t seen = 0;
    for (std::int64_t start = 0; start < n; start += block) {
      const std::int64_t rows = std::min(block, n - start);
      at::Tensor raw = at::empty({rows, features}, at::TensorOptions().dtype(d->type));
      in.pread_all(raw.data_ptr(), raw.nbytes(),
                   h.data_offset + static_cast<std::size_t>(start) * row_bytes);
      const at::Tensor x = raw.to(at::kDouble);
      const at::Tensor block_mean = x.mean(0);
      const at::Tensor block_m2 = (x - block_mean).pow(2).sum(0);
      // Chan et al.: combine (seen, mean, m2) with (rows, block_mean, block_m2)
      const double total = static_cast<double>(seen + rows);
      const at::Tensor delta = block_mean - mean;
      mean = mean + delta * (static_cast<double>(rows) / total);
      m2 = m2 + block_m2 +
           delta.pow(2) * (static_cast<double>(seen) * static_cast<double>(rows) / total);
      seen += rows;
    }
    const at::Tensor var = n > 0 ? m2 / static_cast<double>(n) : m2;
    write_atomically(mean_path(dir, file), io::npy_bytes(mean.view(row_shape)));
    write_atomically(var_path(dir, file), io::npy_bytes(var.view(row_shape)));
  }
}

std::vector<LayerStatistics> read_statistics(const std::string& out_dir) {
  const fs::path dir = out_dir;
  const index_file::Record r = index_file::read_index(dir / "index.json");
  if (r.rows_done != r.num_stimuli) {
    throw ExtractError("no statistics yet: " + out_dir + " is not complete (" +
                       std::to_string(r.rows_done) + "/" + std::to_string(r.num_stimuli) +
                       " stimuli)");
  }
  std::vector<LayerStatistics> out;
  for (const auto& l : r.layers) {
    if (l.gradient) continue; // statistics are of activations
    if (!fs::exists(mean_path(dir, l.file)) || !fs::exists(var_path(dir, l.file))) {
      throw ExtractError("no statistics for " + l.label + " in " + out_dir +
                         " (extract with --statistics)");
    }
    LayerStatistics s;
    s.label = l.label;
    s.key = l.key;
    s.count = r.num_stimuli;
    try {
      s.mean = io::read_npy(mean_path(dir, l.file).string());
      s.variance = io::read_npy(var_path(dir, l.file).string());
    } catch (const c10::Error& e) {
      throw ExtractError(plain_message(e));
    }
    const std::vector<std::int64_t> row(l.shape.begin() + 1, l.shape.end());
    if (s.mean.sizes() != c10::IntArrayRef(row) || s.variance.sizes() != c10::IntArrayRef(row)) {
      throw ExtractError("the statistics of " + l.label + " in " + out_dir +
                         " do not have the shape of one of its rows");
    }
    out.push_back(std::move(s));
  }
  return out;
}

LayerStatistics read_statistics(const std::string& out_dir, const std::string& layer) {
  auto all = read_statistics(out_dir);
  for (auto& s : all) {
    if (s.label == layer) return std::move(s);
  }
  for (auto& s : all) {
    if (s.key == layer) return std::move(s);
  }
  std::string have;
  for (const auto& s : all) have += (have.empty() ? "" : ", ") + s.label;
  throw ExtractError("no layer '" + layer + "' in " + out_dir + " (it holds " + have + ")");
}

} // namespace torchlens::extract
