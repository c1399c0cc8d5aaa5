#pragma once
/// \file
/// Linear probing over a power-of-two table, shared by torchlens's open-addressed
/// indexes (the name table, the module tree's children, the passes' FlatMap64):
/// each keeps its own slots and says when a slot ends the search (torch-free).

#include <cstddef>
#include <cstdint>

namespace torchlens::detail {

/// murmur3's 64-bit finaliser: every input bit reaches the low bits a table
/// mask keeps.
constexpr std::uint64_t mix_hash(std::uint64_t h) noexcept {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

/// The first slot index from `hash` (mixed, then masked to a table of `size`, a
/// power of two) for which `stop(i)` holds: an empty slot, or one holding what
/// is sought. The table must have an empty slot (tables are kept at most half
/// full). The mix matters: hashes built from counters and addresses (a module's
/// pass number, a parent's id) come in runs, and masked as they are, runs
/// from different keys land on overlapping stretches of slots, where linear
/// probing walks the whole stretch on every look-up (quadratic in the table).
template <class Stop>
std::size_t linear_probe(std::size_t hash, std::size_t size, Stop stop) {
  const std::size_t mask = size - 1;
  std::size_t i = static_cast<std::size_t>(mix_hash(hash)) & mask;
  while (!stop(i)) i = (i + 1) & mask;
  return i;
}

} // namespace torchlens::detail
