// DistancesComputed produced, dropped by trim-orphans, produced again, dropped by
// number-buffers: the error names the last pass that invalidated it.
// EXPECT: invalidated_requirement<NeedsDistancesPass, torchlens::facts::DistancesComputed,
// EXPECT: torchlens::facts::DistancesComputed, torchlens::passes::NumberBuffersPass>
#include <torchlens/passes/all.hpp>

struct NeedsDistancesPass : torchlens::pass_info<NeedsDistancesPass> {
  static constexpr std::string_view name = "needs-distances";
  static constexpr std::string_view description = "test";
  using consumes = torchlens::facts::list<torchlens::facts::DistancesComputed>;
  torchlens::PassResult run(torchlens::ModelGraph&, torchlens::PassContext&) const { return {}; }
};

int main() {
  using namespace torchlens::passes;
  auto p = torchlens::make_pipeline(
      AddOutputNodesPass{}, MarkOutputAncestryPass{}, ComputeDistancesPass{}, TrimOrphansPass{},
      ComputeDistancesPass{}, NumberBuffersPass{}, NeedsDistancesPass{});
  (void)p;
}
