#pragma once
// Private to src/: a resolved intervention spec compiled for the engines. The
// live engine (the recorder's fallback) and the replay engine apply entries
// through the same two calls, so a site changes identically in both.

#include "selector_node.hpp"

#include <torchlens/intervene/interventions.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace torchlens::detail {

/// This run's value of an op by id (donors of take_from / add_delta_from).
using ValueOf = std::function<at::Tensor(std::size_t)>;

class CompiledSpec {
 public:
  /// `spec` must be resolved (or name no labels); throws otherwise.
  explicit CompiledSpec(const Interventions& spec);

  bool has_edges() const noexcept { return has_edges_; }
  /// Ids whose values actions read in the same run.
  const std::vector<std::size_t>& reads() const noexcept { return reads_; }

  /// Applies the output entries matching `op` to its value, in spec order
  /// (each sees the previous result). Appends what was applied to `applied`.
  /// Returns `op.tensor()` itself when nothing matched.
  at::Tensor apply_output(const OpView& op, std::string_view label, const ValueOf& value_of,
                          std::vector<std::string>& applied) const;
  /// Applies the edge entries on `edge` to the value its parent hands over.
  at::Tensor apply_edge(const EdgeId& edge, std::string_view op_name, std::string_view label,
                        const at::Tensor& value, const ValueOf& value_of,
                        std::vector<std::string>& applied) const;
  /// True when some edge entry targets an in-edge of op `child`.
  bool edge_into(std::size_t child) const;

 private:
  struct Entry {
    std::shared_ptr<const SelectorNode> selector; // output sites
    std::vector<EdgeId> edges;                    // edge sites
    std::optional<Region> region;
    Action::Fn fn;
    std::string description;
  };
  at::Tensor run(const Entry& e, const at::Tensor& value, HookContext& ctx) const;

  std::vector<Entry> outputs_, edges_;
  std::vector<std::size_t> edge_children_; // sorted
  std::vector<std::size_t> reads_;
  bool has_edges_ = false;
};

} // namespace torchlens::detail
