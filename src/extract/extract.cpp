// torchlens extract: many stimuli, chosen layers, one [N, ...] .npy per layer.
// The structure is logged once (first batch); later batches reuse the capture
// engine with a save-by-id policy (as run_logged's second pass does) and are
// checked op by op against the first batch's graph.

#include "../capture/recorder.hpp"
#include "../capture/script_model.hpp"
#include "../capture/session.hpp"
#include "../grad/gradient_store.hpp"
#include "../io/dtypes.hpp"
#include "fileio.hpp"
#include "images.hpp"
#include "index.hpp"
#include "prefetch.hpp"
#include "sha256.hpp"

#include <torchlens/config.hpp>
#include <torchlens/detail/text.hpp>
#include <torchlens/extract/extract.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/io/npy.hpp>
#include <torchlens/passes/all.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/Functions.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/utils.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_set>
#include <utility>

namespace torchlens::extract {

namespace fs = std::filesystem;
using detail::shape_as_list;
using index_file::index_json;
using index_file::read_index;
using index_file::Record;
using namespace detail_io;

// ---- small helpers ------------------------------------------------------------

std::string detail_io::npy_descr_of(c10::ScalarType t) {
  const io::dtypes::Dtype* d = io::dtypes::find(io::dtypes::npy_type(t));
  if (d == nullptr || d->npy_descr == nullptr) {
    throw ExtractError(std::string("no .npy dtype for ") + c10::toString(t));
  }
  return d->npy_descr;
}

std::string detail_io::growing_npy_header(const std::string& descr, std::vector<std::int64_t> shape,
                                          std::int64_t rows, std::size_t length) {
  shape.at(0) = rows;
  std::string h = io::npy_header(descr, shape);
  TORCHLENS_CHECK(h.size() <= length && length - 10 <= 0xffff, "a .npy header of ", h.size(),
                  " bytes does not fit in ", length);
  h.insert(h.size() - 1, length - h.size(), ' '); // spaces before the closing newline
  const std::size_t body = length - 10;
  h[8] = static_cast<char>(body & 0xff);
  h[9] = static_cast<char>((body >> 8) & 0xff);
  return h;
}

namespace {

std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// A file name for a label (labels never hold '/', but be safe).
std::string file_stem(const std::string& label) {
  std::string s = label;
  for (char& c : s) {
    if (c == '/' || c == '\0') c = '_';
  }
  return s;
}

} // namespace

// ---- Stimuli ------------------------------------------------------------------

Stimuli Stimuli::open(const std::string& path, const ImageOptions& images) {
  Stimuli s;
  s.path_ = path;
  auto header = [](const std::string& file) {
    try {
      return io::read_npy_header(file);
    } catch (const c10::Error& e) {
      throw ExtractError(plain_message(e));
    }
  };
  auto dtype = [](const io::NpyHeader& h, const std::string& file) {
    const io::dtypes::Dtype* t = io::dtypes::find_npy(h.descr);
    if (t == nullptr) throw ExtractError("unsupported .npy dtype " + h.descr + " in " + file);
    return t->type;
  };
  if (!fs::exists(path)) throw ExtractError("stimuli not found: " + path);
  if (fs::is_directory(path)) {
    std::vector<std::string> pictures;
    for (const auto& e : fs::directory_iterator(path)) {
      if (!e.is_regular_file()) continue;
      if (e.path().extension() == ".npy") s.files_.push_back(e.path().string());
      if (is_image_file(e.path())) pictures.push_back(e.path().string());
    }
    if (!pictures.empty() && !s.files_.empty()) {
      throw ExtractError(path + " holds both .npy files and images; give a folder of one kind");
    }
    if (!pictures.empty()) { // a folder of images: [3, H, W] float32 after preprocessing
      if (images.resize < 0 || images.crop < 0) {
        throw ExtractError("image sizes must not be negative");
      }
      for (double d : images.std) {
        if (!(d > 0)) throw ExtractError("every --std value must be positive");
      }
      std::sort(pictures.begin(), pictures.end());
      s.files_ = std::move(pictures);
      s.images_ = images;
      const at::Tensor first = load_image(s.files_[0], images);
      s.item_shape_.assign(first.sizes().begin(), first.sizes().end());
      s.dtype_ = c10::kFloat;
      s.n_ = static_cast<std::int64_t>(s.files_.size());
      return s;
    }
    if (s.files_.empty()) throw ExtractError("no .npy files or images in " + path);
    std::sort(s.files_.begin(), s.files_.end());
    const auto first = header(s.files_[0]);
    s.item_shape_ = first.shape;
    s.dtype_ = dtype(first, s.files_[0]);
    for (std::size_t i = 1; i < s.files_.size(); ++i) {
      const auto h = header(s.files_[i]);
      if (h.shape != first.shape || h.descr != first.descr) {
        throw ExtractError("stimulus " + s.files_[i] + " is " + h.descr + " " +
                           shape_as_list(h.shape) + ", but " + s.files_[0] + " is " + first.descr +
                           " " + shape_as_list(first.shape) +
                           ": every stimulus needs the same shape");
      }
    }
    s.n_ = static_cast<std::int64_t>(s.files_.size());
  } else {
    const auto h = header(path);
    s.dtype_ = dtype(h, path);
    if (h.shape.empty()) {
      throw ExtractError(path + " holds a scalar; stimuli are an [N, ...] array (N stimuli)");
    }
    s.n_ = h.shape[0];
    if (s.n_ == 0)
      throw ExtractError(path + " holds no stimuli (shape " + shape_as_list(h.shape) + ")");
    s.item_shape_.assign(h.shape.begin() + 1, h.shape.end());
    s.data_offset_ = h.data_offset;
    const std::uint64_t data = io::npy_data_bytes(h, c10::elementSize(s.dtype_));
    const std::uint64_t need =
        data > UINT64_MAX - h.data_offset ? UINT64_MAX : h.data_offset + data;
    if (fs::file_size(path) < need) {
      throw ExtractError(path + " is truncated: its header says " + shape_as_list(h.shape) + " (" +
                         std::to_string(need) + " bytes), the file has " +
                         std::to_string(fs::file_size(path)));
    }
  }
  return s;
}

Stimuli Stimuli::from_tensor(const at::Tensor& items) {
  if (!items.defined() || items.dim() == 0) {
    throw ExtractError("stimuli must be an [N, ...] tensor (N stimuli), not a scalar");
  }
  if (!items.device().is_cpu()) {
    throw ExtractError("stimuli must be on the CPU, not " + items.device().str());
  }
  if (items.size(0) == 0) {
    throw ExtractError("the stimuli hold no stimuli (shape " + shape_as_list(items.sizes().vec()) +
                       ")");
  }
  Stimuli s;
  s.items_ = items.detach().contiguous();
  s.n_ = items.size(0);
  s.item_shape_.assign(items.sizes().begin() + 1, items.sizes().end());
  s.dtype_ = items.scalar_type();
  s.path_ =
      "memory:sha256:" +
      sha256_hex(std::string_view(static_cast<const char*>(s.items_.data_ptr()), s.items_.nbytes()))
          .substr(0, 16);
  return s;
}

std::vector<std::string> Stimuli::ids() const {
  std::vector<std::string> ids;
  ids.reserve(files_.size());
  for (const auto& f : files_) ids.push_back(fs::path(f).filename().string());
  return ids;
}

at::Tensor Stimuli::rows(std::int64_t start, std::int64_t count) const {
  TORCHLENS_CHECK(start >= 0 && count > 0 && start + count <= n_, "stimuli rows out of range");
  std::vector<std::int64_t> shape{count};
  shape.insert(shape.end(), item_shape_.begin(), item_shape_.end());
  if (images_) {
    std::vector<at::Tensor> items;
    for (std::int64_t i = start; i < start + count; ++i) {
      const std::string& file = files_[static_cast<std::size_t>(i)];
      items.push_back(load_image(file, *images_));
      if (items.back().sizes() != c10::IntArrayRef(item_shape_)) {
        throw ExtractError("image " + file + " comes out " +
                           shape_as_list(items.back().sizes().vec()) + ", but " + files_[0] + " " +
                           shape_as_list(item_shape_) +
                           ": give --crop so that every image has the same size");
      }
    }
    return at::stack(items);
  }
  if (!files_.empty()) {
    std::vector<at::Tensor> items;
    for (std::int64_t i = start; i < start + count; ++i) {
      items.push_back(io::read_npy(files_[static_cast<std::size_t>(i)]));
    }
    return at::stack(items);
  }
  if (items_.defined()) return items_.narrow(0, start, count).clone(); // the model may write it
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype_));
  const std::size_t row = t.nbytes() / static_cast<std::size_t>(count);
  Fd f(path_, O_RDONLY);
  f.pread_all(t.data_ptr(), t.nbytes(), data_offset_ + static_cast<std::size_t>(start) * row);
  return t;
}

// ---- Extractor ----------------------------------------------------------------

struct Extractor::Impl {
  std::optional<torch::jit::Module> script; // a TorchScript model's capture copy
  BatchModel model;
  std::vector<std::string> keys;
  std::uint64_t seed;
  std::int64_t batch_rows;
  bool stop_early;
  std::optional<GradientTarget> gradients;
  LogOptions options;
  detail::Selection selection;      // ids of layers_
  detail::GraphSignature signature; // what every later batch must run

  Impl(BatchModel m, std::vector<std::string> k, std::uint64_t s, std::int64_t b, bool stop,
       std::optional<GradientTarget> g)
      : model(std::move(m)),
        keys(std::move(k)),
        seed(s),
        batch_rows(b),
        stop_early(stop && !g), // a backward needs the whole forward
        gradients(g) {
    options.seed(seed);
    // the recorder notes each saved op output's autograd node (docs/gradients.md)
    if (gradients) options.save_gradients(SaveSpec::all());
  }

  /// The TorchScript model as a BatchModel, run on its capture copy.
  static BatchModel script_model(Impl& self, torch::jit::Module& m) {
    TORCHLENS_CHECK(m.find_method("forward").has_value(),
                    "the TorchScript module has no forward method");
    self.script.emplace(torchlens::detail::guarded_capture_copy(m));
    torch::jit::Module& copy = *self.script;
    BatchModel b;
    b.description = torchlens::detail::describe(copy);
    b.forward = [&copy](const at::Tensor& x) { return copy.forward({x}); };
    b.training_module = [&copy]() -> std::optional<std::string> {
      for (const auto& sub : copy.named_modules()) {
        // (a module built in C++ without a `training` attribute has no mode)
        if (sub.value.hasattr("training") && sub.value.is_training()) return sub.name;
      }
      return std::nullopt;
    };
    return b;
  }
};

Extractor::Extractor(torch::jit::Module& model, std::vector<std::string> keys, std::uint64_t seed,
                     std::int64_t batch_rows, bool stop_early,
                     std::optional<GradientTarget> gradients)
    : Extractor(BatchModel{}, std::move(keys), seed, batch_rows, stop_early, gradients) {
  impl_->model = Impl::script_model(*impl_, model);
  check_gradient_mode();
}

Extractor::Extractor(BatchModel model, std::vector<std::string> keys, std::uint64_t seed,
                     std::int64_t batch_rows, bool stop_early,
                     std::optional<GradientTarget> gradients)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(keys), seed, batch_rows, stop_early,
                                   gradients)) {
  if (impl_->keys.empty()) throw ExtractError("no layers to save: give --save KEY,KEY");
  if (batch_rows <= 0) throw ExtractError("the batch size must be positive");
  if (impl_->model.forward) check_gradient_mode();
}

void Extractor::check_gradient_mode() const {
  if (!impl_->gradients || !impl_->model.training_module) return;
  if (const auto m = impl_->model.training_module()) {
    throw ExtractError(
        "per-stimulus gradients need the model in eval mode, but " +
        (m->empty() ? std::string("the model") : "its module " + *m) +
        " is in training mode: batch norm in training mode mixes the rows of a batch, so the "
        "gradient of the batch's sum is not each stimulus's own; call model.eval() first");
  }
}

namespace {

/// The sum over the first `rows` stimuli of each stimulus's scalar (GradientTarget).
at::Tensor batch_scalar(const GradientTarget& target, const std::vector<at::Tensor>& returned,
                        std::int64_t rows, const at::Tensor& targets) {
  const std::string what = "--gradients-of " + target.text();
  if (returned.empty() || !returned[0].defined()) {
    throw ExtractError(what + ": the model returned no tensor");
  }
  const at::Tensor& y = returned[0];
  if (!y.requires_grad()) {
    throw ExtractError(what +
                       ": the model's first output does not depend on anything that "
                       "requires grad (no gradient to save)");
  }
  if (y.dim() == 0 || y.size(0) < rows) {
    throw ExtractError(what + ": the model's first output has shape " +
                       shape_as_list(y.sizes().vec()) +
                       ", not one row per stimulus: per-stimulus scalars need [batch, ...]");
  }
  const at::Tensor yr = y.narrow(0, 0, rows);
  if (target.kind == GradientTarget::Kind::sum) return yr.sum();
  if (y.dim() != 2) {
    throw ExtractError(what + " needs the model's first output to be [batch, classes], not " +
                       shape_as_list(y.sizes().vec()));
  }
  const std::int64_t classes = y.size(1);
  switch (target.kind) {
    case GradientTarget::Kind::output:
      if (target.index >= classes) {
        throw ExtractError(what + ": the model's first output has " + std::to_string(classes) +
                           " columns (0.." + std::to_string(classes - 1) + ")");
      }
      return yr.select(1, target.index).sum();
    case GradientTarget::Kind::argmax:
      return yr.gather(1, yr.detach().argmax(1, /*keepdim=*/true)).sum();
    case GradientTarget::Kind::cross_entropy: {
      TORCHLENS_CHECK(targets.defined() && targets.dim() == 1 && targets.size(0) == rows,
                      "cross_entropy needs one target per stimulus of the batch");
      const at::Tensor t = targets.to(c10::kLong);
      const auto lo = t.min().item<std::int64_t>(), hi = t.max().item<std::int64_t>();
      if (lo < 0 || hi >= classes) {
        throw ExtractError(what + ": a target (" + std::to_string(lo < 0 ? lo : hi) +
                           ") is outside 0.." + std::to_string(classes - 1) +
                           ", the model's first output's classes");
      }
      return at::cross_entropy_loss(yr, t, {}, at::Reduction::Sum);
    }
    case GradientTarget::Kind::sum:
      break;
  }
  return yr.sum();
}

} // namespace

Extractor::~Extractor() = default;

std::vector<at::Tensor> Extractor::run(const at::Tensor& batch, const at::Tensor& targets) {
  Impl& im = *impl_;
  const bool grads = im.gradients.has_value();
  gradients_.clear();
  const std::int64_t rows = batch.dim() > 0 ? batch.size(0) : 0;
  TORCHLENS_CHECK(rows > 0 && rows <= im.batch_rows, "a batch of ", rows, " rows for batch size ",
                  im.batch_rows);
  at::Tensor x = batch;
  if (rows < im.batch_rows) { // pad: every capture sees the same shapes
    std::vector<std::int64_t> pad_shape(batch.sizes().begin(), batch.sizes().end());
    pad_shape[0] = im.batch_rows - rows;
    x = at::cat({batch, at::zeros(pad_shape, batch.options())});
  }
  // autograd only when gradients are asked for
  at::AutoGradMode grad_mode(grads);
  if (grads) {
    detail::check_gradients_possible(im.options); // refuses c10::InferenceMode
    x = x.detach().requires_grad_(true);          // so that `input` layers have one too
  }
  const auto inputs = detail::jit_input_tensors({x});
  detail::ForwardFn forward = [&im, &x](detail::Recorder*) { return im.model.forward(x); };

  const detail::CaptureSession session(im.model.description, inputs, forward, im.options, im.seed);
  std::vector<at::Tensor> by_id;
  c10::IValue output;                       // what forward returned (gradients)
  std::vector<torch::autograd::Edge> edges; // each op output's autograd node (gradients)
  if (!structure_) {
    // Metadata pass: every activation kept by reference (copy on write, no
    // copies), the pipeline labels the graph, the keys resolve on it.
    detail::SavePolicy all;
    all.mode = detail::SavePolicy::Mode::all;
    auto rec = session.capture(all, /*finish=*/true, grads ? &output : nullptr);
    edges = std::move(rec->grad_edges);
    const std::size_t raw_count = boost::num_vertices(rec->graph);
    ModelGraph graph = std::move(rec->graph);
    by_id = std::move(rec->activations);
    rec.reset();
    run_default_pipeline(graph);
    auto log = std::make_unique<ModelLog>(std::move(graph), std::vector<at::Tensor>{},
                                          LogOptions(im.options).save(SaveSpec::none()));
    const ModelGraph& g = log->graph();
    std::set<Vertex> seen;
    std::vector<ExtractLayer> layers;
    for (const auto& key : im.keys) {
      std::vector<Vertex> vs;
      try {
        vs = log->select(key);
      } catch (const c10::Error& e) {
        throw ExtractError(plain_message(e));
      }
      for (Vertex v : vs) {
        if (!seen.insert(v).second) continue;
        const OpNode& n = g[v];
        ExtractLayer l;
        l.label = n.label();
        l.key = key;
        l.op = n.op_name;
        l.module = n.modules.empty() ? std::string() : n.modules.back().address.str();
        l.id = n.id;
        if (n.kind == NodeKind::output) { // an output shares its producer's tensor
          for (auto e : boost::make_iterator_range(boost::in_edges(v, g)))
            l.id = g[boost::source(e, g)].id;
        }
        l.shape = n.shape;
        if (l.shape.empty() || l.shape[0] != im.batch_rows) {
          std::string msg = "layer ";
          msg += n.label();
          msg += " (key '" + key + "') has shape " + shape_as_list(n.shape) +
                 ": its first dimension is not the batch size " + std::to_string(im.batch_rows) +
                 " (flattened, or reduced over the batch?); extract saves one row per stimulus";
          throw ExtractError(msg);
        }
        if (l.id >= by_id.size() || !by_id[l.id].defined()) {
          throw ExtractError("layer " + n.label() + " (key '" + key + "') has no tensor to save");
        }
        l.dtype = by_id[l.id].scalar_type();
        layers.push_back(std::move(l));
      }
    }
    im.signature = detail::signature_of(g, raw_count);
    im.selection.policy.mode = detail::SavePolicy::Mode::ids;
    for (const auto& l : layers) im.selection.policy.ids.insert(l.id);
    if (im.stop_early) im.selection.policy.halt_after = detail::last_saved_id(im.selection);
    layers_ = std::move(layers);
    structure_ = std::move(log);
  } else {
    by_id = session.capture_selection(im.selection, im.signature, 0, grads ? &edges : nullptr,
                                      grads ? &output : nullptr);
  }

  std::vector<at::Tensor> grad_by_layer;
  if (grads) {
    // The gradient machinery of save_gradients (src/grad): hooks on the nodes
    // that deliver the saved layers' gradients, then one backward of the sum
    // of every stimulus's scalar. Rows are independent in eval mode, so row i
    // of each gradient is stimulus i's own. Only the input accumulates a
    // .grad: the parameters' are left alone.
    auto store = std::make_shared<detail::GradientStore>(im.options);
    std::unordered_set<std::size_t> ids;
    for (const auto& l : layers_) ids.insert(l.id);
    detail::hook_gradients(store, edges, ids, {});
    std::vector<at::Tensor> returned;
    detail::flatten_outputs(output, returned);
    const at::Tensor scalar = batch_scalar(*im.gradients, returned, rows, targets);
    torch::autograd::backward({scalar}, {}, /*retain_graph=*/false, /*create_graph=*/false, {x});
    for (const auto& l : layers_) {
      at::Tensor g = store->gradient(l.id);
      if (!g.defined()) {
        const bool in_graph = store->hooked.count(l.id) > 0;
        throw ExtractError("layer " + l.label + " (key '" + l.key + "') has no gradient of " +
                           im.gradients->text() + ": " +
                           (in_graph ? "the scalar does not depend on it"
                                     : "it is not part of the autograd graph (an integer "
                                       "tensor, or computed without grad)"));
      }
      if (g.sizes() != by_id[l.id].sizes()) g = g.expand(by_id[l.id].sizes());
      if (rows < im.batch_rows) {
        const at::Tensor padding = g.narrow(0, rows, im.batch_rows - rows);
        if (padding.ne(0).any().item<bool>()) {
          throw ExtractError(
              "the rows of a batch interact: the gradient of stimuli's scalars reaches the "
              "padding rows of layer " +
              l.label +
              ", so the gradient of the batch's sum is not each stimulus's own (an op that "
              "mixes the batch, e.g. x.mean(0) or batch norm with batch statistics); "
              "per-stimulus gradients need independent rows");
        }
      }
      grad_by_layer.push_back(std::move(g));
    }
  }

  std::vector<at::Tensor> out;
  out.reserve(layers_.size());
  for (const auto& l : layers_) {
    TORCHLENS_CHECK(l.id < by_id.size() && by_id[l.id].defined(), "layer ", l.label,
                    " was not saved");
    at::Tensor t = by_id[l.id].detach();
    if (!t.device().is_cpu()) t = t.to(c10::kCPU);
    if (t.scalar_type() != io::dtypes::npy_type(t.scalar_type())) {
      t = t.to(io::dtypes::npy_type(t.scalar_type()));
    }
    out.push_back(t.narrow(0, 0, rows).contiguous());
  }
  for (std::size_t i = 0; i < grad_by_layer.size(); ++i) {
    at::Tensor g = grad_by_layer[i].detach();
    if (!g.device().is_cpu()) g = g.to(c10::kCPU);
    g = g.to(out[i].scalar_type()); // the activation's (npy) type
    gradients_.push_back(g.narrow(0, 0, rows).contiguous());
  }
  return out;
}

GradientTarget GradientTarget::parse(const std::string& text) {
  GradientTarget t;
  if (text == "sum") return t;
  if (text == "output:argmax") {
    t.kind = Kind::argmax;
    return t;
  }
  if (text == "loss:cross_entropy") {
    t.kind = Kind::cross_entropy;
    return t;
  }
  if (text.rfind("output:", 0) == 0) {
    const std::string k = text.substr(7);
    const bool digits = !k.empty() && k.size() < 19 && std::all_of(k.begin(), k.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (digits) {
      t.kind = Kind::output;
      t.index = std::stoll(k);
      return t;
    }
  }
  throw ExtractError("bad --gradients-of '" + text +
                     "': use sum, output:K (a column of the first output, K >= 0), "
                     "output:argmax or loss:cross_entropy");
}

std::string GradientTarget::text() const {
  switch (kind) {
    case Kind::sum:
      return "sum";
    case Kind::output:
      return "output:" + std::to_string(index);
    case Kind::argmax:
      return "output:argmax";
    case Kind::cross_entropy:
      return "loss:cross_entropy";
  }
  return "sum";
}

std::string Extractor::structure_text() const {
  std::ostringstream os;
  for (const auto& op : impl_->signature.ops) {
    os << op.label << ' ' << op.op_name << ' ' << shape_as_list(op.shape) << '\n';
  }
  os << "ops " << impl_->signature.raw_count << '\n';
  return os.str();
}

// ---- extract_to_dir -----------------------------------------------------------

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += v[i];
  }
  return s;
}

} // namespace

std::string detail_io::absolute_text(const std::string& p) {
  if (p.empty() || p.rfind("memory:", 0) == 0) return p; // no file (ExtractOptions::model_path)
  std::error_code ec;
  const auto c = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? p : c.string();
}

void detail_io::check_gradient_options(const ExtractOptions& o, const Stimuli& stimuli) {
  const bool ce = o.gradients_of && o.gradients_of->kind == GradientTarget::Kind::cross_entropy;
  if (ce && !o.targets.defined()) {
    throw ExtractError(
        "--gradients-of loss:cross_entropy needs the class of every stimulus: "
        "--targets LABELS.npy ([N] integers)");
  }
  if (!ce && o.targets.defined()) {
    throw ExtractError("--targets is for --gradients-of loss:cross_entropy only");
  }
  if (!ce) return;
  const at::Tensor& t = o.targets;
  if (t.dim() != 1 || t.size(0) != stimuli.size() || !c10::isIntegralType(t.scalar_type(), false)) {
    throw ExtractError("--targets must be one class index per stimulus: [" +
                       std::to_string(stimuli.size()) + "] integers, not " +
                       io::dtypes::name(t.scalar_type()) + " " + shape_as_list(t.sizes().vec()));
  }
}

at::Tensor detail_io::batch_targets(const ExtractOptions& o, std::int64_t start,
                                    std::int64_t count) {
  if (!o.targets.defined()) return {};
  return o.targets.narrow(0, start, count);
}

std::string detail_io::layer_file(const std::string& label, bool gradient) {
  return file_stem(label) + (gradient ? ".grad.npy" : ".npy");
}

std::string detail_io::options_text(const ExtractOptions& o, const Stimuli& stimuli) {
  std::vector<std::string> parts;
  if (stimuli.is_images()) parts.push_back(stimuli.image_options()->text());
  if (o.dtype) parts.push_back("dtype=" + io::dtypes::name(*o.dtype));
  if (o.flatten) parts.emplace_back("flatten");
  if (o.statistics) parts.emplace_back("statistics");
  if (o.gradients_of) {
    std::string g = "gradients=" + o.gradients_of->text();
    if (o.targets.defined()) { // the targets' values are part of the plan
      const at::Tensor t = o.targets.to(c10::kLong).contiguous();
      g += " targets=sha256:" +
           sha256_hex(std::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes()))
               .substr(0, 16);
    }
    parts.push_back(std::move(g));
  }
  std::string text;
  for (const auto& p : parts) text += (text.empty() ? "" : "; ") + p;
  return text;
}

c10::ScalarType detail_io::written_type(c10::ScalarType t, const ExtractOptions& o) {
  t = io::dtypes::npy_type(t);
  if (o.dtype && c10::isFloatingType(t)) t = *o.dtype;
  return t;
}

std::vector<std::int64_t> detail_io::written_shape(std::vector<std::int64_t> shape,
                                                   const ExtractOptions& o) {
  if (o.flatten && shape.size() > 2) shape = {shape[0], numel_of(shape) / shape[0]};
  return shape;
}

at::Tensor detail_io::as_written(const at::Tensor& t, const ExtractOptions& o) {
  at::Tensor x = t;
  if (o.flatten && x.dim() > 2) x = x.reshape({x.size(0), -1});
  const auto type = written_type(x.scalar_type(), o);
  if (type != x.scalar_type()) x = x.to(type);
  return x.contiguous();
}

namespace {

/// The activations of stimuli [start, start + count), from the next prefetched batch.
std::vector<at::Tensor> run_batch(Extractor& extractor, Prefetcher& prefetch,
                                  const ExtractOptions& o, std::int64_t start, std::int64_t count) {
  const at::Tensor batch = prefetch.next(start, count);
  try {
    return extractor.run(batch, batch_targets(o, start, count));
  } catch (const GraphChanged& e) {
    std::string where = "stimuli ";
    where += std::to_string(start);
    where += "..";
    where += std::to_string(start + count - 1);
    throw GraphChanged(TORCHLENS_HERE, where + ": " + e.message());
  }
}

} // namespace

ExtractResult extract_to_dir(torch::jit::Module& model, const Stimuli& stimuli,
                             const ExtractOptions& o) {
  return extract_to_dir_with(
      MakeExtractor([&model](const std::vector<std::string>& keys, std::uint64_t seed,
                             std::int64_t rows, bool stop_early,
                             std::optional<GradientTarget> gradients) {
        return std::make_unique<Extractor>(model, keys, seed, rows, stop_early, gradients);
      }),
      stimuli, o);
}

ExtractResult extract_to_dir_with(const MakeExtractor& make, const Stimuli& stimuli,
                                  const ExtractOptions& o) {
  check_gradient_options(o, stimuli);
  if (o.shard.count > 1) return extract_shard(make, stimuli, o);
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path dir = o.out_dir;
  const fs::path index_path = dir / "index.json";
  const std::int64_t n = stimuli.size();

  // What this run is: from the options, or from index.json when resuming.
  Record rec;
  rec.model = absolute_text(o.model_path);
  rec.inputs = absolute_text(stimuli.path());
  rec.num_stimuli = n;
  rec.stimulus_shape = stimuli.item_shape();
  rec.stimulus_dtype = io::dtypes::name(stimuli.dtype());
  rec.options = options_text(o, stimuli);
  rec.stimulus_ids = stimuli.ids();
  std::optional<Record> old;
  const bool dir_has_files = fs::exists(dir) && fs::is_directory(dir) && !fs::is_empty(dir);
  if (fs::exists(dir) && !fs::is_directory(dir)) {
    throw ExtractError("--out " + dir.string() + " exists and is not a folder");
  }
  if (dir_has_files) {
    if (!o.resume) {
      throw ExtractError("output folder " + dir.string() +
                         " is not empty; pass --resume to continue an interrupted run there, or "
                         "choose another --out");
    }
    if (fs::exists(dir / "plan.json") && !fs::exists(index_path)) {
      throw ExtractError(dir.string() +
                         " holds a sharded run (plan.json): run its shards with --shard K/N, "
                         "then `torchlens merge " +
                         dir.string() + "`");
    }
    if (!fs::exists(index_path)) {
      throw ExtractError("cannot resume: " + dir.string() + " is not empty but has no index.json");
    }
    old = read_index(index_path);
  }
  auto mismatch = [&](const std::string& what, const std::string& then, const std::string& now) {
    return ExtractError("cannot resume: " + what + " differs from the interrupted run's (" + then +
                        " in " + index_path.string() + ", " + now + " now)");
  };
  if (old) {
    if (old->model != rec.model) throw mismatch("the model", old->model, rec.model);
    if (old->inputs != rec.inputs) throw mismatch("the stimuli", old->inputs, rec.inputs);
    if (old->num_stimuli != n) {
      throw mismatch("the number of stimuli", std::to_string(old->num_stimuli), std::to_string(n));
    }
    if (old->stimulus_shape != rec.stimulus_shape || old->stimulus_dtype != rec.stimulus_dtype) {
      throw mismatch("the stimulus shape",
                     old->stimulus_dtype + " " + shape_as_list(old->stimulus_shape),
                     rec.stimulus_dtype + " " + shape_as_list(rec.stimulus_shape));
    }
    if (old->stimulus_ids != rec.stimulus_ids) {
      throw mismatch("the stimulus file names", std::to_string(old->stimulus_ids.size()) + " names",
                     std::to_string(rec.stimulus_ids.size()) + " names, not all the same");
    }
    if (old->options != rec.options) throw mismatch("the options", old->options, rec.options);
    if (!o.keys.empty() && o.keys != old->keys)
      throw mismatch("--save", join(old->keys), join(o.keys));
    if (o.batch_size && *o.batch_size != old->batch_size) {
      throw mismatch("--batch-size", std::to_string(old->batch_size),
                     std::to_string(*o.batch_size));
    }
    if (o.seed && *o.seed != old->seed) {
      throw mismatch("--seed", std::to_string(old->seed), std::to_string(*o.seed));
    }
    rec.keys = old->keys;
    rec.batch_size = old->batch_size;
    rec.seed = old->seed;
    rec.rows_done = old->rows_done;
  } else {
    rec.keys = o.keys;
    rec.batch_size = o.batch_size.value_or(32);
    rec.seed = o.seed.value_or(0);
  }
  if (rec.keys.empty()) throw ExtractError("no layers to save: give --save KEY,KEY");
  if (rec.batch_size <= 0) throw ExtractError("the batch size must be positive");

  ExtractResult result;
  result.num_stimuli = n;
  result.batch_size = rec.batch_size;
  result.seed = rec.seed;
  result.rows_done = rec.rows_done;
  if (old && rec.rows_done == n) { // nothing left to do
    std::vector<std::string> names;
    for (const auto& l : old->layers) {
      if (!l.gradient) names.push_back(l.file);
    }
    if (o.statistics && !statistics_present(dir, names)) write_statistics(dir, names);
    for (const auto& l : old->layers) {
      ExtractLayer e;
      e.label = l.label;
      e.key = l.key;
      e.shape = l.shape;
      e.gradient = l.gradient;
      result.layers.push_back(std::move(e));
    }
    return result;
  }

  const std::int64_t rows_per_batch = std::min(rec.batch_size, n);
  const std::unique_ptr<Extractor> made =
      make(rec.keys, rec.seed, rows_per_batch, o.stop_early, o.gradients_of);
  Extractor& extractor = *made;
  std::vector<Fd> files;
  std::vector<std::size_t> offsets, row_bytes;
  std::int64_t batches = 0;
  Prefetcher prefetch([&stimuli](std::int64_t s, std::int64_t c) { return stimuli.rows(s, c); },
                      rec.rows_done, n, rows_per_batch, o.background_io);
  WriteBehind writer(o.background_io); // destroyed first: drains into the files
  for (std::int64_t start = rec.rows_done; start < n; start += rows_per_batch) {
    if (o.max_batches && batches >= *o.max_batches) break;
    const std::int64_t count = std::min(rows_per_batch, n - start);
    std::vector<at::Tensor> acts = run_batch(extractor, prefetch, o, start, count);
    if (files.empty()) {
      // first batch of this run: the layers are known; create or reopen the files
      std::vector<Record::Layer> layers = layer_records<Record::Layer>(extractor.layers(), o, n);
      if (old) {
        auto describe = [](const std::vector<Record::Layer>& ls) {
          std::string s;
          for (const auto& l : ls) {
            if (!s.empty()) s += ", ";
            s += l.label + " " + l.dtype + " " + shape_as_list(l.shape);
          }
          return s;
        };
        bool same = layers.size() == old->layers.size();
        for (std::size_t i = 0; same && i < layers.size(); ++i) {
          same = layers[i].label == old->layers[i].label &&
                 layers[i].shape == old->layers[i].shape &&
                 layers[i].dtype == old->layers[i].dtype && layers[i].file == old->layers[i].file &&
                 layers[i].gradient == old->layers[i].gradient;
        }
        if (!same) throw mismatch("the layers", describe(old->layers), describe(layers));
      }
      fs::create_directories(dir);
      const std::size_t num_layers = extractor.layers().size();
      auto type_of = [&](std::size_t i) { // activations, then their gradients
        return written_type(extractor.layers()[i % num_layers].dtype, o);
      };
      // the whole run must fit on the disk before anything is written
      std::uintmax_t needed = 0, present = 0;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto type = type_of(i);
        needed += io::npy_header(npy_descr_of(type), layers[i].shape).size() +
                  static_cast<std::uintmax_t>(numel_of(layers[i].shape)) * c10::elementSize(type);
        std::error_code ec;
        const auto size = fs::file_size(dir / layers[i].file, ec);
        if (!ec) present += size;
      }
      {
        std::error_code ec;
        const auto space = fs::space(dir, ec);
        if (!ec && needed > present && needed - present > space.available) {
          throw ExtractError("not enough disk space in " + dir.string() + ": the run needs " +
                             std::to_string((needed - present) >> 20) + " MiB more, " +
                             std::to_string(space.available >> 20) + " MiB are free");
        }
      }
      for (const auto& l : layers) {
        const std::string path = (dir / l.file).string();
        const auto type = type_of(files.size());
        const std::string header = io::npy_header(npy_descr_of(type), l.shape);
        const std::size_t row =
            static_cast<std::size_t>(numel_of(l.shape) / n) * c10::elementSize(type);
        if (old) {
          // Keep the header and rows_done rows; drop whatever a killed batch left.
          if (!fs::exists(path)) throw ExtractError("cannot resume: " + path + " is missing");
          const auto h = io::read_npy_header(path);
          if (h.shape != l.shape || h.data_offset != header.size()) {
            throw ExtractError("cannot resume: " + path + " does not have the recorded header");
          }
          const std::size_t keep = header.size() + static_cast<std::size_t>(rec.rows_done) * row;
          if (fs::file_size(path) < keep) {
            throw ExtractError("cannot resume: " + path +
                               " holds fewer rows than index.json's rows_done " +
                               std::to_string(rec.rows_done));
          }
          files.emplace_back(path, O_WRONLY);
          files.back().truncate(keep);
        } else {
          files.emplace_back(path, O_WRONLY | O_CREAT | O_TRUNC);
          files.back().pwrite_all(header.data(), header.size(), 0);
        }
        offsets.push_back(header.size());
        row_bytes.push_back(row);
      }
      rec.layers = std::move(layers);
      if (!old) {
        for (auto& f : files) f.sync();
        write_atomically(index_path, index_json(rec));
      }
    }
    const auto& grads = extractor.gradients(); // the gradient files follow the activations
    acts.insert(acts.end(), grads.begin(), grads.end());
    TORCHLENS_CHECK(acts.size() == files.size(), "extract: ", acts.size(), " tensors for ",
                    files.size(), " files");
    // rows first, flushed; then the record that says they are there (on the
    // writer's thread while the next batch runs)
    writer.submit([&, acts = std::move(acts), start, count] {
      for (std::size_t i = 0; i < files.size(); ++i) {
        const at::Tensor t = as_written(acts[i], o);
        TORCHLENS_CHECK(
            static_cast<std::size_t>(t.nbytes()) == row_bytes[i] * static_cast<std::size_t>(count),
            "layer ", rec.layers[i].label, " changed size");
        files[i].pwrite_all(t.data_ptr(), t.nbytes(),
                            offsets[i] + static_cast<std::size_t>(start) * row_bytes[i]);
      }
      for (auto& f : files) f.sync();
      rec.rows_done = start + count;
      write_atomically(index_path, index_json(rec));
      if (o.on_batch) o.on_batch(rec.rows_done, n);
    });
    result.rows_this_run += count;
    ++batches;
  }
  writer.finish();
  for (const auto& l : extractor.layers()) result.layers.push_back(l);
  if (o.gradients_of) {
    for (const auto& l : extractor.layers()) {
      result.layers.push_back(l);
      result.layers.back().gradient = true;
    }
  }
  for (std::size_t i = 0; i < result.layers.size() && i < rec.layers.size(); ++i)
    result.layers[i].shape = rec.layers[i].shape;
  result.rows_done = rec.rows_done;
  if (o.statistics && rec.rows_done == n) {
    std::vector<std::string> names;
    for (const auto& l : rec.layers) {
      if (!l.gradient) names.push_back(l.file);
    }
    write_statistics(dir, names);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

ExtractedLayers extract_to_memory(torch::jit::Module& model, const Stimuli& stimuli,
                                  const ExtractOptions& o) {
  if (!o.out_dir.empty()) {
    throw ExtractError("extract_to_memory writes no files (out_dir " + o.out_dir +
                       "): extract_to_dir writes them");
  }
  if (o.resume || o.statistics || o.max_batches || o.shard.count > 1) {
    throw ExtractError(
        "resume, statistics, max_batches and shards are options of a run written "
        "to a folder (extract_to_dir), not of extract_to_memory");
  }
  check_gradient_options(o, stimuli);
  if (o.keys.empty()) throw ExtractError("no layers to save: give their keys");
  const std::int64_t batch_size = o.batch_size.value_or(32);
  if (batch_size <= 0) throw ExtractError("the batch size must be positive");
  const std::int64_t n = stimuli.size();
  const std::int64_t rows_per_batch = std::min(batch_size, n);
  Extractor extractor(model, o.keys, o.seed.value_or(0), rows_per_batch, o.stop_early,
                      o.gradients_of);
  Prefetcher prefetch([&stimuli](std::int64_t s, std::int64_t c) { return stimuli.rows(s, c); }, 0,
                      n, rows_per_batch, o.background_io);
  ExtractedLayers out;
  for (std::int64_t start = 0; start < n; start += rows_per_batch) {
    const std::int64_t count = std::min(rows_per_batch, n - start);
    std::vector<at::Tensor> acts = run_batch(extractor, prefetch, o, start, count);
    const auto& grads = extractor.gradients(); // as the files: activations, then gradients
    acts.insert(acts.end(), grads.begin(), grads.end());
    for (std::size_t i = 0; i < acts.size(); ++i) {
      const at::Tensor t = as_written(acts[i], o);
      if (out.tensors.size() == i) { // first batch: the whole [N, ...] tensor
        std::vector<std::int64_t> shape(t.sizes().begin(), t.sizes().end());
        shape[0] = n;
        out.tensors.push_back(at::empty(shape, t.options()));
      }
      out.tensors[i].narrow(0, start, count).copy_(t);
    }
  }
  for (const bool gradient : {false, true}) {
    if (gradient && !o.gradients_of) break;
    for (const auto& l : extractor.layers()) {
      out.layers.push_back(l);
      out.layers.back().gradient = gradient;
    }
  }
  TORCHLENS_CHECK(out.layers.size() == out.tensors.size(), "extract: ", out.tensors.size(),
                  " tensors for ", out.layers.size(), " layers");
  for (std::size_t i = 0; i < out.layers.size(); ++i)
    out.layers[i].shape = out.tensors[i].sizes().vec();
  return out;
}

} // namespace torchlens::extract
