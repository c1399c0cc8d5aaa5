#pragma once
// Private to src/: index.json, the record of an extract run, written after
// every batch and read back on --resume (docs/extract.md). Split from
// extract.cpp so that its reader can be fuzzed on its own (tests/fuzz).

#include <cstdint>
#include <filesystem>
#include <string>
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
  struct Layer {
    std::string label, file, key, op, module, dtype;
    std::vector<std::int64_t> shape; // [N, ...]
  };
  std::vector<Layer> layers;
};

/// The JSON text of a record.
std::string index_json(const Record& r);

/// Reads a record; throws ExtractError ("cannot resume: ...", one line) for
/// anything that is not one a run could have written: not JSON, nested deeper
/// than any index, a field missing or of the wrong type, a count or dimension
/// out of range, a layer file that is not a plain name in the folder.
Record read_index(const std::filesystem::path& path);

} // namespace torchlens::extract::index_file
