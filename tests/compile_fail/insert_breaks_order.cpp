// Inserting a pass re-validates the pipeline: label-layers before group-recurrences fails.
// EXPECT: unmet_requirement<torchlens::passes::LabelLayersPass,
// torchlens::facts::RecurrencesGrouped>
#include <torchlens/passes/all.hpp>

int main() {
  using namespace torchlens::passes;
  auto p = default_pipeline().insert_before<InferModulesPass>(LabelLayersPass{});
  (void)p;
}
