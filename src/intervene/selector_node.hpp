#pragma once
// Private to src/intervene: the expression tree behind LiveSelector and
// LabelSelector (site.hpp), and its evaluation on a log.

#include <torchlens/intervene/site.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace torchlens::detail {

struct SelectorNode {
  enum class Kind {
    any,
    func,
    in_module,
    output_index,
    where,
    label,
    module,
    ids,
    all,
    either,
    not_
  };
  Kind kind = Kind::any;
  std::string text;             ///< func name, module address, label key, description
  int number = 0;               ///< module pass, output index
  std::vector<std::size_t> ids; ///< sorted (Kind::ids)
  std::function<bool(const OpView&)> predicate;
  std::vector<std::shared_ptr<const SelectorNode>> children;
};

/// True when the tree needs a reference log (labels, module outputs).
bool needs_labels(const SelectorNode& node);
/// Evaluates live facts; label kinds must have been resolved (throws otherwise).
bool matches_live(const SelectorNode& node, const OpView& op);
/// The OpNode ids of `log`'s op passes the tree selects, ascending (an output
/// node stands for its producer).
std::vector<std::size_t> select_on_log(const SelectorNode& node, const ModelLog& log);
/// The facts of a logged vertex as a live selector sees them.
OpView view_of(const ModelLog& log, Vertex v, const at::Tensor& value);

} // namespace torchlens::detail
