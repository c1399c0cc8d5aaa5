#pragma once
/// \file
/// Where an intervention acts (docs/interventions.md). Two kinds of selector,
/// two types:
///
/// - **LiveSelector**: facts known while the model runs (op name, layer type,
///   module containment and pass, output index, shape, the value itself).
///   Usable by every engine, also without a reference log.
/// - **LabelSelector**: final labels and module addresses (`conv2d_3_7:2`,
///   `layer4.1`), which exist only after the pass pipeline: it needs a reference
///   log to resolve to op ids (`Interventions::resolve`).
///
/// An **edge** site is the value one parent hands to one argument of one child
/// (path patching): only that consumer sees the change. Any site can narrow the
/// action to one index along one dimension (`.at_index(dim, i)`).

#include <torchlens/graph/model_graph.hpp>

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace torchlens {

class ModelLog;

/// The facts of one op output a live selector may read.
struct OpView {
  std::size_t id = 0;          ///< OpNode::id (creation order, the same in every capture)
  std::string_view op_name;    ///< `aten::relu_`
  std::string_view layer_type; ///< `relu`
  const std::vector<ModuleFrame>* modules = nullptr; ///< containment, outer → inner
  int output_index = 0;                              ///< which return of the op
  const at::Tensor* value = nullptr; ///< the value (undefined in a log that did not save it)

  /// The innermost module address (`layer1.0.conv1`), "" outside every module.
  std::string_view module() const;
  /// The pass of the innermost module call (1-based), 0 outside every module.
  int module_pass() const;
  /// True when some enclosing call is of module `address` (and pass `pass`, if > 0).
  bool within(std::string_view address, int pass = 0) const;
  std::int64_t dim() const;
  const at::Tensor& tensor() const;
};

namespace detail {
struct SelectorNode; // the expression tree both selector types share
}

/// Facts known at capture time. Compose with `&`, `|`, `!`.
class LiveSelector {
 public:
  explicit LiveSelector(std::shared_ptr<const detail::SelectorNode> node)
      : node_(std::move(node)) {}
  bool matches(const OpView& op) const;
  /// False when a `where` predicate (code) is part of it: it cannot be saved.
  bool portable() const;
  std::string describe() const;
  const std::shared_ptr<const detail::SelectorNode>& node() const noexcept { return node_; }

 private:
  std::shared_ptr<const detail::SelectorNode> node_;
};

/// Final labels and module addresses: resolved on a reference log.
class LabelSelector {
 public:
  explicit LabelSelector(std::shared_ptr<const detail::SelectorNode> node)
      : node_(std::move(node)) {}
  /// OpNode ids of the log's op passes it selects, ascending. Unknown labels
  /// throw the log's KeyError (with near matches).
  std::vector<std::size_t> resolve(const ModelLog& reference) const;
  bool portable() const;
  std::string describe() const;
  const std::shared_ptr<const detail::SelectorNode>& node() const noexcept { return node_; }

 private:
  std::shared_ptr<const detail::SelectorNode> node_;
};

LiveSelector operator&(const LiveSelector& a, const LiveSelector& b);
LiveSelector operator|(const LiveSelector& a, const LiveSelector& b);
LiveSelector operator!(const LiveSelector& a);
/// A label selector stays one when composed: the live part is evaluated on the
/// reference log's facts and saved values.
LabelSelector operator&(const LabelSelector& a, const LabelSelector& b);
LabelSelector operator&(const LabelSelector& a, const LiveSelector& b);
LabelSelector operator&(const LiveSelector& a, const LabelSelector& b);
LabelSelector operator|(const LabelSelector& a, const LabelSelector& b);
LabelSelector operator|(const LabelSelector& a, const LiveSelector& b);
LabelSelector operator|(const LiveSelector& a, const LabelSelector& b);
LabelSelector operator!(const LabelSelector& a);

/// An edge of a reference log, by ids.
struct EdgeId {
  std::size_t parent = 0, child = 0;
  int arg_pos = 0, list_index = -1;
  friend bool operator==(const EdgeId&, const EdgeId&) = default;
};

/// One parent → child argument: the value `parent` hands to `child` (argument
/// position `arg`, or every argument it feeds when -1). Needs a reference log.
struct EdgeSelector {
  std::string parent, child;
  int arg = -1;
  /// Filled by Interventions::resolve: the edges of the reference log.
  std::vector<EdgeId> resolved;
  std::string describe() const;
};

/// Resolves an edge selector; throws when the two layers are not connected.
std::vector<EdgeId> resolve_edges(const EdgeSelector& edge, const ModelLog& reference);

/// Narrows an action to one index along one dimension (a position, a channel,
/// a head): the action sees `value.select(dim, index)`; the rest is untouched.
struct Region {
  std::int64_t dim = 0, index = 0;
  friend bool operator==(const Region&, const Region&) = default;
};

/// A site: what is selected, and optionally a region of its value.
class Site {
 public:
  using Selector = std::variant<LiveSelector, LabelSelector, EdgeSelector>;
  /* implicit */ Site(LiveSelector s) : selector_(std::move(s)) {}
  /* implicit */ Site(LabelSelector s) : selector_(std::move(s)) {}
  /* implicit */ Site(EdgeSelector s) : selector_(std::move(s)) {}

  /// The same site, acting on `value.select(dim, index)` only.
  Site at_index(std::int64_t dim, std::int64_t index) const {
    Site s = *this;
    s.region_ = Region{dim, index};
    return s;
  }
  const Selector& selector() const noexcept { return selector_; }
  const std::optional<Region>& region() const noexcept { return region_; }
  /// True for label and module sites, and for edges not yet resolved.
  bool needs_reference() const noexcept {
    if (const auto* e = std::get_if<EdgeSelector>(&selector_)) return e->resolved.empty();
    return selector_.index() == 1;
  }
  bool is_edge() const noexcept { return selector_.index() == 2; }
  std::string describe() const;

 private:
  Selector selector_;
  std::optional<Region> region_;
};

namespace sel {

/// Every op output.
LiveSelector any();
/// An op by name (`aten::relu`, `relu`) or TorchLens layer type (`relu`
/// matches `aten::relu` and `aten::relu_`).
LiveSelector func(std::string name);
/// Ops inside module `address` (any depth), in its pass `pass` (1-based) or all.
LiveSelector in_module(std::string address, int pass = 0);
/// The `index`-th return of multi-output ops (0-based).
LiveSelector output_index(int index);
/// A predicate over live facts: code, so a spec holding it is not portable.
LiveSelector where(std::function<bool(const OpView&)> predicate, std::string description = "where");
/// Any lookup key of the reference log: a label (`conv2d_3_7`, every pass;
/// `conv2d_3_7:2`, one pass), a short label, an ordinal, or a substring.
LabelSelector label(std::string key);
/// The output of a module call (`layer4.1`, every pass; `layer4.1:2`, one).
LabelSelector module(std::string address);
/// Op ids, as a resolved label selector holds them.
LabelSelector ids(std::vector<std::size_t> ids);
EdgeSelector edge(std::string parent, std::string child, int arg = -1);

} // namespace sel

} // namespace torchlens
