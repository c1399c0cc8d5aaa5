#pragma once
/// \file
/// Registry of the standard passes and the default pipeline. Adding a pass:
/// one header, one test, one doc page, and one line here (see passes/README.md).

#include <torchlens/pipeline/pipeline.hpp>

#include <torchlens/passes/add_output_nodes.hpp>
#include <torchlens/passes/compute_distances.hpp>
#include <torchlens/passes/detect_conditionals.hpp>
#include <torchlens/passes/group_recurrences.hpp>
#include <torchlens/passes/infer_modules.hpp>
#include <torchlens/passes/label_layers.hpp>
#include <torchlens/passes/mark_output_ancestry.hpp>
#include <torchlens/passes/number_buffers.hpp>
#include <torchlens/passes/roll_graph.hpp> // RolledGraphAnalysis (the view: graph/rolled.hpp)
#include <torchlens/passes/trim_orphans.hpp>
#include <torchlens/passes/validate_graph_invariants.hpp>

#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>

#include <vector>

namespace torchlens::passes {

/// Every standard pass type, in default-pipeline order (the registry).
inline constexpr auto all_passes =
    boost::hana::tuple_t<AddOutputNodesPass,         // add-output-nodes
                         MarkOutputAncestryPass,     // mark-output-ancestry
                         TrimOrphansPass,            // trim-orphans
                         NumberBuffersPass,          // number-buffers
                         ComputeDistancesPass,       // distances
                         DetectConditionalsPass,     // conditionals
                         InferModulesPass,           // infer-modules
                         GroupRecurrencesPass,       // group-recurrences
                         LabelLayersPass,            // label-layers
                         ValidateGraphInvariantsPass // validate
                         >;

/// The default postprocessing pipeline (what run_default_pipeline runs):
/// `add-output-nodes,mark-output-ancestry,trim-orphans,number-buffers,compute-distances,
/// detect-conditionals,infer-modules,group-recurrences,label-layers`.
/// Invariant checks are opt-in, as TorchLens's TORCHLENS_POSTPROCESS_ASSERTIONS:
/// checked_pipeline(), or verify_after_each_pass() as a hook.
/// With `loops`, group-recurrences runs with those options (the same passes,
/// the same pipeline type).
inline auto default_pipeline(const GroupRecurrencesOptions& loops = {}) {
  return make_pipeline(AddOutputNodesPass{}, MarkOutputAncestryPass{}, TrimOrphansPass{},
                       NumberBuffersPass{}, ComputeDistancesPass{}, DetectConditionalsPass{},
                       InferModulesPass{}, GroupRecurrencesPass{loops}, LabelLayersPass{});
}

/// Type of default_pipeline().
using DefaultPipeline = decltype(default_pipeline());

/// default_pipeline() followed by the validate pass.
inline auto checked_pipeline(const GroupRecurrencesOptions& loops = {}) {
  return default_pipeline(loops).append(ValidateGraphInvariantsPass{});
}

} // namespace torchlens::passes

namespace torchlens {

/// Runs the default pipeline on a freshly captured graph; returns per-pass records.
/// With `validate`, validate-graph-invariants runs last (throws InvariantError on a broken graph).
inline std::vector<PassRecord> run_default_pipeline(ModelGraph& g, bool validate = false) {
  if (validate) return passes::checked_pipeline().run(g);
  return passes::default_pipeline().run(g);
}

/// Runs the default pipeline with group-recurrences' options `loops`
/// (LogOptions::detect_loops and min_param_free_loop_body come here).
inline std::vector<PassRecord> run_default_pipeline(ModelGraph& g,
                                                    const passes::GroupRecurrencesOptions& loops,
                                                    bool validate = false) {
  if (validate) return passes::checked_pipeline(loops).run(g);
  return passes::default_pipeline(loops).run(g);
}

/// Runs the default pipeline with a caller-provided context (hooks, analyses).
inline void run_default_pipeline(ModelGraph& g, PassContext& ctx) {
  passes::default_pipeline().run(g, ctx);
}

} // namespace torchlens
