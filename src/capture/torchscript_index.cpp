// Static facts about a TorchScript model's IR, by node source range (see
// torchscript_index.hpp).

#include "torchscript_index.hpp"

#include "libtorch_compat.hpp"

#include <ATen/core/function.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <tuple>
#include <unordered_set>

namespace torchlens::detail {

namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

namespace prim = c10::prim;
namespace aten = c10::aten;

/// Graphs of the functions a node calls (methods and free functions).
void callees(const Node* n, std::vector<const Graph*>& out) {
  const torch::jit::Function* fn = nullptr;
  if (n->kind() == prim::CallMethod) {
    if (auto cls = n->input(0)->type()->cast<c10::ClassType>()) {
      fn = cls->findMethod(n->s(c10::attr::name));
    }
  } else if (n->kind() == prim::CallFunction) {
    if (auto ft = n->input(0)->type()->cast<c10::FunctionType>()) fn = ft->function();
  }
  if (fn != nullptr && fn->isGraphFunction()) {
    out.push_back(torch::jit::toGraphFunction(*fn).graph().get());
  }
}

bool contains_kind(const Block* b, c10::Symbol kind) {
  for (const Node* n : b->nodes()) {
    if (n->kind() == kind) return true;
    for (const Block* sub : n->blocks()) {
      if (contains_kind(sub, kind)) return true;
    }
  }
  return false;
}

/// An `if` that only computes a bool (`a and b`, `not a or b`; also `if c:
/// break` lowered into a loop flag, which if_origin tells apart): every output
/// is a bool and its blocks run no op that makes a tensor.
bool is_bool_expression(const Node* n) {
  for (const Value* o : n->outputs()) {
    if (o->type()->kind() != c10::TypeKind::BoolType) return false;
  }
  if (n->outputs().empty()) return false;
  for (const Block* b : n->blocks()) {
    for (const Node* inner : b->nodes()) {
      for (const Value* o : inner->outputs()) {
        if (o->type()->kind() == c10::TypeKind::TensorType) return false;
      }
    }
  }
  return true;
}

/// The strongest use: an `if` outranks a loop, a loop an assert, an assert a value.
ScalarUse stronger(ScalarUse a, ScalarUse b) {
  auto rank = [](ScalarUse u) {
    switch (u) {
      case ScalarUse::condition:
        return 4;
      case ScalarUse::loop:
        return 3;
      case ScalarUse::assertion:
        return 2;
      case ScalarUse::value:
        return 1;
      case ScalarUse::none:
        return 0;
    }
    return 0;
  };
  return rank(a) >= rank(b) ? a : b;
}

/// What a TorchScript `if` node was compiled from, when its source says: an
/// `if`/`elif` statement (whatever its body does: `break` and `continue` are
/// lowered into loop flags, `raise` into a raising block) or an `assert`. Other
/// `if` nodes come from expressions (`a and b`, `x if c else y`). As TorchLens
/// 2.x classifies the source: an `if` statement's bool is a condition, an
/// `assert`'s an assertion.
enum class IfOrigin { statement, assertion, expression, unknown };

IfOrigin if_origin(const Node* n) {
  const std::string word = compat::source_keyword(n);
  if (word == "if" || word == "elif") return IfOrigin::statement;
  if (word == "assert") return IfOrigin::assertion;
  return word.empty() ? IfOrigin::unknown : IfOrigin::expression;
}

/// Without source: `assert c` is an `if` whose taken block is empty and whose
/// other block raises (`if not c: raise` raises in its taken block).
bool looks_like_assert(const Node* n) {
  const Block* taken = n->blocks()[0];
  return taken->nodes().begin() == taken->nodes().end() &&
         contains_kind(n->blocks()[1], prim::RaiseException);
}

/// How a host bool `v` is used: follows it through `not`, `and`, `or` and
/// through bool-only `if`s (and/or) to the control flow that consumes it.
ScalarUse bool_use(const Value* v, int depth = 0) {
  if (depth > 16) return ScalarUse::condition;
  ScalarUse use = ScalarUse::none;
  for (const auto& u : v->uses()) {
    const Node* user = u.user;
    ScalarUse here = ScalarUse::value;
    if (user->kind() == prim::If && u.offset == 0) {
      const IfOrigin origin = if_origin(user);
      if (origin == IfOrigin::assertion ||
          (origin == IfOrigin::unknown && looks_like_assert(user))) {
        here = ScalarUse::assertion;
      } else if (origin != IfOrigin::statement && is_bool_expression(user)) {
        // `a and b`, `not a or b`: the bool goes on to whatever reads the result
        here = ScalarUse::none;
        for (const Value* o : user->outputs()) here = stronger(here, bool_use(o, depth + 1));
      } else {
        here = ScalarUse::condition; // an `if` statement, a `break` or `raise` in it too
      }
    } else if (user->kind() == prim::Loop && u.offset == 1) {
      here = ScalarUse::loop;
    } else if (user->kind() == aten::__not__ || user->kind() == aten::__and__ ||
               user->kind() == aten::__or__) {
      here = bool_use(user->output(), depth + 1);
    } else if (user->kind() == prim::Return && user->owningBlock()->owningNode() != nullptr) {
      const Node* owner = user->owningBlock()->owningNode();
      if (owner->kind() == prim::Loop && u.offset == 0) {
        here = ScalarUse::loop; // the body's "go on" flag
      } else if (owner->kind() == prim::If) {
        here = bool_use(owner->output(u.offset), depth + 1);
      } else if (owner->kind() == prim::Loop) {
        here = ScalarUse::value; // a loop-carried bool
      }
    }
    use = stronger(use, here);
  }
  return use == ScalarUse::none ? ScalarUse::value : use;
}

bool converts_to_host_scalar(const Node* n) {
  static const std::unordered_set<c10::Symbol> kinds = {
      aten::Bool,  aten::is_nonzero, aten::item, aten::Float, aten::Int,
      aten::equal, aten::allclose,   prim::min,  prim::max,   aten::ScalarImplicit};
  return kinds.count(n->kind()) != 0;
}

} // namespace

TorchScriptIndex::TorchScriptIndex(const torch::jit::Module& model) {
  std::vector<std::tuple<const c10::ClassType*, std::string, const Graph*>> forwards;
  std::vector<const Graph*> pending;
  std::unordered_set<const c10::ClassType*> types;
  auto add_type = [&](const torch::jit::Module& m) {
    const c10::ClassType* type = m.type().get();
    if (!types.insert(type).second) return;
    for (const torch::jit::Function* fn : type->methods()) {
      if (!fn->isGraphFunction()) continue;
      const Graph* g = torch::jit::toGraphFunction(*fn).graph().get();
      if (is_forward(fn->name())) forwards.emplace_back(type, fn->name(), g);
      pending.push_back(g);
    }
  };
  add_type(model);
  for (const auto& sub : model.modules()) add_type(sub);
  for (const auto& [type, method, g] : forwards) {
    std::vector<std::size_t> through;
    index_graph(*g, &through);
    if (!through.empty()) passthrough_[type].emplace_back(method, std::move(through));
  }
  while (!pending.empty()) {
    const Graph* g = pending.back();
    pending.pop_back();
    if (std::find(seen_.begin(), seen_.end(), g) == seen_.end()) index_graph(*g, nullptr);
    // functions called from g, including from nested blocks
    std::vector<const Block*> blocks{g->block()};
    while (!blocks.empty()) {
      const Block* b = blocks.back();
      blocks.pop_back();
      for (const Node* n : b->nodes()) {
        std::vector<const Graph*> called;
        callees(n, called);
        for (const Graph* c : called) {
          if (std::find(seen_.begin(), seen_.end(), c) == seen_.end()) pending.push_back(c);
        }
        for (const Block* sub : n->blocks()) blocks.push_back(sub);
      }
    }
  }
}

const std::vector<std::uint8_t>& TorchScriptIndex::param_flow(const Graph& g) {
  if (auto it = param_flow_.find(&g); it != param_flow_.end()) return it->second;
  param_flow_[&g]; // TorchScript has no recursion; a cycle would read "not returned"
  ValueSet definite, maybe;
  flow_to_return(g, definite, maybe);
  std::vector<std::uint8_t> flow(g.inputs().size(), 0);
  for (std::size_t i = 0; i < flow.size(); ++i) {
    flow[i] = definite.count(g.inputs()[i]) != 0 ? 2 : maybe.count(g.inputs()[i]) != 0 ? 1 : 0;
  }
  return param_flow_[&g] = std::move(flow);
}

void TorchScriptIndex::flow_to_return(const Graph& g, ValueSet& definite, ValueSet& maybe) {
  // Through containers, unpacking, if and loop outputs, and the calls that hand
  // an argument back (an RNN's permute_hidden returns its hidden state when
  // there is no permutation). Definitely, when returned whenever the op making
  // them runs; maybe, when that depends on the branch taken (a value from before
  // an `if` that one branch returns) or on the iteration (every value a loop
  // carries).
  std::vector<std::pair<const Value*, bool>> work;
  for (const Value* v : g.return_node()->inputs()) work.emplace_back(v, true);
  auto defined_in = [](const Value* v, const Block* b) {
    for (const Block* cur = v->node()->owningBlock(); cur != nullptr;
         cur = cur->owningNode() != nullptr ? cur->owningNode()->owningBlock() : nullptr) {
      if (cur == b) return true;
    }
    return false;
  };
  while (!work.empty()) {
    const auto [v, sure] = work.back();
    work.pop_back();
    auto& set = sure ? definite : maybe;
    if (!set.insert(v).second) continue;
    const Node* n = v->node();
    const c10::Symbol k = n->kind();
    if (k == prim::Param) {
      if (const Node* loop = n->owningBlock()->owningNode();
          loop != nullptr && loop->kind() == prim::Loop) {
        const std::size_t i = v->offset(); // 0: the trip count
        if (i >= 1) {
          work.emplace_back(loop->input(i + 1), false);
          work.emplace_back(n->owningBlock()->outputs()[i], false);
        }
      }
    } else if (k == prim::TupleConstruct || k == prim::ListConstruct || k == prim::DictConstruct ||
               k == prim::TupleUnpack || k == prim::TupleIndex || k == prim::ListUnpack ||
               k == aten::__getitem__) {
      for (const Value* in : n->inputs()) work.emplace_back(in, sure);
    } else if (k == prim::If) {
      for (const Block* b : n->blocks()) {
        const Value* out = b->outputs()[v->offset()];
        work.emplace_back(out, sure && defined_in(out, b));
      }
    } else if (k == prim::Loop) {
      work.emplace_back(n->input(v->offset() + 2), false);
      work.emplace_back(n->blocks()[0]->outputs()[v->offset() + 1], false);
    } else if (k == prim::CallMethod || k == prim::CallFunction) {
      std::vector<const Graph*> called;
      callees(n, called);
      // a method's inputs are the callee's (self first); a function call's
      // first input is the function
      const std::size_t shift = k == prim::CallFunction ? 1 : 0;
      for (std::size_t i = shift; i < n->inputs().size(); ++i) {
        if (called.empty()) { // an opaque callee may hand anything back
          work.emplace_back(n->input(i), false);
          continue;
        }
        const auto& flow = param_flow(*called.front());
        const std::size_t p = i - shift;
        if (p < flow.size() && flow[p] != 0) work.emplace_back(n->input(i), sure && flow[p] == 2);
      }
    }
  }
}

void TorchScriptIndex::index_graph(const Graph& g, std::vector<std::size_t>* passthrough) {
  seen_.push_back(&g);
  ValueSet definite, maybe;
  flow_to_return(g, definite, maybe);
  if (passthrough != nullptr) {
    for (std::size_t i = 0; i < g.inputs().size(); ++i) {
      if (definite.count(g.inputs()[i]) != 0) passthrough->push_back(i);
    }
  }
  std::vector<const Block*> blocks{g.block()};
  while (!blocks.empty()) {
    const Block* b = blocks.back();
    blocks.pop_back();
    for (const Node* n : b->nodes()) {
      for (const Block* sub : n->blocks()) blocks.push_back(sub);
      const auto& range = n->sourceRange();
      if (!range.source()) continue;
      const Key key{range.source().get(), range.start(), range.end()};
      // Nodes sharing a range share (merge) their facts. A loop over a
      // Sequential or ModuleList is unrolled into one call node per child, all
      // with the loop body's range: an output returned by some of them and not
      // by others is only maybe returned (infer-modules reads its exits from
      // its uses), never returned by all.
      NodeFacts& f = facts_[key];
      std::uint64_t returned = 0;
      for (std::size_t i = 0; i < n->outputs().size(); ++i) {
        const std::uint64_t bit = std::uint64_t{1} << std::min<std::size_t>(i, 63);
        if (definite.count(n->output(i)) != 0) {
          returned |= bit;
        } else if (maybe.count(n->output(i)) != 0) {
          f.maybe_returned |= bit;
        }
      }
      if (f.nodes++ == 0) {
        f.returned = returned;
      } else {
        f.maybe_returned |= f.returned ^ returned;
        f.returned &= returned;
      }
      if (converts_to_host_scalar(n) && n->outputs().size() == 1) {
        f.bool_use = stronger(f.bool_use, n->output()->type()->kind() == c10::TypeKind::BoolType
                                              ? bool_use(n->output())
                                              : ScalarUse::value);
      }
      f.literal = f.literal || n->kind() == aten::tensor || n->kind() == aten::as_tensor;
    }
  }
}

const TorchScriptIndex::NodeFacts* TorchScriptIndex::find(
    const torch::jit::SourceRange& range) const {
  if (!range.source()) return nullptr;
  auto it = facts_.find(Key{range.source().get(), range.start(), range.end()});
  return it == facts_.end() ? nullptr : &it->second;
}

bool TorchScriptIndex::is_forward(std::string_view method) {
  if (!method.starts_with("forward")) return false;
  const std::string_view rest = method.substr(7);
  if (rest.starts_with("__")) return true; // an overload
  return std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; });
}

const std::vector<std::size_t>* TorchScriptIndex::passthrough(const c10::ClassType* type,
                                                              std::string_view method) const {
  auto it = passthrough_.find(type);
  if (it == passthrough_.end()) return nullptr;
  for (const auto& [name, positions] : it->second) {
    if (name == method) return &positions;
  }
  return nullptr;
}

} // namespace torchlens::detail
