// The examples of docs/pipeline.md, compiled and checked.
#include <torchlens/passes/all.hpp>

#include <support/graph_builders.hpp>

#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/reverse_graph.hpp>

#include "support/doctest.hpp"

#include <string>
#include <vector>

using namespace torchlens;
using namespace torchlens::testing;

// [docs:queries]
/// Vertices reachable from `from` (any graph BGL can search: the graph or its reverse).
template <class Graph>
std::vector<char> reachable(const Graph& g, Vertex from) {
  std::vector<int> dist(boost::num_vertices(g), -1);
  dist[from] = 0;
  boost::breadth_first_search(
      g, from,
      boost::visitor(boost::make_bfs_visitor(boost::record_distances(
          boost::make_iterator_property_map(dist.begin(), boost::get(boost::vertex_index, g)),
          boost::on_tree_edge()))));
  std::vector<char> seen(dist.size());
  for (std::size_t i = 0; i < dist.size(); ++i) seen[i] = dist[i] >= 0;
  return seen;
}

/// Number of conv2d ops on paths from layer `a` to layer `b` (labels).
inline int convolutions_between(const ModelGraph& g, const std::string& a, const std::string& b) {
  Vertex va = 0, vb = 0;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].label() == a) va = v;
    if (g[v].label() == b) vb = v;
  }
  const auto after_a = reachable(g, va);
  const auto before_b = reachable(boost::make_reverse_graph(g), vb);
  int count = 0;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    count += after_a[v] && before_b[v] && v != va && v != vb && g[v].layer_type == "conv2d";
  }
  return count;
}

/// Labels of pooling layers with a ReLU parent.
inline std::vector<std::string> pools_after_relu(const ModelGraph& g) {
  std::vector<std::string> out;
  for (auto v : boost::make_iterator_range(boost::vertices(g))) {
    if (g[v].layer_type.find("pool") == std::string::npos) continue;
    for (auto e : boost::make_iterator_range(boost::in_edges(v, g))) {
      if (g[boost::source(e, g)].layer_type == "relu") {
        out.push_back(g[v].label());
        break;
      }
    }
  }
  return out;
}
// [docs:queries]

namespace {
ModelGraph alexnet_features() {
  GraphBuilder b;
  Vertex cur = b.input();
  int conv = 0;
  for (const char* type : {"conv2d", "relu", "maxpool2d", "conv2d", "relu", "maxpool2d", "conv2d",
                           "relu", "conv2d", "relu", "avgpool2d"}) {
    const std::string t = type;
    OpSpec spec;
    if (t == "conv2d") spec.params = {"features." + std::to_string(conv++) + ".weight"};
    cur = b.op(t, {cur}, spec);
  }
  b.returns(cur);
  return b.build();
}
} // namespace

TEST_CASE("docs/pipeline.md queries") {
  ModelGraph g = alexnet_features();
  torchlens::run_default_pipeline(g);
  CHECK(g[7].label() == "conv2d_3_7"); // as in the TorchLens README
  CHECK(convolutions_between(g, "input_1", "output_1") == 4);
  CHECK(convolutions_between(g, "maxpool2d_1_3", "relu_3_8") == 2);
  CHECK(pools_after_relu(g) ==
        std::vector<std::string>{"maxpool2d_1_3", "maxpool2d_2_6", "avgpool2d_1_11"});
}

// [docs:custom-pass]
/// Options of mark-large: each declared once (accessors, member, default, visit).
struct MarkLargeTensorsOptions {
  TORCHLENS_OPTIONS((std::int64_t, min_bytes, 1 << 20));
};

/// Marks ops whose output is larger than a threshold (a user-written pass).
struct MarkLargeTensorsPass : torchlens::pass_info<MarkLargeTensorsPass, MarkLargeTensorsOptions> {
  using pass_info::pass_info; // options member and constructors from pass_info
  static constexpr std::string_view name = "mark-large";
  static constexpr std::string_view description = "count tensors above a byte threshold";
  using consumes = torchlens::facts::list<torchlens::facts::LayersLabeled>;
  using invalidates = torchlens::facts::none; // reads the graph only: every fact holds on
  static constexpr bool is_idempotent = true;

  torchlens::PassResult run(torchlens::ModelGraph& g, torchlens::PassContext&) const {
    torchlens::PassResult r;
    for (auto v : boost::make_iterator_range(boost::vertices(g))) {
      if (g[v].bytes >= options.min_bytes()) r.add("large tensors");
    }
    return r;
  }
};

TEST_CASE("docs/pipeline.md custom pass") {
  auto pipeline =
      torchlens::passes::default_pipeline().insert_after<torchlens::passes::LabelLayersPass>(
          MarkLargeTensorsPass{MarkLargeTensorsPass::Options().min_bytes(16)});
  torchlens::ModelGraph g = alexnet_features();
  auto records = pipeline.run(g);
  CHECK(records[9].name == "mark-large");
  CHECK(records[9].result.get("large tensors") == 13);
  CHECK(pipeline.to_string().ends_with(",label-layers,mark-large(min_bytes=16)"));
}
// [docs:custom-pass]
