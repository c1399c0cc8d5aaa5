// Validation by re-execution: each op is called again through the dispatcher
// with its recorded operator, non-tensor arguments and generator state, on the
// saved activations of its parents. See docs/validation.md.

#include "../capture/recorder.hpp"
#include "../capture/reexecute.hpp"
#include "../capture/script_model.hpp"
#include "../capture/session.hpp"
#include "../capture/tensor_bytes.hpp"

#include <torchlens/passes/validate_graph_invariants.hpp>
#include <torchlens/torch_error.hpp>
#include <torchlens/validate/validate.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/api/module.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

namespace torchlens {

namespace {

using detail::bitwise_equal;
using detail::OpRecord;

/// The saved activations validation reads: by OpNode id, an output node being
/// its producer's tensor (what ModelLog::activation gives for a log that saved
/// everything, without needing a log).
struct Saved {
  const ModelGraph& g;
  const std::vector<at::Tensor>& by_id;
  const at::Tensor& activation(Vertex v) const {
    static const at::Tensor undefined;
    const OpNode& n = g[v];
    if (n.id < by_id.size() && by_id[n.id].defined()) return by_id[n.id];
    if (n.kind == NodeKind::output) {
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        return activation(boost::source(e, g));
      }
    }
    return undefined;
  }
};

/// Ops whose output does not depend on the *values* of their tensor inputs
/// (only on shapes or dtypes), so a perturbation cannot change it.
const std::set<std::string> kValueBlind = {
    "aten::zeros_like",  "aten::ones_like",  "aten::empty_like",   "aten::full_like",
    "aten::rand_like",   "aten::randn_like", "aten::randint_like", "aten::new_zeros",
    "aten::new_ones",    "aten::new_empty",  "aten::new_full",     "aten::expand_as",
    "aten::zero_",       "aten::fill_",      "aten::empty",        "aten::size",
    "aten::uniform_",    "aten::normal_",    "aten::bernoulli_",   "aten::random_",
    "aten::exponential_"};

/// Ops outside ATen known to be safe to call with any values of their tensor
/// arguments (bounds checked, or only arithmetic on them). The region ops read
/// `rois[:, 0]` as a batch index without checking it: their `rois` are
/// perturbed with that column kept (see perturbation_for).
const std::set<std::string> kSafeToPerturb = {
    "torchvision::nms",      "torchvision::deform_conv2d", "torchvision::roi_align",
    "torchvision::roi_pool", "torchvision::ps_roi_align",  "torchvision::ps_roi_pool"};

/// True for an op of ATen or of this library, whose kernels check their inputs.
bool checks_its_inputs(const std::string& op) {
  return op.rfind("aten::", 0) == 0 || op.rfind("torchlens::", 0) == 0 ||
         op.rfind("prim::", 0) == 0 || kSafeToPerturb.count(op) != 0;
}

/// `value` standardized along the last dimension and scaled by 3: a sharp
/// profile whose peak lies wherever `value`'s does.
at::Tensor sharpened(const at::Tensor& value) {
  const at::Tensor v = value.to(at::kDouble);
  const at::Tensor centred = v - v.mean(-1, true);
  return centred / (centred.abs().amax(-1, true) + 1e-12) * 3;
}

/// The value argument `arg` of `op` takes in a perturbation: `value`, except
/// that a region op's batch-index column keeps its original indices (a random
/// index would make torchvision's kernels read outside the batch), and that a
/// sampler's probabilities stay probabilities: a perturbation that only shifts
/// them can draw the same samples from the same generator state, and a
/// negative one is outside the op's domain, so `multinomial` gets a sharp
/// distribution peaked where the random value peaks, and `bernoulli` its
/// values squashed into (0, 1).
at::Tensor perturbation_for(const std::string& op, const std::string& arg,
                            const at::Tensor& original, const at::Tensor& value) {
  if (arg == "rois" && op.rfind("torchvision::", 0) == 0 && original.dim() == 2 &&
      original.size(1) == 5) {
    at::Tensor kept = value.clone();
    kept.select(1, 0).copy_(original.select(1, 0));
    return kept;
  }
  if (arg == "self" && value.is_floating_point() && value.dim() >= 1 && value.numel() > 0) {
    if (op == "aten::multinomial") return at::softmax(sharpened(value), -1).to(value.dtype());
    if (op == "aten::bernoulli") return at::sigmoid(sharpened(value) * 2).to(value.dtype());
  }
  return value;
}

/// Ops whose output values are undefined (uninitialized memory).
const std::set<std::string> kUninitialized = {"aten::empty", "aten::empty_like",
                                              "aten::empty_strided", "aten::new_empty",
                                              "aten::new_empty_strided"};

/// (op, argument) pairs whose values are structural: indices, masks, targets,
/// the shape/dtype donor of `*_as` ops and `to(other)`.
bool structural_arg(const std::string& op, const std::string& arg) {
  static const std::set<std::string> names = {"index",   "indices", "mask",       "target",
                                              "offsets", "lengths", "batch_sizes"};
  if (names.count(arg) != 0) return true;
  if ((op == "aten::view_as" || op == "aten::reshape_as" || op == "aten::type_as" ||
       op == "aten::expand_as" || op == "aten::to") &&
      arg == "other") {
    return true;
  }
  return false;
}

/// Running statistics of a norm that normalizes with the batch's own: written
/// (the statistics are updated), never read. Batch norm in training
/// (`training`), instance norm with `track_running_stats` (`use_input_stats`).
bool written_not_read(const OpRecord& rec, const std::string& arg) {
  if (arg != "running_mean" && arg != "running_var") return false;
  const auto& schema_args = rec.op->schema().arguments();
  for (std::size_t i = 0; i < schema_args.size() && i < rec.args.size(); ++i) {
    const std::string& name = schema_args[i].name();
    if ((name == "training" || name == "use_input_stats") && rec.args[i].isBool()) {
      return rec.args[i].toBool();
    }
  }
  return false;
}

bool values_equal(const at::Tensor& a, const at::Tensor& b, double atol, double rtol,
                  double& max_error) {
  max_error = 0;
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) {
    max_error = std::numeric_limits<double>::infinity();
    return false;
  }
  if (a.numel() == 0) return true;
  // the common case, one pass: replays of deterministic kernels are bitwise equal
  if (bitwise_equal(a, b) || at::equal(a, b)) return true;
  if (!a.is_floating_point() && !a.is_complex()) return false;
  const auto da = a.detach().to(at::kDouble);
  const auto db = b.detach().to(at::kDouble);
  const auto both_nan = at::isnan(da).logical_and(at::isnan(db));
  const auto diff = (da - db).abs().masked_fill(both_nan, 0);
  const auto same_inf = da.eq(db); // inf == inf
  max_error = diff.masked_fill(same_inf, 0).max().item<double>();
  return at::allclose(da, db, rtol, atol, /*equal_nan=*/true);
}

/// NaN-aware exact equality (the perturbation check: did anything change?).
/// `b` is the saved value, the same for every perturbation of an op:
/// `b_has_nan` caches whether it holds a NaN (unknown until first needed).
bool exactly_equal(const at::Tensor& a, const at::Tensor& b, std::optional<bool>& b_has_nan) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (a.numel() == 0 || bitwise_equal(a, b) || at::equal(a, b)) return true;
  if (!a.is_floating_point() && !a.is_complex()) return false;
  // unequal somewhere; equal only if every difference is NaN against NaN, which
  // needs a NaN in b (a perturbed output full of NaN differs from a finite one)
  if (!b_has_nan) b_has_nan = at::isnan(b).any().item<bool>();
  if (!*b_has_nan) return false;
  return (a.eq(b) | (at::isnan(a) & at::isnan(b))).all().item<bool>();
}

/// The value of an argument by schema name, or None.
c10::IValue argument(const OpRecord& rec, const std::string& name) {
  const auto& schema_args = rec.op->schema().arguments();
  for (std::size_t i = 0; i < schema_args.size() && i < rec.args.size(); ++i) {
    if (schema_args[i].name() == name) return rec.args[i];
  }
  return c10::IValue();
}

bool scalar_is(const c10::IValue& v, double x) {
  if (v.isInt()) return static_cast<double>(v.toInt()) == x;
  if (v.isDouble()) return v.toDouble() == x;
  if (v.isScalar()) return v.toScalar().toDouble() == x;
  return false;
}

bool all_equal(const at::Tensor& t, double x) {
  return t.defined() && t.numel() > 0 && t.detach().to(at::kDouble).eq(x).all().item<bool>();
}

/// Argument names through which parent p feeds vertex v.
std::set<std::string> args_of(const ModelGraph& g, Vertex v, Vertex p) {
  std::set<std::string> names;
  for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
    if (boost::source(e, g) == p) names.insert(g[e].arg_name);
  }
  return names;
}

/// The value an argument had: a parent's saved activation, or what the record
/// kept (a parameter, a scalar).
at::Tensor tensor_argument(const ModelGraph& g, Vertex v, const OpRecord& rec, const Saved& log,
                           const std::string& name) {
  for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
    if (g[e].arg_name == name && g[e].list_index < 0) return log.activation(boost::source(e, g));
  }
  const c10::IValue a = argument(rec, name);
  return a.isTensor() ? a.toTensor() : at::Tensor();
}

/// Perturbations that cannot be tried because of what the argument is:
/// overwritten entirely, structural (indices, masks), written but not read.
std::string unperturbable(const ModelGraph& g, Vertex v, Vertex p, const OpRecord& rec,
                          const at::Tensor& saved) {
  const OpNode& n = g[v];
  for (const auto& name : args_of(g, v, p)) {
    if (n.op_name == "aten::copy_" && name == "self") return "overwritten entirely";
    if (structural_arg(n.op_name, name)) return "structural argument";
    if (written_not_read(rec, name)) return "not read in training";
    // a write through a view covering the whole base replaces every element
    // of the old base value (TorchLens's full-shape __setitem__)
    if (n.op_name == "torchlens::base_update" && name == "base") {
      std::int64_t numel = 1;
      for (auto d : rec.args[2].toIntVector()) numel *= d;
      if (numel == saved.numel()) return "overwritten entirely";
    }
  }
  return "";
}

/// Why perturbing p cannot change v for these argument values, or "" when no
/// rule proves it (then "no effect" is a failure).
std::string value_blind(const ModelGraph& g, Vertex v, Vertex p, const OpRecord& rec,
                        const Saved& log, const at::Tensor& saved) {
  const OpNode& n = g[v];
  const std::string& op = n.op_name;
  const auto via = args_of(g, v, p);
  auto via_only = [&](const std::string& name) { return via.size() == 1 && via.count(name); };
  auto tensor = [&](const std::string& name) { return tensor_argument(g, v, rec, log, name); };
  if (saved.is_floating_point() && !at::isfinite(saved).any().item<bool>()) {
    return "output all inf/NaN";
  }
  // a product with zero
  static const std::set<std::string> products = {
      "aten::mul",    "aten::mul_",   "aten::matmul",       "aten::mm",         "aten::bmm",
      "aten::mv",     "aten::dot",    "aten::outer",        "aten::linear",     "aten::conv1d",
      "aten::conv2d", "aten::conv3d", "aten::_convolution", "aten::convolution"};
  if (products.count(op) != 0) {
    for (const char* name : {"self", "other", "input", "weight", "mat2", "vec", "tensor"}) {
      if (via.count(name) != 0) continue;
      const at::Tensor t = tensor(name);
      if (all_equal(t, 0)) return std::string("multiplied by zero (") + name + " is all zeros)";
    }
    if (scalar_is(argument(rec, "other"), 0)) return "multiplied by zero (other = 0)";
  }
  if ((op == "aten::add" || op == "aten::sub" || op == "aten::add_" || op == "aten::sub_") &&
      via_only("other") && scalar_is(argument(rec, "alpha"), 0)) {
    return "scaled by alpha = 0";
  }
  if ((op == "aten::addmm" || op == "aten::baddbmm" || op == "aten::addbmm") && via_only("self") &&
      scalar_is(argument(rec, "beta"), 0)) {
    return "scaled by beta = 0";
  }
  if ((op == "aten::addmm" || op == "aten::baddbmm") &&
      (via_only("mat1") || via_only("mat2") || via_only("batch1") || via_only("batch2"))) {
    if (scalar_is(argument(rec, "alpha"), 0)) return "scaled by alpha = 0";
    for (const char* name : {"mat1", "mat2", "batch1", "batch2"}) {
      if (via.count(name) == 0 && all_equal(tensor(name), 0)) {
        return std::string("multiplied by zero (") + name + " is all zeros)";
      }
    }
  }
  // x ** 0, 1 ** x
  if (op == "aten::pow" || op == "aten::pow_") {
    if (via_only("self") &&
        (scalar_is(argument(rec, "exponent"), 0) || all_equal(tensor("exponent"), 0))) {
      return "raised to the power 0";
    }
    if (via_only("exponent") &&
        (scalar_is(argument(rec, "self"), 1) || all_equal(tensor("self"), 1))) {
      return "1 raised to a power";
    }
  }
  // a selection that never picks this argument
  if (op == "aten::where") {
    const at::Tensor cond = tensor("condition");
    if (cond.defined() && via_only("self") && !cond.any().item<bool>()) return "never selected";
    if (cond.defined() && via_only("other") && cond.all().item<bool>()) return "never selected";
  }
  // an elementwise maximum / minimum whose other operand wins at every element
  // (strictly): this argument is compared, never taken
  if (op == "aten::maximum" || op == "aten::minimum" || op == "aten::fmax" || op == "aten::fmin" ||
      ((op == "aten::max" || op == "aten::min") && n.overload == "other")) {
    const std::string mine = via_only("self") ? "self" : via_only("other") ? "other" : "";
    const at::Tensor a = mine.empty() ? at::Tensor() : tensor(mine);
    const at::Tensor b = mine.empty() ? at::Tensor() : tensor(mine == "self" ? "other" : "self");
    if (a.defined() && b.defined() && a.numel() > 0) {
      const bool is_max = op == "aten::maximum" || op == "aten::fmax" || op == "aten::max";
      if ((is_max ? b.gt(a) : b.lt(a)).all().item<bool>()) {
        return "never selected (the other operand wins at every element)";
      }
    }
  }
  if ((op == "aten::masked_fill" || op == "aten::masked_fill_") && via_only("self")) {
    const at::Tensor mask = tensor("mask");
    if (mask.defined() && mask.all().item<bool>()) return "every element replaced";
  }
  // a constant function of its input: clamp, clamp_min, clamp_max, hardtanh
  // (an argument the op does not have reads as None)
  static const std::set<std::string> clamps = {
      "aten::clamp",     "aten::clamp_",     "aten::clamp_min", "aten::clamp_min_",
      "aten::clamp_max", "aten::clamp_max_", "aten::hardtanh",  "aten::hardtanh_"};
  if (clamps.count(op) != 0) {
    const bool hard = op.rfind("aten::hardtanh", 0) == 0;
    const auto lo = argument(rec, hard ? "min_val" : "min");
    const auto hi = argument(rec, hard ? "max_val" : "max");
    if (lo.isScalar() && hi.isScalar() && lo.toScalar().toDouble() >= hi.toScalar().toDouble()) {
      return "clamped to one value";
    }
    // every element beyond one bound: the output is that bound everywhere
    const at::Tensor x = via_only("self") ? tensor("self") : at::Tensor();
    if (x.defined() && x.numel() > 0 && !x.is_complex()) {
      if (lo.isScalar() && x.lt(lo.toScalar()).all().item<bool>()) return "clamped to its minimum";
      if (hi.isScalar() && x.gt(hi.toScalar()).all().item<bool>()) return "clamped to its maximum";
    }
  }
  // an output that is only a function of the sequence lengths: the batch sizes
  // of a packed sequence, the lengths of a padded one (output 1 of each)
  if (op == "aten::_pack_padded_sequence" && n.output_index == 1 && via_only("input")) {
    return "batch sizes depend on the lengths only";
  }
  if (op == "aten::_pad_packed_sequence" && n.output_index == 1 && via_only("data")) {
    return "lengths depend on the batch sizes only";
  }
  // a scatter whose index writes every element of `self` (an inverse
  // permutation scattered into empty_like: pack_padded_sequence's unsort), or a
  // scatter_reduce leaving `self` out (include_self=False: a top-k router's amax)
  // that reaches every element; a scatter with reduce="add"/"multiply" reads self
  const bool overwrites =
      (op == "aten::scatter" || op == "aten::scatter_") && !argument(rec, "reduce").isString();
  const auto include_self = argument(rec, "include_self");
  const bool reduces_without_self =
      (op == "aten::scatter_reduce" || op == "aten::scatter_reduce_") && include_self.isBool() &&
      !include_self.toBool();
  if ((overwrites || reduces_without_self) && via_only("self")) {
    const at::Tensor self = tensor("self");
    const at::Tensor index = tensor("index");
    const auto dim = argument(rec, "dim");
    if (self.defined() && index.defined() && dim.isInt() && self.dim() == index.dim() &&
        self.numel() > 0) {
      const at::Tensor written = at::zeros(self.sizes(), index.options().dtype(at::kInt))
                                     .scatter_(dim.toInt(), index.to(at::kLong), 1);
      if (written.all().item<bool>()) return "every element overwritten";
    }
  }
  // an index_copy whose index lists every position along `dim` (rows routed
  // back in a permuted order): every element of `self` is overwritten
  if ((op == "aten::index_copy" || op == "aten::index_copy_") && via_only("self")) {
    const at::Tensor self = tensor("self");
    const at::Tensor index = tensor("index");
    const auto dim = argument(rec, "dim");
    if (self.defined() && index.defined() && dim.isInt() && self.numel() > 0) {
      const std::int64_t d =
          c10::maybe_wrap_dim(dim.toInt(), std::max<std::int64_t>(self.dim(), 1));
      const std::int64_t size = self.dim() == 0 ? 1 : self.size(d);
      const at::Tensor written = at::zeros({size}, index.options().dtype(at::kInt))
                                     .index_fill_(0, index.to(at::kLong).reshape({-1}), 1);
      if (written.all().item<bool>()) return "every element overwritten";
    }
  }
  // an index_put whose indices reach every element of `self` (a box
  // decoder filling a zeros tensor through index lists)
  if ((op == "aten::index_put" || op == "aten::index_put_" || op == "aten::_index_put_impl_") &&
      via_only("self")) {
    const auto accumulate = argument(rec, "accumulate");
    const at::Tensor self = tensor("self");
    const auto pos = rec.op->schema().argumentIndexWithName("indices");
    if (!(accumulate.isBool() && accumulate.toBool()) && self.defined() && self.numel() > 0 &&
        pos && static_cast<std::size_t>(*pos) < rec.args.size()) {
      c10::IValue arg = rec.args[static_cast<std::size_t>(*pos)];
      for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
        if (g[e].arg_name == "indices" && g[e].list_index >= 0) {
          detail::set_argument_tensor(arg, g[e].list_index, log.activation(boost::source(e, g)));
        }
      }
      if (arg.isList()) {
        c10::List<c10::optional<at::Tensor>> indices;
        for (const c10::IValue& i : arg.toListRef()) {
          indices.push_back(i.isTensor() ? c10::optional<at::Tensor>(i.toTensor()) : c10::nullopt);
        }
        const auto flags = self.options().dtype(at::kBool); // on self's device
        const at::Tensor written =
            at::zeros(self.sizes(), flags).index_put_(indices, at::ones({}, flags));
        if (written.all().item<bool>()) return "every element overwritten";
      }
    }
  }
  // unique's inverse indices and counts (outputs 1, 2) depend only on which
  // elements are equal and their order, which shifted or random values of a
  // few elements often keep; the values themselves are output 0's, checked there
  if ((op == "aten::_unique2" || op == "aten::_unique" || op == "aten::unique_dim" ||
       op == "aten::unique_consecutive" || op == "aten::unique_dim_consecutive") &&
      n.output_index >= 1) {
    return "inverse indices and counts depend only on which elements are equal";
  }
  // non-maximum suppression orders by score; the boxes decide only which
  // overlaps pass the threshold (random boxes seldom overlap either)
  if (op == "torchvision::nms" && via_only("dets")) {
    return "the boxes decide only which overlaps pass the threshold";
  }
  // output k of meshgrid or broadcast_tensors holds tensors[k]'s values:
  // the other tensors give it only their sizes
  if (op == "aten::meshgrid" || op == "aten::broadcast_tensors") {
    bool sizes_only = true;
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      if (boost::source(e, g) == p) {
        sizes_only = sizes_only && g[e].arg_name == "tensors" && g[e].list_index >= 0 &&
                     g[e].list_index != n.output_index;
      }
    }
    if (sizes_only) return "only its size is read (output " + std::to_string(n.output_index) + ")";
  }
  // normalised over one element: a softmax over a dimension of size 1 is 1
  // everywhere, a log_softmax 0 (attention over a single key: the first step
  // of a generation loop with a KV cache)
  if ((op == "aten::softmax" || op == "aten::_softmax" || op == "aten::log_softmax" ||
       op == "aten::_log_softmax") &&
      via_only("self")) {
    const at::Tensor x = tensor("self");
    const auto dim = argument(rec, "dim");
    if (x.defined() && dim.isInt() &&
        (x.dim() == 0 || x.size(c10::maybe_wrap_dim(dim.toInt(), x.dim())) == 1)) {
      return "normalised over a dimension of size 1";
    }
  }
  if (op == "aten::bernoulli" && via_only("self") && argument(rec, "p").isDouble()) {
    return "only its shape is read (probability given as p)";
  }
  return "";
}

/// Random values for perturbations, from private seeded generators. Normal
/// samples come from one pool, read at random offsets (drawing `randn` per
/// perturbation cost 3× the re-execution itself). The pool is made of fixed
/// blocks, block k always drawn from the same seed, and kept per thread: its
/// contents never depend on what ran before, so a validation perturbs with the
/// same values whenever it runs, and only the first one in a thread draws them.
class Noise {
 public:
  Noise() : gen_(at::make_generator<at::CPUGeneratorImpl>(0x7e57)), offsets_(0x7e57) {}
  at::Generator& gen() { return gen_; }

  /// Standard normal samples of the given shape, as float.
  at::Tensor normal(at::IntArrayRef sizes, std::int64_t numel) {
    if (numel <= kMaxPool / 2) return slice(numel).view(sizes);
    // larger than the pool: pieces from random offsets (no period to line up
    // with the tensor's structure)
    at::Tensor out = at::empty({numel}, at::kFloat);
    for (std::int64_t at = 0; at < numel; at += kMaxPool / 2) {
      const std::int64_t n = std::min(kMaxPool / 2, numel - at);
      out.narrow(0, at, n).copy_(slice(n));
    }
    return out.view(sizes);
  }

  /// The mean absolute value of a floating tensor (its scale), one pass.
  static double mean_abs(const at::Tensor& t) {
    if (t.numel() == 0) return 0.0;
    if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) {
      return t.detach().abs().to(at::kDouble).mean().item<double>(); // half, bfloat16
    }
    return at::norm(t.detach(), 1).item<double>() / static_cast<double>(t.numel());
  }

 private:
  static constexpr std::int64_t kBlock = std::int64_t{1} << 16;
  static constexpr std::int64_t kMaxPool = std::int64_t{1} << 21; // 8 MB of floats

  /// `numel` consecutive samples from a random offset of a pool of at least 2 × numel.
  at::Tensor slice(std::int64_t numel) {
    const at::Tensor& p = pool(std::max<std::int64_t>(2 * numel, kBlock));
    std::uniform_int_distribution<std::int64_t> start(0, p.numel() - numel);
    return p.narrow(0, start(offsets_), numel);
  }

  static const at::Tensor& pool(std::int64_t min_size) {
    thread_local at::Tensor blocks;
    if (!blocks.defined() || blocks.numel() < min_size) {
      const std::int64_t have = blocks.defined() ? blocks.numel() / kBlock : 0;
      const std::int64_t want = (min_size + kBlock - 1) / kBlock;
      std::vector<at::Tensor> parts;
      if (have > 0) parts.push_back(blocks);
      for (std::int64_t k = have; k < want; ++k) {
        auto g = at::make_generator<at::CPUGeneratorImpl>(0x7e57 + static_cast<std::uint64_t>(k));
        parts.push_back(at::randn({kBlock}, g, at::kFloat));
      }
      blocks = at::cat(parts);
    }
    return blocks;
  }

  at::Generator gen_;
  std::mt19937_64 offsets_;
};

/// A value of `t`'s shape and dtype that differs from it (with high
/// probability): attempt 0 draws new values; 1 and 2 shift the values up and
/// down (so ops flat on one side, a relu of negatives, see a change); 3 mirrors
/// them (every order reversed: sort's and argmax's indices, which keep their
/// order under every shift, and under half of all redraws of two values, see
/// it). Bools: new bits, the negation, new bits, new bits.
at::Tensor perturbed(const at::Tensor& t, Noise& noise, int attempt) {
  if (attempt == 3 && t.scalar_type() != at::kBool) {
    if (t.is_floating_point() || t.is_complex()) return -t;
    const auto d = t.to(at::kLong);
    const std::int64_t lo = t.numel() ? d.min().item<std::int64_t>() : 0;
    const std::int64_t hi = t.numel() ? d.max().item<std::int64_t>() : 0;
    const auto r = (lo + hi) - d; // within [lo, hi]; where it is a fixed point, the next value
    return at::where(r.eq(d), r + 1, r).to(t.scalar_type());
  }
  if (attempt > 0 && !t.is_complex() && t.scalar_type() != at::kBool) {
    if (!t.is_floating_point()) {
      const double scale =
          t.numel() ? t.detach().abs().to(at::kDouble).mean().item<double>() + 1.0 : 1.0;
      const auto step = static_cast<std::int64_t>(scale) + 1;
      return (attempt == 1 ? t + step : t - step).to(t.scalar_type());
    }
    const double scale = Noise::mean_abs(t) + 1.0;
    const auto shift = noise.normal(t.sizes(), t.numel()).abs().to(t.options()) * scale + scale;
    return attempt == 1 ? t + shift : t - shift;
  }
  at::Generator& gen = noise.gen();
  // integers: random values in the observed range, and wherever one equals the
  // original (certain for a one-element tensor half the time) the next value, so
  // the perturbation always changes the tensor. Bools: random bits, one flipped
  // if they all came out as the original. Not the negation alone: negating a mask
  // with one true per row of two keeps the rows that nonzero reports (a top-2
  // router's). Each is drawn on the CPU (the generator is a CPU one), then moved
  // to t's device.
  const auto on_cpu = at::TensorOptions().device(at::kCPU);
  if (t.scalar_type() == at::kBool) {
    if (attempt == 1) return t.logical_not();
    at::Tensor r = at::randint(0, 2, t.sizes(), gen, on_cpu.dtype(at::kLong)).to(at::kBool);
    if (t.numel() > 0 && r.equal(t.to(at::kCPU))) {
      const auto k =
          at::randint(0, t.numel(), {1}, gen, on_cpu.dtype(at::kLong)).item<std::int64_t>();
      r.data_ptr<bool>()[k] = !r.data_ptr<bool>()[k];
    }
    return r.to(t.device());
  }
  if (!t.is_floating_point() && !t.is_complex()) {
    const auto d = t.to(at::kLong);
    const std::int64_t lo = t.numel() ? d.min().item<std::int64_t>() : 0;
    const std::int64_t hi = t.numel() ? d.max().item<std::int64_t>() + 1 : 1;
    const auto r = at::randint(lo, std::max(hi, lo + 2), t.sizes(), gen, on_cpu.dtype(at::kLong))
                       .to(t.device());
    return at::where(r.eq(d), r + 1, r).to(t.scalar_type());
  }
  if (t.is_complex()) {
    const double scale = t.numel() ? t.detach().abs().mean().item<double>() + 1.0 : 1.0;
    return (at::randn(t.sizes(), gen, on_cpu.dtype(t.scalar_type())) * scale).to(t.device());
  }
  const double scale = Noise::mean_abs(t) + 1.0;
  const at::Tensor n = noise.normal(t.sizes(), t.numel());
  return t.scalar_type() == at::kFloat && t.device().is_cpu() ? n * scale
                                                              : (n * scale).to(t.options());
}

const char* kind_name(FailureKind k) {
  switch (k) {
    case FailureKind::output_mismatch:
      return "output differs from the plain forward pass";
    case FailureKind::mismatch:
      return "re-execution differs from the saved activation";
    case FailureKind::no_effect:
      return "perturbing a parent had no effect";
    case FailureKind::cannot_replay:
      return "could not re-execute";
    case FailureKind::unreached:
      return "not checked";
    case FailureKind::invariant:
      return "inconsistent structure";
  }
  return "?";
}

} // namespace

std::ostream& operator<<(std::ostream& os, const ValidationReport& r) {
  os << (r.valid ? "VALID" : "INVALID") << ": " << r.layers_checked << " ops re-executed, "
     << r.perturbations << " perturbations (" << r.exempted << " exempted), " << r.failures.size()
     << " failing layers";
  if (r.time_ms > 0) os << ", " << r.time_ms << " ms";
  os << "\n";
  for (const auto& f : r.failures) {
    os << "  " << f.label << ": " << kind_name(f.kind);
    if (f.kind == FailureKind::mismatch || f.kind == FailureKind::output_mismatch) {
      os << " (max error " << f.max_error << ")";
    }
    if (!f.detail.empty()) os << " — " << f.detail;
    os << "\n";
  }
  // exemptions by reason: how many, and the first few layers
  std::map<std::string, std::vector<const Exemption*>> by_reason;
  for (const auto& e : r.exemptions) by_reason[e.reason].push_back(&e);
  if (!by_reason.empty()) os << "  exemptions:\n";
  for (const auto& [reason, list] : by_reason) {
    os << "    " << list.size() << " × " << reason << ": ";
    for (std::size_t i = 0; i < list.size() && i < 4; ++i) {
      os << (i ? ", " : "") << list[i]->label << " ← " << list[i]->parent;
    }
    if (list.size() > 4) os << ", ...";
    os << "\n";
  }
  return os;
}

namespace {

/// TorchLens's metadata invariants on a captured log: the graph's own
/// (passes/validate_graph_invariants.hpp), and that every argument an op read
/// from a tensor is an in-edge from its logged parent and back.
void check_structure(const ModelGraph& g, const std::vector<detail::OpRecord>& records,
                     ValidationReport& report) {
  for (auto& problem : passes::check_graph_invariants(g)) {
    report.failures.push_back({"(graph)", FailureKind::invariant, std::move(problem), 0});
  }
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    if (n.kind != NodeKind::op || n.id >= records.size() || !records[n.id].op) continue;
    const auto& rec = records[n.id];
    std::vector<int> fed(rec.args.size(), 0);
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      const auto pos = static_cast<std::size_t>(g[e].arg_pos);
      bool slot = pos < rec.args.size() && rec.from_edges[pos];
      if (slot && g[e].list_index >= 0) {
        const auto& a = rec.args[pos];
        const auto i = static_cast<std::size_t>(g[e].list_index);
        slot = (a.isTensorList() && i < a.toTensorList().size() &&
                !a.toTensorList().get(i).defined()) ||
               (a.isList() && i < a.toListRef().size() && a.toListRef()[i].isNone());
      }
      if (!slot) {
        report.failures.push_back({n.label(), FailureKind::invariant,
                                   "an edge from " + g[boost::source(e, g)].label() +
                                       " feeds no tensor argument of the recorded call",
                                   0});
      } else {
        ++fed[pos];
      }
    }
    for (std::size_t i = 0; i < rec.args.size(); ++i) {
      if (rec.from_edges[i] && fed[i] == 0) {
        report.failures.push_back({n.label(), FailureKind::invariant,
                                   "argument " + rec.op->schema().arguments()[i].name() +
                                       " came from a logged tensor but has no parent",
                                   0});
      }
    }
  }
}

} // namespace

ValidationReport validate_log(const ModelLog& log, const std::vector<at::Tensor>& ground_truth,
                              const ValidateOptions& options) {
  TORCHLENS_CHECK(log.replay() != nullptr,
                  "validation needs a log captured with LogOptions().keep_replay(true)");
  return validate_graph(log.graph(), log.activations_by_id(), *log.replay(), ground_truth, options);
}

ValidationReport validate_graph(const ModelGraph& g, const std::vector<at::Tensor>& activations,
                                const detail::ReplayRecords& replay_records,
                                const std::vector<at::Tensor>& ground_truth,
                                const ValidateOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& records = replay_records.by_id;
  const Saved log{g, activations};
  ValidationReport report;
  check_structure(g, records, report);
  at::NoGradGuard no_grad;
  const detail::GeneratorStateGuard generator; // replays restore recorded states
  Noise noise;

  // 1. outputs equal the plain forward pass exactly
  std::size_t out_index = 0;
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind != NodeKind::output) continue;
    if (out_index < ground_truth.size()) {
      double err = 0;
      if (!values_equal(log.activation(v), ground_truth[out_index], 0, 0, err)) {
        report.failures.push_back({g[v].label(), FailureKind::output_mismatch, "", err});
      }
    }
    ++out_index;
  }
  TORCHLENS_CHECK(out_index == ground_truth.size(), "the log has ", out_index,
                  " outputs but the plain forward pass returned ", ground_truth.size());

  // 2. every op re-executed from its parents' saved values
  std::vector<char> ok(boost::num_vertices(g), 1);
  std::vector<LayerFailure> mismatches(boost::num_vertices(g));
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    if (n.kind != NodeKind::op) continue;
    const at::Tensor& saved = log.activation(v);
    // a source (a constant, a tensor literal): its saved value is the ground truth
    if ((n.id >= records.size() || !records[n.id].op) && boost::in_degree(v, g) == 0) continue;
    if (n.id >= records.size() || !records[n.id].op || !saved.defined()) {
      report.failures.push_back({n.label(), FailureKind::unreached,
                                 saved.defined() ? "no replay record" : "activation not saved", 0});
      ok[v] = 0;
      continue;
    }
    std::map<std::pair<int, int>, at::Tensor> inputs;
    bool parents_saved = true;
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      const at::Tensor& p = log.activation(boost::source(e, g));
      parents_saved = parents_saved && p.defined();
      inputs[{g[e].arg_pos, g[e].list_index}] = p;
    }
    if (!parents_saved) {
      report.failures.push_back({n.label(), FailureKind::unreached, "a parent was not saved", 0});
      ok[v] = 0;
      continue;
    }
    ++report.layers_checked;
    std::vector<at::Tensor> out;
    try {
      out = detail::reexecute(records[n.id], inputs);
    } catch (const c10::Error& e) {
      std::string msg = e.what_without_backtrace();
      msg = msg.substr(0, msg.find('\n'));
      report.failures.push_back({n.label(), FailureKind::cannot_replay, msg, 0});
      ok[v] = 0;
      continue;
    }
    const auto idx = static_cast<std::size_t>(n.output_index);
    double err = 0;
    // `empty` and friends return whatever memory held: only shape and dtype are defined
    const bool undefined_values = kUninitialized.count(n.op_name) != 0;
    const bool same =
        idx < out.size() &&
        (undefined_values
             ? out[idx].sizes() == saved.sizes() && out[idx].scalar_type() == saved.scalar_type()
             : values_equal(out[idx], saved, options.atol(), options.rtol(), err));
    if (!same) {
      ok[v] = 0;
      mismatches[v] = {n.label(), FailureKind::mismatch,
                       idx >= out.size() ? "the op returned fewer outputs" : "", err};
      continue;
    }

    // 3. perturbation: each distinct parent, replaced by other values, must
    // change the output, unless the op provably cannot see them
    if (!options.perturb() || n.dtype == "bool" || kValueBlind.count(n.op_name) != 0) continue;
    std::set<Vertex> parents;
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g)))
      parents.insert(boost::source(e, g));
    std::optional<bool> saved_has_nan;
    for (Vertex p : parents) {
      ++report.perturbations;
      const at::Tensor& pv = log.activation(p);
      std::string reason = unperturbable(g, v, p, records[n.id], saved);
      if (reason.empty() && pv.numel() == 0) reason = "empty parent";
      if (reason.empty() && !checks_its_inputs(n.op_name)) {
        // a crash in another library's kernel is worse than an unchecked edge
        reason = "not perturbed: an op outside ATen may not check its inputs";
      }
      if (!reason.empty()) {
        report.exempted_perturbation(n.label(), g[p].label(), std::move(reason));
        continue;
      }
      // up to four perturbations: random values, then the values shifted up
      // and down (a relu of negatives, a clamp, a threshold see the shifts),
      // then mirrored (an order: sort's indices)
      bool changed = false, replayed = false;
      std::string error;
      for (int attempt = 0; attempt < 4 && !changed; ++attempt) {
        auto changed_inputs = inputs;
        const at::Tensor value = perturbed(pv, noise, attempt);
        for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
          if (boost::source(e, g) == p) {
            changed_inputs[{g[e].arg_pos, g[e].list_index}] =
                perturbation_for(n.op_name, g[e].arg_name, pv, value);
          }
        }
        try {
          const auto pout = detail::reexecute(records[n.id], changed_inputs);
          replayed = true;
          changed = idx >= pout.size() || !exactly_equal(pout[idx], saved, saved_has_nan);
        } catch (const c10::Error& e) {
          error = e.what_without_backtrace();
          error = error.substr(0, error.find('\n'));
        }
      }
      if (changed) continue;
      if (!replayed) {
        report.exempted_perturbation(n.label(), g[p].label(),
                                     "no perturbed value is in the op's domain: " + error);
        continue;
      }
      const std::string blind = value_blind(g, v, p, records[n.id], log, saved);
      if (!blind.empty()) {
        report.exempted_perturbation(n.label(), g[p].label(), blind);
      } else {
        report.failures.push_back({n.label(), FailureKind::no_effect,
                                   "perturbing parent " + g[p].label() + " left it unchanged", 0});
      }
    }
  }
  // a mismatch is reported where it starts: at a layer whose parents all passed
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) {
    if (mismatches[v].label.empty()) continue;
    bool parents_ok = true;
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      parents_ok = parents_ok && ok[boost::source(e, g)];
    }
    if (parents_ok) report.failures.push_back(mismatches[v]);
  }
  report.valid = report.failures.empty();
  report.time_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

namespace detail {

ValidationReport validate_run(const ModelDescription& model,
                              const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                              const ForwardFn& forward, LogOptions log_options,
                              const ValidateOptions& options,
                              const std::function<void()>& restore) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t seed = session_seed(log_options);
  // everything the forward pass may change in place: parameters, buffers,
  // inputs, and what `restore` puts back
  StateSnapshot state(model, inputs, restore);
  const std::vector<at::Tensor> truth =
      CaptureSession(model, inputs, forward, log_options, seed).run_plain();
  state.restore();
  log_options.seed(seed)
      .save(SaveSpec::all())
      .keep_replay(true)
      .postfunc(nullptr)
      .detach(false)
      .output_device(OutputDevice::same)
      .postprocess(true);
  ModelLog log = run_logged(model, inputs, forward, log_options);
  state.restore();
  ValidationReport report = validate_log(log, truth, options);
  report.time_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

} // namespace detail

ValidationReport validate_saved_activations(torch::jit::Module& model,
                                            const std::vector<c10::IValue>& inputs,
                                            const LogOptions& log_options,
                                            const ValidateOptions& options) {
  detail::ScriptLease lease(model); // the capture copy, cached per model
  torch::jit::Module& run = lease.module();
  detail::ForwardFn forward = [&](detail::Recorder*) { return lease.forward(inputs); };
  // forward may reassign tensor attributes (`self.buf = self.buf + x`): put the
  // original tensors back (their values are restored with the buffers)
  std::vector<std::tuple<torch::jit::Module, std::string, c10::IValue>> attributes;
  for (const auto& sub : run.modules()) {
    for (const auto& attr : sub.named_attributes(/*recurse=*/false)) {
      if (attr.value.isTensor()) attributes.emplace_back(sub, attr.name, attr.value);
    }
  }
  const auto restore = [&attributes] {
    for (auto& [sub, name, value] : attributes) sub.setattr(name, value);
  };
  return detail::validate_run(lease.description(), detail::jit_input_tensors(inputs), forward,
                              log_options, options, restore);
}

} // namespace torchlens
