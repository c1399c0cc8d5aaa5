// JSON metadata of a log. Field names follow the CLI contract in docs/cli.md.

#include <torchlens/io/json.hpp>

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

} // namespace

void write_json(std::ostream& os, const ModelLog& log) {
  const GraphInfo& info = log.info();
  const ModelTotals t = log.totals();
  os << "{\n  \"model\": " << json_string(info.model_name) << ",\n";
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
  os << "  \"modules\": ";
  json_array(os, info.modules, [&](const ModuleInfo& m) {
    os << "{\"address\": " << json_string(m.address) << ", \"type\": " << json_string(m.type)
       << ", \"num_passes\": " << m.num_passes << ", \"num_params\": " << m.num_params << "}";
  });
  os << ",\n  \"layers\": [\n";
  bool first = true;
  for (auto layer : log) {
    const OpNode& n = layer.node();
    if (!first) os << ",\n";
    first = false;
    os << "    {\"label\": " << json_string(n.label)
       << ", \"label_short\": " << json_string(n.label_short)
       << ", \"type\": " << json_string(n.layer_type) << ", \"op\": " << json_string(n.op_name)
       << ", \"overload\": " << json_string(n.overload) << ", \"pass\": " << n.pass_num
       << ", \"num_passes\": " << n.num_passes << ", \"module\": " << json_string(layer.module())
       << ", \"modules\": ";
    json_array(os, n.modules, [&](const ModuleFrame& f) {
      os << json_string(f.address + ":" + std::to_string(f.pass));
    });
    os << ", \"module_types\": ";
    json_array(os, n.modules, [&](const ModuleFrame& f) { os << json_string(f.type); });
    os << ", \"parents\": ";
    json_array(os, layer.parents(), [&](const std::string& s) { os << json_string(s); });
    os << ", \"children\": ";
    json_array(os, layer.children(), [&](const std::string& s) { os << json_string(s); });
    os << ", \"shape\": ";
    shape_json(os, n.shape);
    os << ", \"dtype\": " << json_string(n.dtype) << ", \"device\": " << json_string(n.device)
       << ", \"bytes\": " << n.bytes << ", \"params\": ";
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
       << ", \"is_buffer\": " << b(n.kind == NodeKind::buffer)
       << ", \"is_internally_generated\": " << b(n.is_internally_generated)
       << ", \"is_inplace\": " << b(n.is_inplace)
       << ", \"is_terminal_bool\": " << b(n.is_terminal_bool)
       << ", \"in_cond_branch\": " << b(n.in_cond_branch) << ", \"time_us\": " << n.time_us
       << ", \"has_saved_activation\": " << b(n.has_saved_activation) << "}";
  }
  os << "\n  ]\n}\n";
}

} // namespace torchlens::io
