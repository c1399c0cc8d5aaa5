#pragma once
// Private to src/capture: static facts about a TorchScript model's IR that the
// dispatcher cannot tell capture, looked up by the source range of the node the
// interpreter is executing (torch::jit::currentCallstack()).
//
//  * which values a function returns (module exits, TorchLens's `modules_exited`),
//    definitely or depending on control flow (then capture leaves the exits to
//    the infer-modules pass, which reads them from where the value is used);
//  * which arguments a module's forward returns unchanged (nn.Identity: an
//    `identity` node marks the module's output);
//  * how a bool read from a tensor is used: an `if`, a loop condition, an
//    `assert`, or a value (only `if`s are TorchLens conditionals);
//  * which nodes are tensor literals (`torch.tensor([...])` fills memory
//    outside the dispatcher).
//
// With graph-executor optimisation off (capture turns it off) the interpreter
// runs copies of the method graphs that keep their nodes' source ranges, so a
// range identifies a node. See docs/capture.md.

#include <torchlens/graph/model_graph.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace c10 {
struct ClassType;
}
namespace torch::jit {
struct Module;
struct Graph;
struct Value;
class SourceRange;
} // namespace torch::jit

namespace torchlens::detail {

class TorchScriptIndex {
 public:
  /// Facts about one IR node.
  struct NodeFacts {
    std::uint64_t returned = 0;           ///< bit i: output i reaches its function's return
    std::uint64_t maybe_returned = 0;     ///< ... depending on the branch or iteration
    ScalarUse bool_use = ScalarUse::none; ///< for a tensor → host scalar conversion
    bool literal = false;  ///< `torch.tensor(...)`: values set outside the dispatcher
    std::size_t nodes = 0; ///< IR nodes sharing the range (an unrolled loop's calls)
  };

  /// Indexes every method of every module type in `model` and every function
  /// they call.
  explicit TorchScriptIndex(const torch::jit::Module& model);

  /// Facts of the node with this source range (merged over the nodes that
  /// share it), or null.
  const NodeFacts* find(const torch::jit::SourceRange& range) const;

  /// Positions (0 = self) of the arguments a module type's forward method
  /// `method` returns unchanged, or null when it returns none.
  const std::vector<std::size_t>* passthrough(const c10::ClassType* type,
                                              std::string_view method) const;

  /// True for the methods that are calls of a module, as TorchLens wraps
  /// `forward`: `forward`, its overloads (`forward__0`) and the methods
  /// torch.jit.trace makes for each further call of a module (`forward1`,
  /// `forward2`: a traced block calling its ReLU twice).
  static bool is_forward(std::string_view method);

 private:
  struct Key {
    const void* source;
    std::size_t start, end;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      return std::hash<const void*>()(k.source) ^ (k.start * 0x9e3779b97f4a7c15ULL) ^ (k.end << 17);
    }
  };
  void index_graph(const torch::jit::Graph& g, std::vector<std::size_t>* passthrough);
  using ValueSet = std::unordered_set<const torch::jit::Value*>;
  /// The values of g that reach its return: definitely, or depending on the
  /// branch taken or the iteration.
  void flow_to_return(const torch::jit::Graph& g, ValueSet& definite, ValueSet& maybe);
  /// Per input of g (0 = self for a method): 2 returned unchanged, 1 maybe, 0 not.
  const std::vector<std::uint8_t>& param_flow(const torch::jit::Graph& g);

  std::unordered_map<Key, NodeFacts, KeyHash> facts_;
  /// per module type: (forward method, positions it returns unchanged)
  std::unordered_map<const c10::ClassType*,
                     std::vector<std::pair<std::string, std::vector<std::size_t>>>>
      passthrough_;
  std::vector<const torch::jit::Graph*> seen_;
  std::unordered_map<const torch::jit::Graph*, std::vector<std::uint8_t>> param_flow_;
};

} // namespace torchlens::detail
