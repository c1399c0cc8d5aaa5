// Only passes go into a pipeline.
// EXPECT: torchlens: this type is not a pass
// EXPECT: not_a_pass<int>
#include <torchlens/pipeline/pipeline.hpp>

int main() {
  auto p = torchlens::make_pipeline(42);
  (void)p;
}
