#pragma once
// Private to src/extract: image-folder stimuli (JPEG through libjpeg-turbo,
// PNG through libpng) and torchvision's preprocessing (ImageOptions).

#include <torchlens/extract/extract.hpp>

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>

namespace torchlens::extract::detail_io {

/// `.jpg`, `.jpeg` or `.png`, in any case.
bool is_image_file(const std::filesystem::path& p);

/// The image's pixels as `[H, W, 3]` uint8 RGB (grey replicated, alpha dropped
/// as Pillow's `convert("RGB")` does); throws ExtractError naming the file.
at::Tensor decode_image(const std::string& path);

/// Decoded and preprocessed: `[3, H, W]` float32 (ImageOptions).
at::Tensor load_image(const std::string& path, const ImageOptions& options);

} // namespace torchlens::extract::detail_io
