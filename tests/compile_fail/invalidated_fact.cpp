// DistancesComputed computed before trim-orphans are invalidated (facts::Topology), so a
// later consumer of DistancesComputed does not compile; the error names trim-orphans.
// EXPECT: torchlens: a pass consumes a fact that an earlier pass invalidated
// EXPECT: invalidated_requirement<NeedsDistancesPass, torchlens::facts::DistancesComputed,
// EXPECT: torchlens::facts::DistancesComputed, torchlens::passes::TrimOrphansPass>
#include <torchlens/passes/all.hpp>

struct NeedsDistancesPass : torchlens::pass_info<NeedsDistancesPass> {
  static constexpr std::string_view name = "needs-distances";
  static constexpr std::string_view description = "test";
  using consumes = torchlens::facts::list<torchlens::facts::DistancesComputed>;
  torchlens::PassResult run(torchlens::ModelGraph&, torchlens::PassContext&) const { return {}; }
};

int main() {
  using namespace torchlens::passes;
  auto p =
      torchlens::make_pipeline(AddOutputNodesPass{}, ComputeDistancesPass{},
                               MarkOutputAncestryPass{}, TrimOrphansPass{}, NeedsDistancesPass{});
  (void)p;
}
