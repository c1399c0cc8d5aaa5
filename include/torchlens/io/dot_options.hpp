#pragma once
/// \file
/// What a drawing is asked for: DotOptions (rolled, nesting depth, direction,
/// buffers) and the attribute callbacks with what they are handed. The options
/// of render() (torchlens/io/render.hpp) hold these; the drawing itself is
/// torchlens/io/dot.hpp. Torch-free; compiled in src/io/dot/options.cpp.

#include <torchlens/config.hpp>
#include <torchlens/graph/model_graph.hpp>

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torchlens::io {

/// Which way the graph flows (Graphviz `rankdir`).
enum class Direction {
  bottom_up,  ///< `BT`: inputs at the bottom (TorchLens's default)
  top_down,   ///< `TB`
  left_right, ///< `LR`
};

/// The Graphviz `rankdir` value of a direction (`BT`, `TB`, `LR`).
std::string_view rankdir(Direction d) noexcept;

/// Parses `BT`/`bottom-up`, `TB`/`top-down`, `LR`/`left-right` (any case);
/// throws torchlens::UsageError (a std::invalid_argument) otherwise.
Direction parse_direction(std::string_view text);

/// Attributes of one DOT element, written in insertion order. A value of the
/// form `<...>` is an HTML-like label and is written as is; any other value is
/// quoted when it is not a plain DOT identifier or number.
class DotAttributes {
 public:
  using const_iterator = std::vector<std::pair<std::string, std::string>>::const_iterator;

  /// Sets `key` (replacing its value, keeping its position) or appends it.
  DotAttributes& set(std::string key, std::string value);
  /// The value of `key`, or nullptr.
  const std::string* get(std::string_view key) const;
  /// The value of `key`, or "" when unset.
  std::string value(std::string_view key) const;
  /// Removes `key`; true when it was set.
  bool erase(std::string_view key);
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  const_iterator begin() const noexcept { return items_.begin(); }
  const_iterator end() const noexcept { return items_.end(); }

  /// Writes `[k=v, k=v]` (nothing when empty), write_graphviz style.
  friend std::ostream& operator<<(std::ostream& os, const DotAttributes& a);

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

/// What a drawn node stands for, handed to DotOptions::node_attributes.
struct DotNodeInfo {
  std::string name;                  ///< DOT node id
  const OpNode* op = nullptr;        ///< the op (first pass when rolled); nullptr for
                                     ///< a collapsed module
  std::optional<ModuleFrame> module; ///< the collapsed module (pass 0 when rolled)
  int num_passes = 1;                ///< passes drawn by this node (rolled views)
};

/// What a drawn edge stands for, handed to DotOptions::edge_attributes.
struct DotEdgeInfo {
  std::string tail, head;               ///< DOT node ids
  const OpNode* tail_op = nullptr;      ///< nullptr when the tail is a collapsed module
  const OpNode* head_op = nullptr;      ///< nullptr when the head is a collapsed module
  std::vector<const TensorEdge*> edges; ///< the graph edges merged into this one
};

/// Callback adjusting a node's attributes after the visual code set them.
using NodeAttributeFn = std::function<void(const DotNodeInfo&, DotAttributes&)>;
/// Callback adjusting an edge's attributes.
using EdgeAttributeFn = std::function<void(const DotEdgeInfo&, DotAttributes&)>;
/// Callback adjusting a module cluster's attributes (frame pass 0 when rolled).
using ModuleAttributeFn = std::function<void(const ModuleFrame&, DotAttributes&)>;

/// Options of the drawing, fluent:
/// `DotOptions().rolled(true).nesting_depth(2)`.
struct DotOptions {
  /// No collapsing: every module is a cluster.
  static constexpr int kUnlimitedDepth = std::numeric_limits<int>::max();

  /// One node per layer (passes merged, `(xN)`, `In`/`Out` edge labels) instead
  /// of one node per pass. Needs a labeled graph (label-layers pass).
  TORCHLENS_ARG(bool, rolled) = false;
  /// Modules nested deeper than this many levels collapse into one box3d node
  /// per module (pass); 1 shows only top-level modules. At least 1.
  TORCHLENS_ARG(int, nesting_depth) = kUnlimitedDepth;
  /// Graph direction (`rankdir`); bottom-up by default.
  TORCHLENS_ARG(Direction, direction) = Direction::bottom_up;
  /// Draw buffer tensors (gray boxes); hidden by default.
  TORCHLENS_ARG(bool, show_buffers) = false;
  /// Layer passes (vertices) with a saved gradient: an unrolled drawing adds a
  /// backward edge, child → parent in TorchLens's gradient colour (#9197F6),
  /// wherever both ends of an edge have one. render(ModelLog) fills it.
  TORCHLENS_ARG(std::vector<Vertex>, gradient_layers);
  /// Per-node attribute override, called last.
  TORCHLENS_ARG(NodeAttributeFn, node_attributes);
  /// Per-edge attribute override, called last.
  TORCHLENS_ARG(EdgeAttributeFn, edge_attributes);
  /// Per-module-cluster attribute override, called last.
  TORCHLENS_ARG(ModuleAttributeFn, module_attributes);
};

} // namespace torchlens::io
