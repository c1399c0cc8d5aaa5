#pragma once
// Private to src/: log_forward_pass's post-processing, the default pass
// pipeline run on a freshly captured graph, with its result reused when the
// graph is one the pipeline has already labelled (docs/capture.md,
// "Post-processing reused").

#include <torchlens/graph/model_graph.hpp>
#include <torchlens/passes/group_recurrences.hpp>

#include <cstddef>

namespace torchlens::detail {

/// Runs the default pipeline (group-recurrences with `loops`) on `graph`, a
/// capture of the model whose root is `model`. With `reuse`, a thread keeps the
/// raw and labelled graphs of the model it captured last, once two captures in a
/// row gave raw graphs alike (the same fingerprint); a capture whose raw graph
/// equals the kept one field by field (every field but the op times and the
/// saved flags, which are taken from this capture) gets a copy of the kept
/// labelled graph instead of a pipeline run. Graphs of more than kReuseUpTo
/// vertices always run the pipeline.
void postprocess(ModelGraph& graph, const void* model, const passes::GroupRecurrencesOptions& loops,
                 bool reuse);

/// How many captures on this thread reused a labelled graph.
std::size_t postprocess_reuses_on_this_thread();

/// Largest raw graph whose post-processing is kept for reuse.
inline constexpr std::size_t kReuseUpTo = 4096;

} // namespace torchlens::detail
