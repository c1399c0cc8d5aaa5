#pragma once
/// \file
/// Linear probing over a power-of-two table, shared by torchlens's open-addressed
/// indexes (the name table, the module tree's children, the passes' FlatMap64):
/// each keeps its own slots and says when a slot ends the search (torch-free).

#include <cstddef>

namespace torchlens::detail {

/// The first slot index from `hash` (masked to a table of `size`, a power of
/// two) for which `stop(i)` holds: an empty slot, or one holding what is sought.
/// The table must have an empty slot (tables are kept at most half full).
template <class Stop>
std::size_t linear_probe(std::size_t hash, std::size_t size, Stop stop) {
  const std::size_t mask = size - 1;
  std::size_t i = hash & mask;
  while (!stop(i)) i = (i + 1) & mask;
  return i;
}

} // namespace torchlens::detail
