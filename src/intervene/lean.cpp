// The lean live engine (lean.hpp, docs/interventions.md "Lean live"): the
// spec's sites found by operator occurrence, no graph built.

#include "lean.hpp"

#include "../capture/live_stack.hpp"
#include "../capture/recorder.hpp"
#include "../io/dtypes.hpp"

#include <torchlens/log/model_log.hpp>
#include <torchlens/torch_error.hpp>

#include <boost/range/iterator_range.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace torchlens::detail {

namespace {

std::atomic<std::int64_t> g_lean_runs{0};

std::uint32_t version_of(const at::Tensor& t) {
  const auto& vc = t.unsafeGetTensorImpl()->version_counter();
  return vc.enabled() ? vc.current_version() : 0;
}

std::string shape_text(c10::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

/// The reference's op outputs that are dispatcher ops the fallback sees (not
/// torchlens's own nodes, constants or tensor literals, whose operator the
/// log no longer has).
bool dispatched(const OpNode& n) {
  return n.kind == NodeKind::op && n.op_name.rfind("torchlens::", 0) != 0 &&
         n.op_name != "prim::Constant" && !(n.op_name == "aten::tensor" && n.overload.empty());
}

} // namespace

// ---- eligibility and the plan -----------------------------------------------

std::shared_ptr<const LeanPlan> make_lean_plan(const Interventions& original,
                                               const Interventions& resolved,
                                               const ModelLog& reference) {
  auto plan = std::make_shared<LeanPlan>();
  const auto refuse = [&](std::string why) {
    plan->unavailable = std::move(why);
    plan->ops.clear();
    plan->inputs.clear();
    plan->totals.clear();
    return plan;
  };
  const ModelGraph& g = reference.graph();
  std::map<std::size_t, Vertex> vertex_of; // by id
  for (Vertex v : boost::make_iterator_range(boost::vertices(g))) vertex_of[g[v].id] = v;

  // what the spec names: output sites, edge parents, edge children
  std::set<std::size_t> named, children;
  for (std::size_t i = 0; i < original.entries().size(); ++i) {
    const auto& o = original.entries()[i];
    const auto& r = resolved.entries()[i];
    const std::string entry = "entry " + std::to_string(i + 1) + " (" + o.site.describe() + " -> " +
                              o.action.describe() + ")";
    if (!r.action.reads().empty()) {
      return refuse(entry +
                    " reads another site's value in the same run, which only the full "
                    "engine keeps");
    }
    if (const auto* edge = std::get_if<EdgeSelector>(&r.site.selector())) {
      for (const EdgeId& e : edge->resolved) {
        named.insert(e.parent);
        named.insert(e.child);
        children.insert(e.child);
      }
      continue;
    }
    // resolved label sites are op ids; anything else is a live fact
    const auto& node = *std::get<LiveSelector>(r.site.selector()).node();
    if (node.kind != SelectorNode::Kind::ids) {
      return refuse(entry +
                    " selects by live facts, which only the capture that builds the "
                    "graph evaluates op by op");
    }
    named.insert(node.ids.begin(), node.ids.end());
  }
  if (named.empty()) return refuse("the spec names no op");

  // occurrences of each operator among the reference's op outputs, in capture order
  std::map<std::pair<std::string, std::string>, std::size_t> seen;
  std::size_t first_literal = SIZE_MAX;
  for (const auto& [id, v] : vertex_of) {
    const OpNode& n = g[v];
    if (n.kind == NodeKind::op && n.op_name == "aten::tensor" && n.overload.empty()) {
      first_literal = std::min(first_literal, id);
    }
    if (!dispatched(n)) continue;
    const std::size_t occurrence = seen[{n.op_name, n.overload}]++;
    if (named.count(id) == 0) continue;
    if (children.count(id) != 0 && n.output_index > 0 && id > 0) {
      // the full engine applies an edge at the op's first output only
      const OpNode& before = g[vertex_of.at(id - 1)];
      if (before.kind == NodeKind::op && before.op_name == n.op_name &&
          before.overload == n.overload && before.output_index < n.output_index) {
        return refuse("the edge into " + n.label() +
                      " (a later output of a multi-output op) is "
                      "left to the full engine");
      }
    }
    plan->ops.push_back(LeanPlan::Op{id, n.label(), n.op_name, n.overload, occurrence,
                                     n.output_index, n.shape, n.dtype});
  }
  if (first_literal != SIZE_MAX) {
    // its op (`empty`, `lift_fresh`, ...) counts in this run's occurrences and
    // totals, but the log renamed it: the occurrences cannot be trusted
    return refuse("the reference has a tensor literal (" + g[vertex_of.at(first_literal)].label() +
                  "), whose operator, which the occurrences count, the log no longer has");
  }
  for (std::size_t id : named) {
    auto it = vertex_of.find(id);
    if (it == vertex_of.end())
      return refuse("op " + std::to_string(id) + " is not in the reference");
    const OpNode& n = g[it->second];
    if (n.kind == NodeKind::input) {
      if (children.count(id) != 0) return refuse("an edge into an input");
      plan->inputs.push_back(LeanPlan::Input{id, n.label(), n.io_address, n.shape, n.dtype});
    } else if (n.kind == NodeKind::buffer) {
      return refuse("the site " + n.label() +
                    " is a buffer, whose passes follow the in-place "
                    "writes the full engine tracks");
    } else if (!dispatched(n)) {
      return refuse("the site " + n.label() + " (" + n.op_name +
                    ") is a node the graph-building capture makes, not an op it runs");
    }
  }
  std::sort(plan->ops.begin(), plan->ops.end(), [](const LeanPlan::Op& a, const LeanPlan::Op& b) {
    return std::tie(a.name, a.overload, a.occurrence) < std::tie(b.name, b.overload, b.occurrence);
  });
  for (const auto& op : plan->ops) {
    std::pair<std::string, std::string> key{op.name, op.overload};
    if (plan->totals.empty() || plan->totals.back().first != key) {
      plan->totals.emplace_back(key, seen[key]);
    }
  }
  return plan;
}

std::string lean_unavailable(const Interventions& spec) {
  const auto& plan = spec.lean_plan();
  if (plan == nullptr) {
    return "the spec was not resolved on a reference log (Interventions::resolve), which is "
           "where the lean engine learns which ops the sites are";
  }
  return plan->unavailable;
}

std::int64_t lean_runs() {
  return g_lean_runs.load();
}

// ---- the run ------------------------------------------------------------------

struct LeanRun::Target {
  const LeanPlan::Op* op = nullptr;
  bool watched = false; // an edge's parent: what it produced is remembered
  struct InEdge {
    EdgeId id;
    const Target* parent_op = nullptr; // or
    const Source* parent_input = nullptr;
  };
  std::vector<InEdge> edges_in; // it is the child; by (argument, list index)
  std::optional<c10::weak_intrusive_ptr<c10::TensorImpl>> produced;
  std::uint32_t version = 0;
};

struct LeanRun::Watch {
  const c10::FunctionSchema* schema = nullptr;
  std::string name, overload;
  bool writes = false;
  std::size_t seen = 0, total = 0;
  std::vector<Target*> targets; // by occurrence
  std::size_t next = 0;
};

struct LeanRun::Source {
  const LeanPlan::Input* input = nullptr;
  at::Tensor tensor; // the caller's input
  std::uint32_t version = 0;
  at::Tensor changed; // defined when output sites changed it
};

namespace {

const LeanPlan& checked_plan(const Interventions& spec) {
  const std::string why = detail::lean_unavailable(spec);
  TORCHLENS_CHECK(why.empty(), "the lean live engine cannot run this spec: ", why);
  return *spec.lean_plan();
}

} // namespace

LeanRun::LeanRun(const Interventions& spec) : plan_(checked_plan(spec)), compiled_(spec) {
  value_of_ = [](std::size_t id) -> at::Tensor {
    TORCHLENS_CHECK(false, "an intervention reads the value of op ", id,
                    ", which this run has not computed yet: it must run before the site");
    return {};
  };
  targets_.resize(plan_.ops.size());
  sources_.resize(plan_.inputs.size());
  std::map<std::size_t, Target*> op_by_id;
  for (std::size_t i = 0; i < plan_.ops.size(); ++i) {
    const LeanPlan::Op& op = plan_.ops[i];
    targets_[i].op = &op;
    op_by_id[op.id] = &targets_[i];
    if (watches_.empty() || watches_.back().name != op.name ||
        watches_.back().overload != op.overload) {
      auto handle = c10::Dispatcher::singleton().findSchema({op.name, op.overload});
      TORCHLENS_CHECK(handle.has_value(), "the operator ", op.name,
                      op.overload.empty() ? "" : "." + op.overload, " of ", op.label,
                      " is not registered in this program");
      Watch w;
      w.schema = &handle->schema();
      w.name = op.name;
      w.overload = op.overload;
      for (const auto& a : w.schema->arguments()) {
        w.writes = w.writes || (a.alias_info() != nullptr && a.alias_info()->isWrite());
      }
      for (const auto& [key, count] : plan_.totals) {
        if (key.first == op.name && key.second == op.overload) w.total = count;
      }
      watches_.push_back(std::move(w));
    }
    watches_.back().targets.push_back(&targets_[i]);
  }
  std::map<std::size_t, Source*> input_by_id;
  for (std::size_t i = 0; i < plan_.inputs.size(); ++i) {
    sources_[i].input = &plan_.inputs[i];
    input_by_id[plan_.inputs[i].id] = &sources_[i];
  }
  for (const auto& e : spec.entries()) {
    const auto* edge = std::get_if<EdgeSelector>(&e.site.selector());
    if (edge == nullptr) continue;
    for (const EdgeId& id : edge->resolved) {
      Target* child = op_by_id.at(id.child);
      const bool known = std::any_of(child->edges_in.begin(), child->edges_in.end(),
                                     [&](const Target::InEdge& in) { return in.id == id; });
      if (known) continue;
      Target::InEdge in{id};
      if (auto it = op_by_id.find(id.parent); it != op_by_id.end()) {
        it->second->watched = true;
        in.parent_op = it->second;
      } else {
        in.parent_input = input_by_id.at(id.parent);
      }
      child->edges_in.push_back(in);
    }
  }
  for (Target& t : targets_) {
    std::sort(t.edges_in.begin(), t.edges_in.end(),
              [](const Target::InEdge& a, const Target::InEdge& b) {
                return std::make_pair(a.id.arg_pos, a.id.list_index) <
                       std::make_pair(b.id.arg_pos, b.id.list_index);
              });
  }
}

LeanRun::~LeanRun() = default;

void LeanRun::set_inputs(const std::vector<std::pair<std::string, at::Tensor>>& inputs) {
  for (Source& s : sources_) {
    const LeanPlan::Input& in = *s.input;
    auto it = std::find_if(inputs.begin(), inputs.end(),
                           [&](const auto& a) { return a.first == in.address; });
    TORCHLENS_CHECK(it != inputs.end(), "the site ", in.label, " is the forward input ", in.address,
                    ", which this run does not have");
    const at::Tensor& t = it->second;
    TORCHLENS_CHECK(t.defined() && t.sizes() == c10::IntArrayRef(in.shape) &&
                        io::dtypes::name(t.scalar_type()) == in.dtype,
                    "the site ", in.label, " (", in.address, ") is ", shape_text(in.shape), " ",
                    in.dtype, " in the reference log but ",
                    t.defined() ? shape_text(t.sizes()) + " " + io::dtypes::name(t.scalar_type())
                                : std::string("undefined"),
                    " in this run: resolve the spec on a reference log of this input");
    s.tensor = t;
    s.version = version_of(t);
    // as the full engine's add_input: the input's output sites, before the forward
    OpView view;
    view.id = in.id;
    view.op_name = "input";
    view.layer_type = "input";
    view.value = &t;
    std::vector<std::string> applied;
    at::Tensor changed = compiled_.apply_output(view, "", value_of_, applied);
    if (!applied.empty()) {
      s.changed = std::move(changed);
      substituting_ = true;
    }
  }
}

void LeanRun::note_foreign_op(const c10::OperatorHandle& op) {
  if (foreign_ops_.fetch_add(1) == 0) foreign_example_ = op.schema().name();
}

void LeanRun::on_op(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  if (!watches_.empty()) {
    const c10::FunctionSchema* schema = &op.schema();
    for (Watch& w : watches_) {
      if (w.schema == schema) {
        on_target(w, op, stack);
        return;
      }
    }
  }
  if (substituting_) substitute_sources(op, stack, nullptr);
  op.callBoxed(stack);
}

void LeanRun::substitute_sources(const c10::OperatorHandle& op, torch::jit::Stack* stack,
                                 const Target* child) {
  const c10::FunctionSchema& schema = op.schema();
  if (child == nullptr) {
    // the full engine logs no vertex for a read into a host scalar: it reads the caller's value
    auto it = scalar_reads_.find(&schema);
    if (it == scalar_reads_.end()) {
      it = scalar_reads_.emplace(&schema, is_scalar_read_op(schema.name())).first;
    }
    if (it->second) return;
  }
  const std::size_t num_args = schema.arguments().size();
  const std::size_t first = stack->size() - num_args;
  const auto visit = [&](std::size_t pos, int list_index) {
    c10::IValue& arg = (*stack)[first + pos];
    const at::Tensor current = stack_tensor(arg, list_index);
    if (!current.defined()) return;
    at::Tensor value = current;
    if (substituting_) {
      for (const Source& s : sources_) {
        if (s.changed.defined() &&
            s.tensor.unsafeGetTensorImpl() == current.unsafeGetTensorImpl() &&
            version_of(current) == s.version) {
          value = s.changed;
          break;
        }
      }
    }
    if (child != nullptr) {
      for (const Target::InEdge& in : child->edges_in) {
        if (in.id.arg_pos != static_cast<int>(pos) || in.id.list_index != list_index) continue;
        // the argument must be the value the edge's parent produced (the same
        // tensor, unchanged since), as the graph-building capture would find it
        bool same = false;
        std::string parent;
        if (in.parent_op != nullptr) {
          parent = in.parent_op->op->label;
          same = in.parent_op->produced &&
                 in.parent_op->produced->_unsafe_get_target() == current.unsafeGetTensorImpl() &&
                 in.parent_op->version == version_of(current);
        } else {
          parent = in.parent_input->input->label;
          same = in.parent_input->tensor.unsafeGetTensorImpl() == current.unsafeGetTensorImpl() &&
                 in.parent_input->version == version_of(current);
        }
        TORCHLENS_CHECK(same, "the edge site ", parent, " -> ", child->op->label, ": argument ",
                        pos, list_index >= 0 ? "[" + std::to_string(list_index) + "]" : "", " of ",
                        child->op->label, " (", schema.name(), ") is not the value ", parent,
                        " produced in this run: this run is not the reference's op stream "
                        "(another input, or control flow that went another way); resolve the "
                        "spec on a reference log of this input");
        value = compiled_.apply_edge(in.id, schema.name(), "", value, value_of_, applied_);
        break;
      }
    }
    if (value.is_same(current)) return;
    const auto* alias = schema.arguments()[pos].alias_info();
    put_argument(arg, list_index, alias != nullptr && alias->isWrite(), current, value);
  };
  for (std::size_t pos = 0; pos < num_args; ++pos) {
    const c10::IValue& a = (*stack)[first + pos];
    if (a.isTensor()) {
      visit(pos, -1);
    } else if (a.isTensorList()) {
      const std::size_t n = a.toTensorList().size();
      for (std::size_t j = 0; j < n; ++j) visit(pos, static_cast<int>(j));
    } else if (a.isList() && a.toList().elementType()->kind() == c10::TypeKind::OptionalType) {
      const std::size_t n = a.toList().size();
      for (std::size_t j = 0; j < n; ++j) visit(pos, static_cast<int>(j));
    }
  }
  applied_.clear();
}

void LeanRun::on_target(Watch& w, const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const std::size_t first = w.seen;
  const Target* child = nullptr;
  if (w.next < w.targets.size() && w.targets[w.next]->op->occurrence == first &&
      !w.targets[w.next]->edges_in.empty()) {
    child = w.targets[w.next];
  }
  if (substituting_ || child != nullptr) substitute_sources(op, stack, child);
  op.callBoxed(stack);

  const std::size_t num_returns = op.schema().returns().size();
  std::size_t defined = 0;
  std::vector<std::pair<Target*, int>> watched;
  change_returns(stack, num_returns, w.writes, [&](int out, const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return t;
    const std::size_t occurrence = first + defined++;
    if (w.next >= w.targets.size() || w.targets[w.next]->op->occurrence != occurrence) return t;
    Target& target = *w.targets[w.next++];
    const LeanPlan::Op& ref = *target.op;
    TORCHLENS_CHECK(out == ref.output_index && t.sizes() == c10::IntArrayRef(ref.shape) &&
                        io::dtypes::name(t.scalar_type()) == ref.dtype,
                    "the site ", ref.label, " (", w.name, " occurrence ", occurrence + 1,
                    ", output ", ref.output_index, ", ", shape_text(ref.shape), " ", ref.dtype,
                    " in the reference log) is output ", out, ", ", shape_text(t.sizes()), " ",
                    io::dtypes::name(t.scalar_type()),
                    " in this run: this run is not the reference's op stream (another input "
                    "shape, or control flow that went another way); resolve the spec on a "
                    "reference log of this input");
    if (target.watched) watched.emplace_back(&target, out);
    OpView view;
    view.id = ref.id;
    view.op_name = w.name;
    view.output_index = out;
    view.value = &t;
    at::Tensor changed = compiled_.apply_output(view, "", value_of_, applied_);
    applied_.clear();
    return changed;
  });
  w.seen += defined;
  if (!watched.empty()) {
    const auto outputs = flatten_returns(torch::jit::last(*stack, num_returns));
    for (auto& [target, out] : watched) {
      const at::Tensor& t = outputs[static_cast<std::size_t>(out)];
      target->produced.emplace(t.getIntrusivePtr());
      target->version = version_of(t);
    }
  }
}

void LeanRun::finish() const {
  const std::int64_t foreign = foreign_ops_.load();
  TORCHLENS_CHECK(foreign == 0, "the model ran ", foreign,
                  " op(s) on another thread (TorchScript fork/wait or at::launch; the first was ",
                  foreign_example_, "), which run_with_interventions cannot reach");
  for (const Watch& w : watches_) {
    if (w.seen == w.total) continue;
    std::string missed;
    for (std::size_t i = w.next; i < w.targets.size(); ++i) {
      missed += (missed.empty() ? "" : ", ") + w.targets[i]->op->label;
    }
    TORCHLENS_CHECK(false, "the model ran ", w.name, w.overload.empty() ? "" : "." + w.overload,
                    " ", w.seen, " times where the reference log has it ", w.total,
                    " times: this run is not the reference's op stream (another input, or "
                    "control flow that went another way), so the sites cannot be placed",
                    missed.empty() ? std::string() : " (not reached: " + missed + ")",
                    "; resolve the spec on a reference log of this input");
  }
  ++g_lean_runs;
}

} // namespace torchlens::detail
