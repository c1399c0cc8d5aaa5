// insert_after names a pass the pipeline does not hold.
// EXPECT: torchlens: the pipeline holds no pass of this type
// EXPECT: pass_not_in_pipeline<torchlens::passes::TrimOrphansPass
#include <torchlens/passes/all.hpp>

int main() {
  using namespace torchlens::passes;
  auto p = torchlens::make_pipeline(AddOutputNodesPass{})
               .insert_after<TrimOrphansPass>(ValidateGraphInvariantsPass{});
  (void)p;
}
