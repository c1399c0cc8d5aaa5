#pragma once
/// \file
/// Extraction beyond one machine (docs/extract.md, "Shards"): the same
/// `torchlens extract` command run as N processes (a Slurm array, `srun`,
/// `mpirun`, GNU parallel), each writing one contiguous, batch-aligned block of
/// the stimuli into OUT/shards/, all checked against one plan (OUT/plan.json);
/// then merge() streams the shards into the files an unsharded run writes.

#include <torchlens/extract/extract.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace torchlens::extract {

/// `K/N` (0 <= K < N); throws ExtractError on anything else.
Shard parse_shard(const std::string& text);

/// Looks up an environment variable (std::getenv, or a map in tests).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
/// The process environment.
std::optional<std::string> process_env(const std::string& name);

/// The shard from a launcher's variables, in this order: a Slurm array
/// (`SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`),
/// Open MPI (`OMPI_COMM_WORLD_RANK`/`_SIZE`), MPICH/Hydra (`PMI_RANK`/`PMI_SIZE`),
/// PMIx (`PMIX_RANK`, the count from `SLURM_NTASKS`), `srun` tasks
/// (`SLURM_PROCID`/`SLURM_NTASKS`); 0 of 1 when none is set. Throws
/// ExtractError naming the variables when one is set but unusable (not a
/// number, a rank past the count, an array with a step).
Shard shard_from_environment(const EnvLookup& env = process_env);

/// The rows [begin, end) of shard `index` of `count` over `n` stimuli in
/// batches of `batch` (`min(batch, n)` rows): shard k gets the batches
/// [floor(k*B/count), floor((k+1)*B/count)) of the B batches, so every shard
/// runs exactly the batches an unsharded run does. A shard may be empty when
/// there are fewer batches than shards.
std::pair<std::int64_t, std::int64_t> shard_rows(std::int64_t n, std::int64_t batch,
                                                 std::int64_t index, std::int64_t count);

/// What merge() did.
struct MergeResult {
  std::int64_t num_stimuli = 0;
  std::int64_t num_shards = 0;
  std::vector<std::string> files; ///< the layer files, in index order
  std::int64_t layers_merged = 0; ///< this call (the others were already merged)
  std::uint64_t bytes_copied = 0; ///< this call
  bool already_complete = false;  ///< nothing was left to do
  double seconds = 0;
};

/// Streams OUT/shards/* into OUT/<label>.npy (`[N, ...]`) and OUT/index.json,
/// the files an unsharded run of the same command writes, byte for byte.
/// Refuses (ExtractError, one line) unless plan.json is there, every shard is
/// done under the same plan, and all shards ran the same graph (naming the
/// first differing op). Each layer file is written beside its final name and
/// renamed into place when complete; index.json is written last. Running it
/// again does nothing; an interrupted merge continues with the layers not yet
/// in place. `delete_shards`: remove OUT/shards after a complete merge.
MergeResult merge(const std::string& out_dir, bool delete_shards = false);

/// One shard as status() sees it.
struct ShardState {
  std::int64_t index = 0;
  std::int64_t begin = 0, end = 0; ///< its stimuli
  std::int64_t rows_done = 0;      ///< committed rows
  bool done = false;               ///< DONE written
  bool running = false;            ///< a process holds its lock now
  bool started = false;            ///< it has a progress record
};

/// A sharded extraction's state (`torchlens status OUT`).
struct RunStatus {
  std::int64_t num_stimuli = 0;
  std::int64_t num_shards = 0;
  std::int64_t rows_done = 0;
  std::vector<ShardState> shards;
  bool merged = false;
  /// Shards neither done nor running: the array indices to submit again.
  std::vector<std::int64_t> to_resubmit() const;
};

/// Reads OUT/plan.json and every shard's record; an unsharded run's folder
/// reads as one shard. Throws ExtractError when OUT is no extraction.
RunStatus status(const std::string& out_dir);

} // namespace torchlens::extract
