// Fuzz target for extract's index.json reader (what --resume trusts): any
// bytes must give a record or an ExtractError. A record that comes back must
// be one a run could have written (rows within 0..num_stimuli, no negative
// dimension, plain file names), and writing it out and reading it back must
// give the same record.

#include "scratch.hpp"

#include "../../src/extract/index.hpp"

#include <torchlens/extract/extract.hpp>

#include <cstdint>
#include <string_view>

namespace ex = torchlens::extract;

namespace {

bool same(const ex::index_file::Record& a, const ex::index_file::Record& b) {
  if (a.model != b.model || a.inputs != b.inputs || a.keys != b.keys ||
      a.batch_size != b.batch_size || a.seed != b.seed || a.num_stimuli != b.num_stimuli ||
      a.rows_done != b.rows_done || a.stimulus_shape != b.stimulus_shape ||
      a.stimulus_dtype != b.stimulus_dtype || a.layers.size() != b.layers.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.layers.size(); ++i) {
    const auto &x = a.layers[i], &y = b.layers[i];
    if (x.label != y.label || x.file != y.file || x.key != y.key || x.dtype != y.dtype ||
        x.shape != y.shape) {
      return false;
    }
  }
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ex::index_file::Record r;
  try {
    r = ex::index_file::read_index(torchlens::fuzz::write_scratch(bytes, "index.json"));
  } catch (const ex::ExtractError&) {
    return 0;
  }
  if (r.rows_done < 0 || r.rows_done > r.num_stimuli || r.batch_size <= 0) {
    torchlens::fuzz::fail("fuzz_index", "a record with counts out of range");
  }
  for (const auto& l : r.layers) {
    if (l.file.empty() || l.file.find('/') != std::string::npos) {
      torchlens::fuzz::fail("fuzz_index", "a layer file outside the folder");
    }
  }
  const std::string again = ex::index_file::index_json(r);
  try {
    if (!same(r, ex::index_file::read_index(torchlens::fuzz::write_scratch(again, "again.json")))) {
      torchlens::fuzz::fail("fuzz_index", "written and read back, the record differs");
    }
  } catch (const ex::ExtractError&) {
    torchlens::fuzz::fail("fuzz_index", "a record read back from its own JSON is refused");
  }
  return 0;
}
