#pragma once
/// \file
/// Activation extraction over many stimuli (`torchlens extract`, docs/extract.md):
/// the structure is logged once, then every batch runs through a fast capture
/// that saves only the chosen layers and checks that the graph did not change.
/// Layers are written as one `[N, ...]` `.npy` per layer, row by row, with a
/// crash-safe progress record (`index.json`'s `rows_done`).

#include <torchlens/capture/log_forward_pass.hpp>
#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace torch::jit {
struct Module;
}

namespace torchlens::extract {

/// A problem the user can fix (bad stimuli, unknown key, a layer without a batch
/// dimension, an output folder that is not empty, a resume that does not match).
class ExtractError : public TorchError {
 public:
  explicit ExtractError(const std::string& message) : TorchError(TORCHLENS_HERE, message) {}
};

/// A later batch ran a different graph than the first (data-dependent branch):
/// the capture session's error (torchlens/torch_error.hpp).
using GraphChanged = torchlens::GraphChanged;

/// How a folder of images (JPEG, PNG) becomes `[3, H, W]` float32 stimuli:
/// torchvision's `Resize(resize)`, `CenterCrop(crop)`, `ToTensor()`,
/// `Normalize(mean, std)` on the RGB image (Resize antialiased bilinear, as
/// torchvision on tensors with antialias=True), then the channel order.
struct ImageOptions {
  std::int64_t resize = 256;                       ///< the shorter side becomes this (0: no resize)
  std::int64_t crop = 224;                         ///< a centred square of this side (0: no crop)
  std::array<double, 3> mean{0.485, 0.456, 0.406}; ///< per RGB channel, of [0, 1] values
  std::array<double, 3> std{0.229, 0.224, 0.225};  ///< per RGB channel
  bool bgr = false; ///< reverse the channels after normalising (Caffe-style models)
  /// Canonical text (recorded in the plan and index.json).
  std::string text() const;
};

/// N stimuli: one `[N, ...]` `.npy` read by rows (never loaded whole), a
/// folder of `.npy` files, one stimulus `[...]` each, or a folder of images
/// (`.jpg`, `.jpeg`, `.png`), in name order.
class Stimuli {
 public:
  /// Opens and checks (headers only; every file of a folder; an image folder's
  /// first image is decoded for the shape); throws ExtractError. `images`
  /// applies to a folder of images only.
  static Stimuli open(const std::string& path, const ImageOptions& images = {});
  /// N stimuli held in memory: `items` is `[N, ...]` (N > 0) on the CPU, rows
  /// read as they are (no copy of the whole). Its path() is
  /// `memory:sha256:<16 hex digits of the data>`, what index.json records, so
  /// that a resume checks the same values (the Python binding's tensors).
  static Stimuli from_tensor(const at::Tensor& items);
  /// A folder of images.
  bool is_images() const noexcept { return images_.has_value(); }
  const std::optional<ImageOptions>& image_options() const noexcept { return images_; }

  std::int64_t size() const noexcept { return n_; }
  const std::vector<std::int64_t>& item_shape() const noexcept { return item_shape_; }
  c10::ScalarType dtype() const noexcept { return dtype_; }
  const std::string& path() const noexcept { return path_; }
  /// The stimuli's ids in order: a folder's file names; empty for one `.npy`
  /// (its rows are its ids).
  std::vector<std::string> ids() const;
  /// Stimuli [start, start + count) as one `[count, ...]` tensor.
  at::Tensor rows(std::int64_t start, std::int64_t count) const;

 private:
  std::string path_;
  std::int64_t n_ = 0;
  std::vector<std::int64_t> item_shape_;
  c10::ScalarType dtype_ = c10::kFloat;
  std::size_t data_offset_ = 0;        // single file
  std::vector<std::string> files_;     // folder
  std::optional<ImageOptions> images_; // a folder of images
  at::Tensor items_;                   // in memory (from_tensor)
};

/// Which part of a run this process does: shard `index` of `count`
/// (torchlens/extract/shards.hpp finds it from `--shard K/N` or a launcher).
struct Shard {
  std::int64_t index = 0;
  std::int64_t count = 1;
  /// Where it came from, for the log line: `--shard`, or the launcher's
  /// variables with their values (`OMPI_COMM_WORLD_RANK=2 OMPI_COMM_WORLD_SIZE=4`);
  /// empty when nothing said (one process).
  std::string source;
};

/// The scalar per stimulus whose gradient extract saves beside each saved
/// layer (`--gradients-of`, docs/extract.md "Gradients"): with `y` the model's
/// first output and `i` a stimulus,
///   - `sum`: `y[i].sum()`;
///   - `output:K`: `y[i, K]` (a logit);
///   - `output:argmax`: `y[i, argmax(y[i])]` (the predicted class's logit);
///   - `loss:cross_entropy`: `cross_entropy(y[i], target[i])` (needs targets).
/// The names follow `torchlens log --backward sum|output:K`.
struct GradientTarget {
  enum class Kind { sum, output, argmax, cross_entropy };
  Kind kind = Kind::sum;
  std::int64_t index = 0; ///< Kind::output: the column K
  /// Reads the text above; throws ExtractError for anything else.
  static GradientTarget parse(const std::string& text);
  /// The canonical text (recorded in the plan and index.json).
  std::string text() const;
};

/// One saved layer.
struct ExtractLayer {
  std::string label;               ///< final label (`conv2d_1_1`); file DIR/label.npy
  std::string key;                 ///< the --save key that selected it (the first one)
  std::string op;                  ///< `aten::conv2d`
  std::string module;              ///< innermost module address, or ""
  std::size_t id = 0;              ///< OpNode id saved by the fast capture
  std::vector<std::int64_t> shape; ///< activation shape for one batch
  c10::ScalarType dtype = c10::kFloat;
  /// A per-stimulus gradient file (`<label>.grad.npy`), not the activation.
  bool gradient = false;
};

/// A C++-frontend model: a torch::nn::Module (or a subclass), a ModuleHolder
/// (`Net`, `torch::nn::Sequential`) or a shared_ptr to one.
template <class M>
concept FrontendModel = std::is_base_of_v<torch::nn::Module, M> || requires(M& m) {
  { *m.ptr() } -> std::convertible_to<torch::nn::Module&>;
} || requires(M& m) {
  { *m } -> std::convertible_to<torch::nn::Module&>;
};

/// A model as the Extractor runs it: what capture needs to know about it, its
/// forward on one batch (the batch is `input.0`), and the address of a module
/// in training mode ("" for the root) if any.
struct BatchModel {
  torchlens::detail::ModelDescription description;
  std::function<c10::IValue(const at::Tensor&)> forward;
  std::function<std::optional<std::string>()> training_module;
};

/// A C++-frontend model as a BatchModel (a Sequential is driven child by
/// child, as log_forward_pass does). The model must outlive it.
template <FrontendModel Model>
BatchModel batch_model(Model& model) {
  torch::nn::Module& root = torchlens::detail::module_of(model);
  BatchModel b;
  b.description = torchlens::detail::describe(root);
  b.forward = [&model, &root](const at::Tensor& x) {
    return torchlens::detail::forward_fn(model, root, std::make_tuple(x))(nullptr);
  };
  b.training_module = [&root]() -> std::optional<std::string> {
    if (root.is_training()) return std::string();
    for (const auto& m : root.named_modules("", /*include_self=*/false)) {
      if (m.value()->is_training()) return m.key();
    }
    return std::nullopt;
  };
  return b;
}

/// Runs a model batch after batch, returning the chosen layers only: a
/// TorchScript module (on its capture copy) or a C++-frontend model whose
/// forward takes the batch (which must outlive the Extractor).
class Extractor {
 public:
  /// `batch_rows`: every batch is padded to this many rows (the padding rows are
  /// dropped from the results), so that every capture sees the same shapes.
  /// `stop_early`: every batch after the first stops the forward after the
  /// last op whose activation is saved (LogOptions::stop_early).
  /// `gradients`: after every forward, one backward of the sum over the batch
  /// of each stimulus's scalar (GradientTarget) gives every saved layer's
  /// per-stimulus gradient (gradients()); this needs the model in eval mode
  /// (refused in training mode) and turns stop_early off.
  Extractor(torch::jit::Module& model, std::vector<std::string> keys, std::uint64_t seed,
            std::int64_t batch_rows, bool stop_early = true,
            std::optional<GradientTarget> gradients = std::nullopt);
  /// A C++-frontend model (`Net`, `torch::nn::Sequential`, `NetImpl&`): the same
  /// options; the model is called, not copied, so it must outlive the Extractor.
  template <FrontendModel Model>
  Extractor(Model& model, std::vector<std::string> keys, std::uint64_t seed,
            std::int64_t batch_rows, bool stop_early = true,
            std::optional<GradientTarget> gradients = std::nullopt)
      : Extractor(batch_model(model), std::move(keys), seed, batch_rows, stop_early, gradients) {}
  /// Any model given as a BatchModel (what the constructors above build).
  Extractor(BatchModel model, std::vector<std::string> keys, std::uint64_t seed,
            std::int64_t batch_rows, bool stop_early = true,
            std::optional<GradientTarget> gradients = std::nullopt);
  ~Extractor();
  Extractor(const Extractor&) = delete;
  Extractor& operator=(const Extractor&) = delete;

  /// Activations of layers(), in order, for `batch` (`[rows <= batch_rows, ...]`),
  /// each `[rows, ...]`, contiguous on the CPU. The first call logs the structure
  /// (one capture keeping every activation by reference, the pass pipeline) and
  /// resolves the keys; later calls make one capture saving only the chosen
  /// layers. Throws ExtractError (unknown key, a layer whose first dimension is
  /// not the batch) or GraphChanged (names the first differing op).
  /// `targets`: with GradientTarget::Kind::cross_entropy, the batch's class
  /// indices (`[rows]`, integers).
  std::vector<at::Tensor> run(const at::Tensor& batch, const at::Tensor& targets = at::Tensor());

  /// With gradients: the last run()'s gradient of each stimulus's scalar
  /// w.r.t. each layer of layers() (same order and shapes as run()'s result),
  /// computed by one backward of the sum over the batch. Rows must not
  /// interact (eval mode): the padding rows of a short batch are checked to
  /// receive no gradient (ExtractError otherwise).
  const std::vector<at::Tensor>& gradients() const noexcept { return gradients_; }

  /// Resolved layers (after the first run()).
  const std::vector<ExtractLayer>& layers() const noexcept { return layers_; }
  /// The metadata log of the first batch (no activations); null before run().
  const ModelLog* structure() const noexcept { return structure_.get(); }
  /// The graph every batch must run, one line per op in creation order
  /// (`label op [shape]`), then the op count: what shards compare before a merge.
  std::string structure_text() const;

 private:
  struct Impl;
  /// Refuses per-stimulus gradients for a model in training mode.
  void check_gradient_mode() const;
  std::unique_ptr<Impl> impl_;
  std::vector<ExtractLayer> layers_;
  std::vector<at::Tensor> gradients_;
  std::unique_ptr<ModelLog> structure_;
};

/// What extract_to_dir does.
struct ExtractOptions {
  /// Recorded in index.json (absolute); empty: recorded empty (a model that
  /// has no file, e.g. one handed over from Python). A sharded run needs it.
  std::string model_path;
  /// Layers to save (ModelLog::select keys). The three below may be left unset
  /// on resume (taken from index.json; given, they must match it); a fresh run
  /// needs keys and defaults to batch size 32 and seed 0.
  std::vector<std::string> keys;
  std::optional<std::int64_t> batch_size;
  std::optional<std::uint64_t> seed;
  std::string out_dir;
  /// Continue the run recorded in out_dir/index.json (truncating every layer
  /// file to its rows_done rows); without it a non-empty out_dir is refused.
  bool resume = false;
  /// Stop each forward after the last op whose activation is saved (the
  /// first batch still runs the whole model, to log its structure); off: run
  /// the whole model every time. The files are the same either way.
  bool stop_early = true;
  /// Write every floating-point layer as this type (`--dtype float16`); other
  /// layers as they are. Unset: as computed (bfloat16 widened to float32).
  std::optional<c10::ScalarType> dtype;
  /// Write each row as one vector (`[N, C*H*W]`; ThingsVision's flatten_acts).
  bool flatten = false;
  /// Also write each layer's per-feature mean and variance over all stimuli:
  /// `<file stem>.mean.npy`, `<file stem>.var.npy` (float64, one row's shape),
  /// read back by torchlens/extract/statistics.hpp.
  bool statistics = false;
  /// Also write, beside each layer's `<label>.npy`, `<label>.grad.npy`: the
  /// gradient of each stimulus's scalar w.r.t. that stimulus's activation,
  /// same `[N, ...]` layout (dtype and flatten apply). Part of the plan.
  std::optional<GradientTarget> gradients_of;
  /// GradientTarget::Kind::cross_entropy: one class index per stimulus, `[N]`
  /// integers (`--targets LABELS.npy`). Its sha256 is part of the plan.
  at::Tensor targets;
  /// Called after every committed batch with (rows done, N); e.g. a progress
  /// bar. With background_io, on the writer's thread (one call at a time).
  std::function<void(std::int64_t, std::int64_t)> on_batch;
  /// Overlap the I/O with the forward: while batch k runs, one background
  /// thread reads batch k+1's stimuli (a folder of images: decodes and
  /// preprocesses them) and another writes, flushes and records batch k-1's
  /// rows, in order. Off: each batch is read, run, written and recorded in
  /// turn. The files, the crash safety and the errors are the same either way.
  bool background_io = true;
  /// Stop after this many batches (tests and benchmarks of interruption).
  std::optional<std::int64_t> max_batches;
  /// This process's part (count > 1: a sharded run, written to
  /// out_dir/shards/ and checked against out_dir/plan.json; see shards.hpp).
  Shard shard;
};

struct ExtractResult {
  std::vector<ExtractLayer> layers;
  std::int64_t rows_done = 0;
  std::int64_t rows_this_run = 0;
  std::int64_t num_stimuli = 0;
  std::int64_t batch_size = 0;
  std::uint64_t seed = 0;
  double seconds = 0;
  /// A sharded run: this shard's stimuli [shard_begin, shard_end) and folder.
  std::int64_t shard_begin = 0, shard_end = 0;
  std::string shard_dir;
};

/// Writes out_dir/<label>.npy (`[N, ...]`, rows appended per batch) and
/// out_dir/index.json. After each batch the rows are flushed (fdatasync), then
/// index.json's rows_done is replaced atomically (temp file + rename), so a run
/// killed at any point resumes exactly where the record says.
ExtractResult extract_to_dir(torch::jit::Module& model, const Stimuli& stimuli,
                             const ExtractOptions& options);

/// Makes the Extractor a run uses (keys, seed, batch rows, stop early, gradients).
using MakeExtractor =
    std::function<std::unique_ptr<Extractor>(const std::vector<std::string>&, std::uint64_t,
                                             std::int64_t, bool, std::optional<GradientTarget>)>;

/// extract_to_dir for any model, through the Extractor it makes.
ExtractResult extract_to_dir_with(const MakeExtractor& make, const Stimuli& stimuli,
                                  const ExtractOptions& options);

/// extract_to_dir for a C++-frontend model (`options.model_path` is recorded as
/// given; a sharded run needs it to name a file, e.g. the saved weights, whose
/// hash goes into the plan).
template <FrontendModel Model>
ExtractResult extract_to_dir(Model& model, const Stimuli& stimuli, const ExtractOptions& options) {
  return extract_to_dir_with(
      MakeExtractor([&model](const std::vector<std::string>& keys, std::uint64_t seed,
                             std::int64_t rows, bool stop_early,
                             std::optional<GradientTarget> gradients) {
        return std::make_unique<Extractor>(model, keys, seed, rows, stop_early, gradients);
      }),
      stimuli, options);
}

/// The layers of extract_to_memory, in the order of ExtractResult::layers
/// (activations, then their gradients with ExtractOptions::gradients_of).
struct ExtractedLayers {
  std::vector<ExtractLayer> layers; ///< shape: `[N, ...]` as returned
  std::vector<at::Tensor> tensors; ///< one `[N, ...]` tensor per layer, as extract_to_dir writes it
};

/// What extract_to_dir computes, kept in memory instead of written (a small
/// set of stimuli): the same batches, seed, padding, dtype, flatten and
/// gradients, so each tensor equals the values of the corresponding file.
/// out_dir, resume, statistics, max_batches and shards are refused
/// (ExtractError); batch_size and seed default as in extract_to_dir.
ExtractedLayers extract_to_memory(torch::jit::Module& model, const Stimuli& stimuli,
                                  const ExtractOptions& options);

} // namespace torchlens::extract
