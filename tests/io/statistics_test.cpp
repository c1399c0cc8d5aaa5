// torchlens/extract/statistics.hpp: the per-layer statistics extract writes
// (--statistics), read back in C++, against the mean and variance of the
// layer file computed here; and the library's extraction of a sharded run.

#include <torchlens/extract/extract.hpp>
#include <torchlens/extract/shards.hpp>
#include <torchlens/extract/statistics.hpp>
#include <torchlens/io/npy.hpp>

#include <torch/script.h>
#include <torch/torch.h>
#include "support/doctest.hpp"

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace ex = torchlens::extract;
namespace fs = std::filesystem;

namespace {

torch::jit::Module small_model() {
  torch::manual_seed(0);
  torch::jit::Module m("Small");
  m.register_parameter("w", torch::randn({6, 4}), false);
  m.define(R"(
def forward(self, x):
    h = torch.relu(torch.matmul(x, self.w))
    return torch.tanh(h).sum(1)
)");
  m.eval();
  return m;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("torchlens-statistics-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

} // namespace

TEST_CASE("statistics: the mean and variance of every feature, read back") {
  auto model = small_model();
  const fs::path work = fresh_dir("plain");
  const at::Tensor x = torch::randn({37, 6});
  torchlens::io::write_npy((work / "x.npy").string(), x);
  const auto stimuli = ex::Stimuli::open((work / "x.npy").string());
  ex::ExtractOptions o;
  o.model_path = "small.pt";
  o.keys = {"relu"};
  o.batch_size = 8;
  o.out_dir = (work / "out").string();
  o.statistics = true;
  const auto r = ex::extract_to_dir(model, stimuli, o);
  REQUIRE(r.rows_done == 37);

  const auto all = ex::read_statistics(o.out_dir);
  REQUIRE(all.size() == 1);
  const auto s = ex::read_statistics(o.out_dir, "relu"); // by key
  CHECK(s.label == all[0].label);
  CHECK(s.count == 37);
  const at::Tensor acts =
      torchlens::io::read_npy((fs::path(o.out_dir) / (s.label + ".npy")).string()).to(at::kDouble);
  CHECK((s.mean.scalar_type() == at::kDouble));
  CHECK(s.mean.dim() == 1);
  CHECK(s.mean.size(0) == 4);
  CHECK(torch::allclose(s.mean, acts.mean(0), 1e-12, 1e-12));
  CHECK(torch::allclose(s.variance, acts.var(0, /*unbiased=*/false), 1e-12, 1e-12));
  // the values themselves: relu(x @ w)
  const at::Tensor want = torch::relu(torch::matmul(x, model.attr("w").toTensor()));
  CHECK(torch::allclose(acts, want.to(at::kDouble), 1e-6, 1e-6));

  CHECK_THROWS_WITH_AS(ex::read_statistics(o.out_dir, "nope"), doctest::Contains("no layer 'nope'"),
                       ex::ExtractError);
}

TEST_CASE("statistics: refused where none were written; shards merge to the same") {
  auto model = small_model();
  const fs::path work = fresh_dir("sharded");
  torchlens::io::write_npy((work / "x.npy").string(), torch::randn({30, 6}));
  const auto stimuli = ex::Stimuli::open((work / "x.npy").string());
  model.save((work / "small.pt").string()); // a sharded run's plan hashes the model file
  ex::ExtractOptions o;
  o.model_path = (work / "small.pt").string();
  o.keys = {"relu", "tanh"};
  o.batch_size = 4;
  o.out_dir = (work / "plain").string();
  ex::extract_to_dir(model, stimuli, o);
  CHECK_THROWS_WITH_AS(ex::read_statistics(o.out_dir), doctest::Contains("--statistics"),
                       ex::ExtractError);

  o.statistics = true;
  o.out_dir = (work / "unsharded").string();
  ex::extract_to_dir(model, stimuli, o);
  o.out_dir = (work / "sharded").string();
  for (std::int64_t k = 0; k < 3; ++k) {
    o.shard = ex::Shard{k, 3, "test"};
    const auto r = ex::extract_to_dir(model, stimuli, o);
    CHECK(r.shard_end - r.shard_begin ==
          ex::shard_rows(30, 4, k, 3).second - ex::shard_rows(30, 4, k, 3).first);
  }
  const auto m = ex::merge(o.out_dir);
  CHECK(m.layers_merged == 2);
  const auto a = ex::read_statistics((work / "unsharded").string());
  const auto b = ex::read_statistics(o.out_dir);
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].label == b[i].label);
    CHECK(torch::equal(a[i].mean, b[i].mean));
    CHECK(torch::equal(a[i].variance, b[i].variance));
  }
}

TEST_CASE("shards: the partition is contiguous, batch-aligned and covers every stimulus") {
  auto rows = [](std::int64_t n, std::int64_t b, std::int64_t k, std::int64_t c) {
    const auto [begin, end] = ex::shard_rows(n, b, k, c);
    return std::to_string(begin) + ".." + std::to_string(end);
  };
  CHECK(rows(50, 8, 0, 3) == "0..16");
  CHECK(rows(50, 8, 1, 3) == "16..32");
  CHECK(rows(50, 8, 2, 3) == "32..50");
  CHECK(rows(5, 32, 0, 2) == "0..0"); // one batch, two shards: the first is empty
  CHECK(rows(5, 32, 1, 2) == "0..5");
  for (std::int64_t n : {1, 7, 64, 1000, 1001}) {
    for (std::int64_t count : {1, 2, 3, 7, 16}) {
      std::int64_t next = 0;
      for (std::int64_t k = 0; k < count; ++k) {
        const auto [b, e] = ex::shard_rows(n, 8, k, count);
        CHECK(b == next);
        CHECK((b % 8 == 0 || b == n));
        next = e;
      }
      CHECK(next == n);
    }
  }
  // the launcher table, through a fake environment
  auto env = [](std::map<std::string, std::string> vars) {
    return [vars](const std::string& name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
  };
  auto s = ex::shard_from_environment(env({{"PMI_RANK", "2"}, {"PMI_SIZE", "5"}}));
  CHECK(s.index == 2);
  CHECK(s.count == 5);
  CHECK(s.source == "PMI_RANK=2 of PMI_SIZE=5");
  s = ex::shard_from_environment(env({}));
  CHECK(s.count == 1);
  CHECK(s.source.empty());
}
