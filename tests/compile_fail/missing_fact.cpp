// trim-orphans consumes OutputAncestryMarked; nothing produces it before.
// EXPECT: torchlens: a pass consumes a fact that no earlier pass produces
// EXPECT: unmet_requirement<torchlens::passes::TrimOrphansPass,
// torchlens::facts::OutputAncestryMarked>
#include <torchlens/passes/all.hpp>

int main() {
  auto p = torchlens::make_pipeline(torchlens::passes::AddOutputNodesPass{},
                                    torchlens::passes::TrimOrphansPass{});
  (void)p;
}
