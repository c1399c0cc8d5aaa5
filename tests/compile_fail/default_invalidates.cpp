// The safe default: a pass that does not declare `invalidates` invalidates
// facts::Topology, so placed before trim-orphans (which consumes OutputAncestryMarked)
// it breaks the pipeline, and the error names it.
// EXPECT: torchlens: a pass consumes a fact that an earlier pass invalidated
// EXPECT: invalidated_requirement<torchlens::passes::TrimOrphansPass,
// EXPECT: torchlens::facts::OutputAncestryMarked, RenameOpsPass>
#include <torchlens/passes/all.hpp>

struct RenameOpsPass : torchlens::pass_info<RenameOpsPass> {
  static constexpr std::string_view name = "rename-ops";
  static constexpr std::string_view description = "says nothing about what it invalidates";
  torchlens::PassResult run(torchlens::ModelGraph&, torchlens::PassContext&) const { return {}; }
};

int main() {
  using namespace torchlens::passes;
  auto p = torchlens::make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, RenameOpsPass{},
                                    TrimOrphansPass{});
  (void)p;
}
