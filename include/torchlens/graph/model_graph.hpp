#pragma once
/// \file
/// The graph that capture produces and every pass transforms: one vertex per
/// tensor produced during the forward pass (an "op pass"), one edge per
/// parent→child tensor use. Torch-free on purpose: passes, their tests and
/// their benchmarks never include LibTorch. Activations live beside the graph
/// in the model log, keyed by OpNode::id.

#include <torchlens/graph/interned.hpp>
#include <torchlens/graph/name.hpp>

#include <torchlens/graph/digraph.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace torchlens {

/// What produced a vertex.
enum class NodeKind : std::uint8_t {
  op,     ///< an ATen op the model called
  input,  ///< a tensor handed to forward()
  buffer, ///< a module buffer read by an op (bn.running_mean)
  output, ///< a tensor returned by forward() (added by the add-output-nodes pass)
};

/// How the model used a value it read into a host scalar (`.item()`, `bool(t)`).
enum class ScalarUse : std::uint8_t {
  none,      ///< never read
  value,     ///< read as a number (arithmetic, sizes, printing)
  condition, ///< a bool deciding an `if` (or any bool read where the use is unknown)
  loop,      ///< a bool deciding whether a `while` loop goes on (`if c: break` is an `if`)
  assertion, ///< a bool checked by `assert`
};

/// The enumerator's name (`condition`), as JSON writes it.
constexpr const char* to_string(ScalarUse u) noexcept {
  switch (u) {
    case ScalarUse::none:
      return "none";
    case ScalarUse::value:
      return "value";
    case ScalarUse::condition:
      return "condition";
    case ScalarUse::loop:
      return "loop";
    case ScalarUse::assertion:
      return "assertion";
  }
  return "none";
}

/// One module call enclosing an op: `layer1.0.conv1`, `Conv2d`, pass 2.
struct ModuleFrame {
  Name address; ///< dotted address from the root module ("" is the root)
  Name type;    ///< class name (`Conv2d`, `BasicBlock`)
  int pass = 1; ///< 1-based: which call of this module this is

  friend bool operator==(const ModuleFrame&, const ModuleFrame&) = default;
};

inline std::size_t intern_hash(const ModuleFrame& f) noexcept {
  std::size_t h = f.address.hash();
  detail::hash_combine(h, f.type.hash());
  detail::hash_combine(h, static_cast<std::size_t>(f.pass));
  return h;
}

/// A parameter an op read (TorchLens stores these on the op, not as nodes).
struct ParamRef {
  Name address;                    ///< `features.0.weight` (stored once: many ops read it)
  std::vector<std::int64_t> shape; ///< `{64, 3, 11, 11}`
  std::int64_t numel = 0;
  std::int64_t bytes = 0;
  bool requires_grad = false;

  friend bool operator==(const ParamRef&, const ParamRef&) = default;
};

inline std::size_t intern_hash(const ParamRef& p) noexcept {
  std::size_t h = p.address.hash();
  for (std::int64_t d : p.shape) detail::hash_combine(h, intern_hash(d));
  detail::hash_combine(h, static_cast<std::size_t>(p.numel));
  detail::hash_combine(h, static_cast<std::size_t>(p.bytes));
  detail::hash_combine(h, static_cast<std::size_t>(p.requires_grad));
  return h;
}

/// A non-tensor argument of an op, printed: name from the schema, value as text.
struct ScalarArg {
  Name name;         ///< schema name (`stride`, `alpha`)
  std::string value; ///< printable value (`[2, 2]`, `1`, `None`)

  friend bool operator==(const ScalarArg&, const ScalarArg&) = default;
};

inline std::size_t intern_hash(const ScalarArg& a) noexcept {
  std::size_t h = a.name.hash();
  detail::hash_combine(h, intern_hash(a.value));
  return h;
}

/// Bundled vertex property: everything known about one op pass, in 192 bytes
/// (with its adjacency record and its in-edge, ~250 bytes per op of a chain).
/// What repeats across ops is shared: text as Names, sequences as Interned
/// handles; the labels are written from their parts. Fields are grouped by
/// width, so the struct has no padding. Aligned to a cache line: each vertex
/// is three lines (names and shape; parameters, modules and the layer; the
/// numbers and flags the passes sweep), where a vector's 16-byte-aligned
/// buffer let every vertex straddle four.
struct alignas(64) OpNode {
  // ---- identity (set by capture, never changed) ----
  std::size_t id = 0; ///< creation order; key into the activation store
  Name op_name;       ///< `aten::conv2d`; `input`, `buffer`, `output` for sources
  Name overload;      ///< schema overload (`Tensor`, `Scalar`, "")
  Name layer_type;    ///< TorchLens type: `conv2d`, `maxpool2d`, `relu`, `input`

  // ---- the tensor ----
  Interned<std::int64_t> shape;
  Name dtype;             ///< `float32`, `int64`, `bool`
  Name device;            ///< `cpu`, `cuda:0`
  Name grad_fn;           ///< autograd node name (`AddmmBackward0`) or ""
  std::int64_t bytes = 0; ///< nbytes of the output (no copy)

  // ---- the call, its roles, its modules ----
  Interned<ScalarArg> scalar_args;
  Interned<ParamRef> params;           ///< parameters read by the op
  Name io_address;                     ///< `input.0`, `output.1`, or the buffer address
  Interned<std::string> interventions; ///< actions an intervention applied to this
                                       ///< value, in order (its saved value is the result)
  Interned<ModuleFrame> modules;       ///< module containment, outer → inner
  Name equivalence_type;               ///< structural fingerprint (recurrence grouping)

  float time_us = 0;       ///< wall time of the op itself
  std::uint32_t layer = 0; ///< index of the layer (group of passes) it belongs to (a pass)
  int output_index = 0;    ///< which return of a multi-output op (0-based)
  int num_outputs = 1;     ///< how many tensors the op returned
  int buffer_pass = 0;     ///< for buffers: which version of the buffer (1-based)

  // ---- filled in by passes ----
  int min_distance_from_input = -1, max_distance_from_input = -1;
  int min_distance_from_output = -1, max_distance_from_output = -1;
  int pass_num = 1;   ///< 1-based pass of its layer
  int num_passes = 1; ///< passes of its layer
  int type_num = 0;   ///< ordinal among layers of the same type
  int total_num = 0;  ///< ordinal among all layers

  // ---- narrow fields and flags ----
  NodeKind kind = NodeKind::op;
  ScalarUse scalar_use = ScalarUse::none; ///< its value was read into a host scalar (`item`,
                                          ///< `is_nonzero`, `equal`), and how it was used
  std::optional<bool> scalar_bool_value;  ///< value of a 0-dim bool tensor
  std::int16_t modules_exited = 0;        ///< its value is returned from the innermost this
                                          ///< many module passes of `modules`
                                          ///< (see modules_exited())
  bool requires_grad = false;
  bool is_inplace = false;              ///< the op wrote into one of its arguments
  bool is_view = false;                 ///< output aliases an argument without writing
  bool is_internally_generated = false; ///< no tensor parents and not an input/buffer
  bool feeds_output = false;            ///< returned from forward (parent of an output)
  bool has_saved_activation = false;
  bool module_observed = false; ///< capture saw the containment (TorchScript, parameter
                                ///< ownership, driven Sequential); else a pass infers it
  bool module_inferred = false; ///< containment was filled in by a pass
  bool exits_observed = false;  ///< capture saw the returns (TorchScript); else a pass
                                ///< infers them from where the value is used
  // (filled in by passes)
  bool is_output_ancestor = false;
  bool has_input_ancestor = false;
  bool is_internally_terminated = false; ///< childless, not returned, descends from an input
  bool is_terminal_bool = false;         ///< childless, non-output 0-dim bool (TorchLens)
  bool in_cond_branch = false;           ///< part of the computation of an `if` condition

  /// Every field equal (Interned and Name fields by their entries, else their
  /// items): a new field takes part without being listed.
  friend bool operator==(const OpNode&, const OpNode&) = default;

  // ---- labels: written from the fields above, not stored ----
  // TorchLens's four labels are `{type}_{type_num}_{total_num}` (inputs,
  // buffers and outputs: `input_{type_num}`) with `:{pass_num}` when the layer
  // has several passes, and the short forms without `_{total_num}`. Storing the
  // label cost 32 bytes per op (and a string write per vertex in
  // label-layers); each is "" until label-layers has numbered the layers.

  /// `conv2d_3_7` or `conv2d_3_7:2` (TorchLens's `layer_label`).
  [[nodiscard]] std::string label() const { return make_label(false, true); }
  /// `conv2d_3_7`: the label without its pass.
  [[nodiscard]] std::string label_no_pass() const { return make_label(false, false); }
  /// `conv2d_3` or `conv2d_3:2`: the short label (an op's drops `_{total_num}`).
  [[nodiscard]] std::string label_short() const { return make_label(true, true); }
  /// `conv2d_3`: the short label without its pass.
  [[nodiscard]] std::string label_short_no_pass() const { return make_label(true, false); }
  /// Appends a label to `out` (no allocation when `out` has room).
  void append_label(std::string& out, bool short_form = false, bool with_pass = true) const {
    if (type_num <= 0) return;
    switch (kind) {
      case NodeKind::input:
        out += "input_";
        break;
      case NodeKind::buffer:
        out += "buffer_";
        break;
      case NodeKind::output:
        out += "output_";
        break;
      case NodeKind::op:
        out += layer_type.str();
        out += '_';
        break;
    }
    append_number(out, type_num);
    if (kind == NodeKind::op && !short_form) {
      out += '_';
      append_number(out, total_num);
    }
    if (with_pass && num_passes > 1) {
      out += ':';
      append_number(out, pass_num);
    }
  }

 private:
  [[nodiscard]] std::string make_label(bool short_form, bool with_pass) const {
    std::string out;
    append_label(out, short_form, with_pass);
    return out;
  }
  static void append_number(std::string& out, int x) {
    char digits[16];
    out.append(digits, std::to_chars(digits, digits + sizeof digits, x).ptr);
  }
};

/// The module passes an op's value is returned from (TorchLens's
/// `module_passes_exited`), outer → inner: the innermost frames of its
/// containment, since a value leaves nested calls innermost first.
inline std::span<const ModuleFrame> modules_exited(const OpNode& n) {
  const std::size_t k = std::min(n.modules.size(), static_cast<std::size_t>(n.modules_exited));
  return std::span<const ModuleFrame>(n.modules.get()).subspan(n.modules.size() - k);
}

/// Bundled edge property: which argument of the child the parent fed.
/// (16 bytes: the members are ordered by width; construct it positionally as
/// `TensorEdge{arg_pos, list_index, arg_name, is_cond_branch_start}`.)
struct TensorEdge {
  Name arg_name;                     ///< schema name (`input`, `other`, `tensors`)
  int list_index = -1;               ///< index inside a Tensor[] argument, -1 if none
  std::int16_t arg_pos = 0;          ///< position in the op schema
  bool is_cond_branch_start = false; ///< the `IF` edge into a condition branch

  TensorEdge() = default;
  TensorEdge(int arg_pos, int list_index = -1, Name arg_name = {},
             bool is_cond_branch_start = false)
      : arg_name(arg_name),
        list_index(list_index),
        arg_pos(static_cast<std::int16_t>(arg_pos)),
        is_cond_branch_start(is_cond_branch_start) {}
  friend bool operator==(const TensorEdge&, const TensorEdge&) = default;
};

/// Module-level facts, one per module address.
struct ModuleInfo {
  std::string address;
  std::string type;
  int num_passes = 0;
  std::int64_t num_params = 0;
  /// Calls observed (TorchScript, ModuleScope, driven Sequential) rather than
  /// inferred from parameter ownership.
  bool exact = true;

  friend bool operator==(const ModuleInfo&, const ModuleInfo&) = default;
};

/// A tensor returned by forward(): which vertex produced it, and its address.
struct ReturnedTensor {
  std::size_t node_id = 0; ///< OpNode::id of the producer
  std::string address;     ///< `output.0`, `output.1.2` (nested containers)

  friend bool operator==(const ReturnedTensor&, const ReturnedTensor&) = default;
};

/// Bundled graph property: model-level facts.
struct GraphInfo {
  std::string model_name;
  std::vector<ReturnedTensor> returned; ///< what forward() returned, in order
  std::size_t next_id = 0;              ///< first unused OpNode::id
  std::vector<ModuleInfo> modules;      ///< every module seen, in first-call order
  double forward_time_ms = 0;           ///< plain cost of the ops (sum of op times)
  double logging_time_ms = 0;           ///< total capture time minus op time
  std::uint64_t random_seed = 0;
  // ---- filled in by passes ----
  bool is_recurrent = false;
  int max_recurrent_loops = 1;
  bool is_branching = false;
  bool has_conditional = false;

  friend bool operator==(const GraphInfo&, const GraphInfo&) = default;
};

/// The graph itself: a Boost.Graph model (digraph.hpp) whose vertices are
/// dense (0..V-1, so external property maps are plain vectors) and whose
/// out- and in-edges list in insertion order; structural passes compact into
/// a new graph.
using ModelGraph = Digraph<OpNode, TensorEdge, GraphInfo>;
using Vertex = boost::graph_traits<ModelGraph>::vertex_descriptor;
using Edge = boost::graph_traits<ModelGraph>::edge_descriptor;

} // namespace torchlens
