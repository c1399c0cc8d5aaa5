#pragma once
// Private to src/: index.json, the record of an extract run, written after
// every batch and read back on --resume (docs/extract.md). Split from
// extract.cpp so that its reader can be fuzzed on its own (tests/fuzz).

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace torchlens::extract::index_file {

/// What index.json records.
struct Record {
  std::string model, inputs;
  std::vector<std::string> keys;
  std::int64_t batch_size = 0, num_stimuli = 0, rows_done = 0;
  std::uint64_t seed = 0;
  std::vector<std::int64_t> stimulus_shape;
  std::string stimulus_dtype;
  std::string options;                   ///< Plan::options
  std::vector<std::string> stimulus_ids; ///< a folder's file names, in order
  struct Layer {
    std::string label, file, key, op, module, dtype;
    std::vector<std::int64_t> shape; // [N, ...]
    /// A per-stimulus gradient file (`<label>.grad.npy`; index.json's
    /// "gradients" list), not an activation ("layers").
    bool gradient = false;
  };
  /// The activations, then (ExtractOptions::gradients_of) the gradients.
  std::vector<Layer> layers;
};

/// OUT/plan.json: what every shard of a run must agree on, written once (by
/// whichever shard comes first) and compared by every shard, resume and merge.
struct Plan {
  std::string torchlens_version;
  std::string model, model_sha256, inputs;
  std::int64_t num_stimuli = 0, batch_size = 0, num_shards = 0;
  std::uint64_t seed = 0;
  std::vector<std::int64_t> stimulus_shape;
  std::string stimulus_dtype;
  std::vector<std::string> stimulus_ids; ///< a folder's file names, in order
  std::vector<std::string> keys;
  std::string options; ///< every other option that changes the files, canonical text
  std::vector<std::pair<std::int64_t, std::int64_t>> shards; ///< [begin, end) each
};
std::string plan_json(const Plan& p);
/// Throws ExtractError ("`what`: ...") when `path` is not a plan.
Plan read_plan(const std::filesystem::path& path, const std::string& what);
/// The first field in which `now` differs from `recorded`, as "the batch size
/// (8 in the plan, 16 now)"; empty when they agree.
std::string plan_difference(const Plan& recorded, const Plan& now);

/// OUT/shards/K-of-N/progress.json: one shard's committed rows.
struct ShardProgress {
  std::int64_t shard = 0, num_shards = 0, begin = 0, end = 0, rows_done = 0;
  std::string plan_sha256;      ///< of plan.json's text
  std::string structure_sha256; ///< of structure.txt ("" for an empty shard)
  struct Layer {
    std::string label, file, key, op, module, dtype;
    std::vector<std::int64_t> shape; // [end - begin, ...]
    bool gradient = false;           ///< as Record::Layer::gradient
  };
  std::vector<Layer> layers;
};
std::string progress_json(const ShardProgress& p);
ShardProgress read_progress(const std::filesystem::path& path, const std::string& what);

/// The JSON text of a record.
std::string index_json(const Record& r);

/// Reads a record; throws ExtractError ("cannot resume: ...", one line) for
/// anything that is not one a run could have written: not JSON, nested deeper
/// than any index, a field missing or of the wrong type, a count or dimension
/// out of range, a layer file that is not a plain name in the folder.
Record read_index(const std::filesystem::path& path);

} // namespace torchlens::extract::index_file
