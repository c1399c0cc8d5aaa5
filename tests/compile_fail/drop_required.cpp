// A required pass cannot be dropped.
// EXPECT: torchlens: drop<P>() names a required pass
#include <torchlens/passes/all.hpp>

int main() {
  auto p = torchlens::passes::default_pipeline().drop<torchlens::passes::TrimOrphansPass>();
  (void)p;
}
