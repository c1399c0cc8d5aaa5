// Swapping trim-orphans and mark-output-ancestry must not compile (STYLE §10 example).
// EXPECT: READ THIS IF YOUR COMPILE BREAKS HERE
// EXPECT: unmet_requirement<torchlens::passes::TrimOrphansPass,
// torchlens::facts::OutputAncestryMarked>
#include <torchlens/passes/all.hpp>

int main() {
  using namespace torchlens::passes;
  auto p =
      torchlens::make_pipeline(AddOutputNodesPass{}, TrimOrphansPass{}, MarkOutputAncestryPass{});
  (void)p;
}
