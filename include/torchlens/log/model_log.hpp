#pragma once
/// \file
/// The model log: the captured graph (after the pass pipeline) plus the saved
/// activations, indexed like TorchLens's ModelHistory.

#include <torchlens/capture/options.hpp>
#include <torchlens/graph/model_graph.hpp>
#include <torchlens/log/gradients.hpp>
#include <torchlens/torch_error.hpp>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace torchlens {

class ModelLog;
namespace detail {
struct ReplayRecords; // operators and arguments for re-execution (src/capture)
class GradientStore;  // gradients recorded by autograd hooks (src/grad)
} // namespace detail

/// A view of one layer pass in a log: its metadata and, if saved, its activation.
class LayerView {
 public:
  LayerView(const ModelLog& log, Vertex v) : log_(&log), v_(v) {}

  const OpNode& node() const;
  const OpNode* operator->() const { return &node(); }
  Vertex vertex() const noexcept { return v_; }
  std::string label() const { return node().label(); }

  /// True when the activation was saved.
  bool has_activation() const;
  /// The saved activation; throws (c10::Error) when it was not saved.
  const at::Tensor& activation() const;

  /// True when a gradient was saved for this layer pass (LogOptions::save_gradients,
  /// after the caller ran backward).
  bool has_gradient() const;
  /// The saved gradient (of the latest backward that reached it); throws
  /// (c10::Error) when there is none, saying why.
  at::Tensor gradient() const;

  /// Labels of the parents, in argument order (one entry per edge).
  std::vector<std::string> parents() const;
  /// Labels of the children, in creation order (one entry per edge).
  std::vector<std::string> children() const;
  /// The innermost module address (`layer1.0.conv1`), or "" for none.
  std::string module() const;
  /// Module addresses this layer pass is an output of (`features.3:1`).
  std::vector<std::string> module_outputs() const;

 private:
  const ModelLog* log_;
  Vertex v_;
};

/// Model-level totals (TorchLens §2.1).
struct ModelTotals {
  std::int64_t num_tensors = 0;       ///< layer passes in the log
  std::int64_t tensor_bytes = 0;      ///< their output sizes, summed
  std::int64_t num_saved = 0;         ///< passes with a saved activation
  std::int64_t saved_bytes = 0;       ///< bytes of the saved activations
  std::int64_t num_param_tensors = 0; ///< distinct parameter tensors used
  std::int64_t num_params = 0;        ///< their elements (shared ones counted once)
  std::int64_t param_bytes = 0;
};

/// Everything log_forward_pass returns.
class ModelLog {
 public:
  /// A log of `graph` (copied; the rvalue overload takes it over in O(1)).
  ModelLog(const ModelGraph& graph, std::vector<at::Tensor> activations, LogOptions options);
  ModelLog(ModelGraph&& graph, std::vector<at::Tensor> activations, LogOptions options);
  ModelLog(ModelLog&&) noexcept;
  ModelLog& operator=(ModelLog&&) noexcept;
  ~ModelLog();

  /// A copy that shares the captured values (no tensor is copied): engines,
  /// donors and patching work on forks, and nothing done to a fork through the
  /// library changes this log.
  ModelLog fork() const;

  /// The graph (vertices in creation order, final labels): run Boost.Graph
  /// algorithms on it directly.
  const ModelGraph& graph() const noexcept { return graph_; }
  /// Mutable graph, for tools that edit a log (planted-fault tests, passes run
  /// after the fact). The key index is built on the first lookup and not rebuilt
  /// after that.
  ModelGraph& mutable_graph() noexcept { return graph_; }
  const GraphInfo& info() const noexcept { return graph_[boost::graph_bundle]; }
  const std::string& model_name() const noexcept { return info().model_name; }
  const LogOptions& options() const noexcept { return options_; }

  /// Number of layer passes.
  std::size_t size() const noexcept { return boost::num_vertices(graph_); }
  /// Lookup by any key (label, short label, `label:pass`, module address,
  /// `addr:pass`, io address, ordinal as text). Unknown or ambiguous keys
  /// throw torchlens::KeyError (a c10::IndexError) naming the closest keys.
  LayerView operator[](std::string_view key) const { return at(key); }
  LayerView operator[](std::int64_t ordinal) const;
  LayerView at(std::string_view key) const;
  /// True when `key` resolves to exactly one layer pass.
  bool contains(std::string_view key) const;
  /// All passes matched by a save key (a label without pass gives every pass,
  /// a substring gives every match). Throws for keys matching nothing.
  std::vector<Vertex> select(std::string_view key) const;
  /// Every lookup key, mapped to its vertex.
  const std::unordered_map<std::string, Vertex>& lookup_keys() const { return lookup().keys; }
  /// Lookup keys of one vertex, in TorchLens's order.
  std::vector<std::string> keys_of(Vertex v) const;

  /// Saved activation of a vertex, or an undefined tensor when not saved. An
  /// output node shares its producer's tensor (no copy): saved with it when
  /// everything is saved, and with a key list only when the output was selected.
  const at::Tensor& activation(Vertex v) const;
  /// Replaces the saved activations (used by the two-pass save and by extract).
  void set_activations(std::vector<at::Tensor> by_id);
  /// The saved activations by OpNode::id (undefined where not saved; empty when
  /// nothing is, as in a metadata-only log).
  const std::vector<at::Tensor>& activations_by_id() const noexcept { return activations_; }

  /// Re-execution records (only with LogOptions::keep_replay), else null.
  const detail::ReplayRecords* replay() const noexcept { return replay_.get(); }
  const std::shared_ptr<const detail::ReplayRecords>& replay_shared() const noexcept {
    return replay_;
  }
  void set_replay(std::shared_ptr<const detail::ReplayRecords> r) { replay_ = std::move(r); }

  /// Gradients (LogOptions::save_gradients; docs/gradients.md). The saved
  /// gradient of a vertex, or an undefined tensor: an output node has its
  /// producer's. Filled by autograd hooks when the caller runs backward.
  at::Tensor gradient(Vertex v) const;
  /// Layers with a saved gradient, in order.
  std::vector<Vertex> gradient_layers() const;
  /// The gradient that reached a parameter (by address, `layer1.0.conv1.weight`)
  /// in the latest backward, or an undefined tensor.
  at::Tensor param_gradient(std::string_view address) const;
  /// Parameter addresses with a gradient, sorted.
  std::vector<std::string> params_with_gradient() const;
  /// The autograd nodes that delivered saved gradients, in the order the engine
  /// ran them, per backward run.
  std::vector<BackwardStep> backward_log() const;
  /// The tensors forward returned (in output order), kept when gradients are
  /// saved: compute the loss from them (or from the output's activation).
  std::vector<at::Tensor> returned() const;
  /// True when gradients were asked for (save_gradients other than none).
  bool tracks_gradients() const noexcept { return gradients_ != nullptr; }
  const std::shared_ptr<detail::GradientStore>& gradient_store() const noexcept {
    return gradients_;
  }
  void set_gradient_store(std::shared_ptr<detail::GradientStore> g) { gradients_ = std::move(g); }

  ModelTotals totals() const;
  /// Layers that have a saved activation, in order.
  std::vector<Vertex> saved_layers() const;
  /// Vertices with a module pass exit: address → output vertices.
  const std::unordered_map<std::string, std::vector<Vertex>>& module_outputs() const {
    return lookup().module_outputs;
  }

  class iterator;
  iterator begin() const;
  iterator end() const;

  /// Summary in TorchLens's style (model, totals, structure, one line per layer).
  friend std::ostream& operator<<(std::ostream& os, const ModelLog& log);

 private:
  /// The key index, built on first use (a log that is only iterated, or read
  /// by vertex, never pays for it); thread-safe like the rest of a const log.
  struct Lookup {
    std::once_flag built;
    std::unordered_map<std::string, Vertex> keys;
    std::unordered_map<std::string, std::vector<Vertex>> module_outputs;
    std::vector<std::string> ordered_keys; // for suggestions
  };
  const Lookup& lookup() const;
  void build_lookup(Lookup& index) const;
  Vertex resolve_or_throw(std::string_view key) const;
  /// The vertex an ordinal written as a key (`5`, `-3`) names, if it is one.
  std::optional<Vertex> ordinal_key(const std::string& key) const;

  ModelGraph graph_;
  std::vector<at::Tensor> activations_; // by OpNode::id
  LogOptions options_;
  std::unique_ptr<Lookup> lookup_ = std::make_unique<Lookup>(); // swapped by moves
  std::shared_ptr<const detail::ReplayRecords> replay_;
  std::shared_ptr<detail::GradientStore> gradients_;
};

class ModelLog::iterator {
 public:
  using value_type = LayerView;
  using difference_type = std::ptrdiff_t;
  iterator() = default;
  iterator(const ModelLog* log, Vertex v) : log_(log), v_(v) {}
  LayerView operator*() const { return LayerView(*log_, v_); }
  iterator& operator++() {
    ++v_;
    return *this;
  }
  iterator operator++(int) {
    auto t = *this;
    ++v_;
    return t;
  }
  friend bool operator==(const iterator& a, const iterator& b) { return a.v_ == b.v_; }

 private:
  const ModelLog* log_ = nullptr;
  Vertex v_ = 0;
};

inline ModelLog::iterator ModelLog::begin() const {
  return iterator(this, 0);
}
inline ModelLog::iterator ModelLog::end() const {
  return iterator(this, size());
}

/// `conv2d` from `aten::conv2d`, `maxpool2d` from `aten::max_pool2d`, `relu` from
/// `aten::relu_`: TorchLens's layer type (lower case, underscores removed). Ops
/// of the torch.fft, torch.linalg and torch.special namespaces lose the prefix
/// (`rfft2` from `aten::fft_rfft2`, `slogdet` from `aten::linalg_slogdet`), the
/// name Python and TorchLens give them.
std::string layer_type_of(std::string_view op_name);

} // namespace torchlens
