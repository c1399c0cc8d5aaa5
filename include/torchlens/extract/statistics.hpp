#pragma once
/// \file
/// Per-layer statistics of an extraction (`torchlens extract --statistics`,
/// docs/extract.md): the mean and variance of every feature of a layer over
/// all N stimuli, as written beside the activations. Interventions read them
/// (mean ablation replaces an activation by its mean over a stimulus set).
///
/// On disk, beside `OUT/<stem>.npy`: `OUT/<stem>.mean.npy` and
/// `OUT/<stem>.var.npy`, float64, the shape of one row (`[C, H, W]`, or `[F]`
/// with --flatten); the variance is the population one (ddof = 0, numpy's
/// default). They are computed once the layer file is complete, in one
/// streaming pass over it in double precision (blocks merged with Chan et
/// al.'s update), so a sharded run merged and an unsharded run agree.

#include <torchlens/extract/extract.hpp>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchlens::extract {

/// One layer's statistics.
struct LayerStatistics {
  std::string label;      ///< the layer's final label (`conv2d_1_1`)
  std::string key;        ///< the --save key that selected it
  std::int64_t count = 0; ///< stimuli they are over (N)
  at::Tensor mean;        ///< float64, one row's shape
  at::Tensor variance;    ///< float64, one row's shape, ddof = 0
};

/// Every layer's statistics from a finished extraction folder (index.json
/// complete, run with --statistics), in index order. Throws ExtractError
/// naming what is missing.
std::vector<LayerStatistics> read_statistics(const std::string& out_dir);

/// One layer's, by label or by the --save key that selected it (the first
/// layer of that key).
LayerStatistics read_statistics(const std::string& out_dir, const std::string& layer);

} // namespace torchlens::extract
