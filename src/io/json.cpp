// JSON metadata of a log: the schema is docs/json.md (TORCHLENS_JSON_SCHEMA_VERSION).

#include <torchlens/graph/query.hpp>
#include <torchlens/io/json.hpp>
#include <torchlens/version.hpp>

#include <algorithm>
#include <cstdio>
#include <ostream>

namespace torchlens::io {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

namespace {

template <class Range, class F>
void json_array(std::ostream& os, const Range& r, F&& each) {
  os << '[';
  bool first = true;
  for (const auto& x : r) {
    if (!first) os << ", ";
    first = false;
    each(x);
  }
  os << ']';
}

void shape_json(std::ostream& os, const std::vector<std::int64_t>& shape) {
  json_array(os, shape, [&](std::int64_t d) { os << d; });
}

const char* b(bool v) {
  return v ? "true" : "false";
}

bool contains_frame(const std::vector<ModuleFrame>& frames, const ModuleFrame& f) {
  return std::find(frames.begin(), frames.end(), f) != frames.end();
}

void labels_json(std::ostream& os, const ModelGraph& g, const std::vector<Vertex>& vs) {
  json_array(os, vs, [&](Vertex v) { os << json_string(g[v].label()); });
}

} // namespace

void write_json(std::ostream& os, const ModelLog& log) {
  const GraphInfo& info = log.info();
  const ModelGraph& g = log.graph();
  const ModelTotals t = log.totals();
  os << "{\n  \"schema_version\": " << TORCHLENS_JSON_SCHEMA_VERSION << ",\n";
  os << "  \"torchlens_version\": " << json_string(TORCHLENS_VERSION_STRING) << ",\n";
  os << "  \"model\": " << json_string(info.model_name) << ",\n";
  os << "  \"random_seed\": " << info.random_seed << ",\n";
  os << "  \"num_tensors\": " << t.num_tensors << ",\n";
  os << "  \"tensor_bytes\": " << t.tensor_bytes << ",\n";
  os << "  \"num_saved\": " << t.num_saved << ",\n";
  os << "  \"saved_bytes\": " << t.saved_bytes << ",\n";
  os << "  \"num_param_tensors\": " << t.num_param_tensors << ",\n";
  os << "  \"num_params\": " << t.num_params << ",\n";
  os << "  \"param_bytes\": " << t.param_bytes << ",\n";
  os << "  \"forward_time_ms\": " << info.forward_time_ms << ",\n";
  os << "  \"logging_time_ms\": " << info.logging_time_ms << ",\n";
  os << "  \"is_recurrent\": " << b(info.is_recurrent) << ",\n";
  os << "  \"max_recurrent_loops\": " << info.max_recurrent_loops << ",\n";
  os << "  \"is_branching\": " << b(info.is_branching) << ",\n";
  os << "  \"has_conditional\": " << b(info.has_conditional) << ",\n";
  std::vector<std::pair<Vertex, Vertex>> if_edges;
  for (auto e : boost::make_iterator_range(boost::edges(g))) {
    if (g[e].is_cond_branch_start) if_edges.emplace_back(boost::source(e, g), boost::target(e, g));
  }
  os << "  \"conditional_branch_edges\": ";
  json_array(os, if_edges, [&](const auto& e) {
    os << '[' << json_string(g[e.first].label()) << ", " << json_string(g[e.second].label()) << ']';
  });
  os << ",\n  \"modules\": ";
  json_array(os, info.modules, [&](const ModuleInfo& m) {
    os << "{\"address\": " << json_string(m.address) << ", \"type\": " << json_string(m.type)
       << ", \"num_passes\": " << m.num_passes << ", \"num_params\": " << m.num_params
       << ", \"exact\": " << b(m.exact) << "}";
  });
  os << ",\n  \"layers\": [\n";
  // the final output node (TorchLens's is_last_output_layer)
  Vertex last_output = static_cast<Vertex>(-1);
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].kind == NodeKind::output) last_output = v;
  }
  std::vector<Vertex> parents, children, siblings, spouses;
  std::vector<ModuleFrame> entered;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    const OpNode& n = g[v];
    const LayerView layer(log, v);
    parents.clear();
    children.clear();
    siblings.clear();
    spouses.clear();
    entered.clear();
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      parents.push_back(boost::source(e, g));
    }
    for (auto e : boost::make_iterator_range(boost::out_edges(v, g))) {
      const Vertex c = boost::target(e, g);
      children.push_back(c);
      // module calls this tensor enters: its child's frames it is not in
      for (const auto& f : g[c].modules) {
        if (!contains_frame(n.modules, f) && !contains_frame(entered, f)) entered.push_back(f);
      }
      for (auto pe : boost::make_iterator_range(boost::in_edges(c, g))) {
        const Vertex q = boost::source(pe, g);
        if (q != v && std::find(spouses.begin(), spouses.end(), q) == spouses.end()) {
          spouses.push_back(q);
        }
      }
    }
    for (Vertex p : parents) {
      for (auto ce : boost::make_iterator_range(boost::out_edges(p, g))) {
        const Vertex s2 = boost::target(ce, g);
        if (s2 != v && std::find(siblings.begin(), siblings.end(), s2) == siblings.end()) {
          siblings.push_back(s2);
        }
      }
    }
    const auto exited = modules_exited(n);
    if (v != 0) os << ",\n";
    os << "    {\"label\": " << json_string(n.label())
       << ", \"label_short\": " << json_string(n.label_short())
       << ", \"label_no_pass\": " << json_string(n.label_no_pass()) << ", \"ordinal\": " << v
       << ", \"id\": " << n.id << ", \"type\": " << json_string(n.layer_type)
       << ", \"type_num\": " << n.type_num << ", \"total_num\": " << n.total_num
       << ", \"op\": " << json_string(n.op_name) << ", \"overload\": " << json_string(n.overload)
       << ", \"pass\": " << n.pass_num << ", \"num_passes\": " << n.num_passes
       << ", \"equivalence_type\": " << json_string(n.equivalence_type)
       << ", \"module\": " << json_string(layer.module()) << ", \"modules\": ";
    json_array(os, n.modules, [&](const ModuleFrame& f) { os << json_string(module_pass_key(f)); });
    os << ", \"module_types\": ";
    json_array(os, n.modules, [&](const ModuleFrame& f) { os << json_string(f.type); });
    os << ", \"module_nesting_depth\": " << n.modules.size()
       << ", \"module_inferred\": " << b(n.module_inferred) << ", \"modules_entered\": ";
    json_array(os, entered, [&](const ModuleFrame& f) { os << json_string(module_pass_key(f)); });
    os << ", \"modules_exited\": ";
    json_array(os, exited, [&](const ModuleFrame& f) { os << json_string(module_pass_key(f)); });
    os << ", \"is_submodule_output\": " << b(!exited.empty())
       << ", \"is_leaf_module_output\": " << b(!exited.empty() && !n.modules.empty())
       << ", \"parents\": ";
    labels_json(os, g, parents);
    os << ", \"parent_arg_locs\": ";
    json_array(os, boost::make_iterator_range(boost::in_edges(v, g)), [&](const Edge& e) {
      os << "{\"parent\": " << json_string(g[boost::source(e, g)].label())
         << ", \"arg\": " << json_string(g[e].arg_name) << ", \"position\": " << g[e].arg_pos
         << ", \"index\": " << g[e].list_index << "}";
    });
    os << ", \"children\": ";
    labels_json(os, g, children);
    os << ", \"siblings\": ";
    labels_json(os, g, siblings);
    os << ", \"spouses\": ";
    labels_json(os, g, spouses);
    os << ", \"shape\": ";
    shape_json(os, n.shape);
    os << ", \"dtype\": " << json_string(n.dtype) << ", \"device\": " << json_string(n.device)
       << ", \"bytes\": " << n.bytes << ", \"requires_grad\": " << b(n.requires_grad)
       << ", \"grad_fn\": " << json_string(n.grad_fn) << ", \"params\": ";
    json_array(os, n.params, [&](const ParamRef& p) { os << json_string(p.address); });
    os << ", \"param_shapes\": ";
    json_array(os, n.params, [&](const ParamRef& p) { shape_json(os, p.shape); });
    os << ", \"args\": {";
    for (std::size_t i = 0; i < n.scalar_args.size(); ++i) {
      os << (i ? ", " : "") << json_string(n.scalar_args[i].name) << ": "
         << json_string(n.scalar_args[i].value);
    }
    os << "}, \"io_address\": " << json_string(n.io_address)
       << ", \"is_input\": " << b(n.kind == NodeKind::input)
       << ", \"is_output\": " << b(n.kind == NodeKind::output)
       << ", \"is_last_output\": " << b(v == last_output)
       << ", \"feeds_output\": " << b(n.feeds_output)
       << ", \"is_buffer\": " << b(n.kind == NodeKind::buffer)
       << ", \"buffer_pass\": " << n.buffer_pass << ", \"output_index\": " << n.output_index
       << ", \"num_outputs\": " << n.num_outputs << ", \"is_inplace\": " << b(n.is_inplace)
       << ", \"is_view\": " << b(n.is_view)
       << ", \"is_internally_generated\": " << b(n.is_internally_generated)
       << ", \"is_internally_terminated\": " << b(n.is_internally_terminated)
       << ", \"has_input_ancestor\": " << b(n.has_input_ancestor)
       << ", \"is_output_ancestor\": " << b(n.is_output_ancestor)
       << ", \"min_distance_from_input\": " << n.min_distance_from_input
       << ", \"max_distance_from_input\": " << n.max_distance_from_input
       << ", \"min_distance_from_output\": " << n.min_distance_from_output
       << ", \"max_distance_from_output\": " << n.max_distance_from_output
       << ", \"scalar_use\": " << json_string(to_string(n.scalar_use))
       << ", \"scalar_bool_value\": " << (n.scalar_bool_value ? b(*n.scalar_bool_value) : "null")
       << ", \"is_terminal_bool\": " << b(n.is_terminal_bool)
       << ", \"in_cond_branch\": " << b(n.in_cond_branch) << ", \"cond_branch_start_children\": ";
    std::vector<Vertex> if_children;
    for (const auto& [p, c] : if_edges) {
      if (p == v) if_children.push_back(c);
    }
    labels_json(os, g, if_children);
    os << ", \"time_us\": " << n.time_us
       << ", \"has_saved_activation\": " << b(n.has_saved_activation)
       << ", \"has_saved_gradient\": " << b(log.gradient(v).defined()) << ", \"interventions\": ";
    json_array(os, n.interventions, [&](const std::string& a) { os << json_string(a); });
    os << "}";
  }
  os << "\n  ]\n}\n";
}

} // namespace torchlens::io
