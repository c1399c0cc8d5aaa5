// Image-folder stimuli: decoding with Debian's libjpeg-turbo and libpng (the
// libraries Pillow and torchvision.io decode with, so the pixels are theirs),
// then torchvision's Resize / CenterCrop / ToTensor / Normalize in LibTorch ops.

#include "images.hpp"

#include "fileio.hpp"

#include <ATen/Functions.h>

#include <jpeglib.h>
// after jpeglib.h, which it needs
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <vector>

namespace torchlens::extract {

namespace {

/// The shortest text that reads back as the same double.
std::string number(double d) {
  std::array<char, 32> buf{};
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), d);
  return std::string(buf.data(), r.ptr);
}

} // namespace

std::string ImageOptions::text() const {
  std::string s = "images: resize=" + std::to_string(resize) + " crop=" + std::to_string(crop);
  s += " mean=" + number(mean[0]) + "," + number(mean[1]) + "," + number(mean[2]);
  s += " std=" + number(std[0]) + "," + number(std[1]) + "," + number(std[2]);
  s += std::string(" channels=") + (bgr ? "bgr" : "rgb");
  return s;
}

namespace detail_io {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  Fd f(path, O_RDONLY);
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw ExtractError("cannot read " + path + ": " + ec.message());
  std::vector<unsigned char> data(static_cast<std::size_t>(size));
  if (!data.empty()) f.pread_all(data.data(), data.size(), 0);
  return data;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

/// Warnings are quiet, except a truncated file: Pillow refuses it ("image
/// file is truncated"), libjpeg would fill the rest with grey.
void jpeg_quiet(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

/// libjpeg reports errors by longjmp: nothing with a destructor lives between
/// the setjmp and the calls that may jump (the pixels are the caller's).
bool jpeg_decode(const std::vector<unsigned char>& data, std::vector<unsigned char>& pixels,
                 int& width, int& height, char* message) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  if (setjmp(err.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data.data(), static_cast<unsigned long>(data.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB; // grey is replicated; CMYK is refused
  jpeg_start_decompress(&cinfo);
  width = static_cast<int>(cinfo.output_width);
  height = static_cast<int>(cinfo.output_height);
  if (pixels.size() < static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3) {
    // too small: the caller sizes it from the header and calls again
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels.data() + static_cast<std::size_t>(cinfo.output_scanline) *
                                       static_cast<std::size_t>(width) * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

at::Tensor decode_jpeg(const std::string& path) {
  const auto data = read_bytes(path);
  std::vector<unsigned char> pixels;
  int w = 0, h = 0;
  char message[JMSG_LENGTH_MAX] = {0};
  // first the header (pixels empty), then the pixels
  if (!jpeg_decode(data, pixels, w, h, message) || w <= 0 || h <= 0) {
    throw ExtractError("cannot decode the JPEG " + path + ": " +
                       (message[0] ? message : "no image"));
  }
  pixels.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  if (!jpeg_decode(data, pixels, w, h, message)) {
    throw ExtractError("cannot decode the JPEG " + path + ": " + message);
  }
  return at::from_blob(pixels.data(), {h, w, 3}, at::TensorOptions().dtype(at::kByte)).clone();
}

at::Tensor decode_png(const std::string& path) {
  const auto data = read_bytes(path);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_memory(&image, data.data(), data.size()) == 0) {
    const std::string why = image.message;
    png_image_free(&image);
    throw ExtractError("cannot decode the PNG " + path + ": " + why);
  }
  image.format = PNG_FORMAT_RGBA; // then alpha dropped, as Pillow's convert("RGB")
  at::Tensor rgba = at::empty(
      {static_cast<std::int64_t>(image.height), static_cast<std::int64_t>(image.width), 4},
      at::TensorOptions().dtype(at::kByte));
  if (png_image_finish_read(&image, nullptr, rgba.data_ptr(), 0, nullptr) == 0) {
    const std::string why = image.message;
    png_image_free(&image);
    throw ExtractError("cannot decode the PNG " + path + ": " + why);
  }
  return rgba.narrow(2, 0, 3).contiguous();
}

} // namespace

bool is_image_file(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".jpg" || e == ".jpeg" || e == ".png";
}

at::Tensor decode_image(const std::string& path) {
  const std::string e = lower(fs::path(path).extension().string());
  return e == ".png" ? decode_png(path) : decode_jpeg(path);
}

at::Tensor load_image(const std::string& path, const ImageOptions& o) {
  // ToTensor: [3, H, W] in [0, 1]
  at::Tensor x = decode_image(path).permute({2, 0, 1}).to(at::kFloat).div(255);
  std::int64_t h = x.size(1), w = x.size(2);
  if (o.resize > 0) { // Resize(int): the shorter side, the longer truncated as Python's int()
    const bool wide = w > h;
    const std::int64_t shorter = wide ? h : w, longer = wide ? w : h;
    const auto new_long = static_cast<std::int64_t>(static_cast<double>(o.resize * longer) /
                                                    static_cast<double>(shorter));
    const std::int64_t nh = wide ? o.resize : new_long, nw = wide ? new_long : o.resize;
    if (nh != h || nw != w) {
      x = at::_upsample_bilinear2d_aa(x.unsqueeze(0), {nh, nw}, /*align_corners=*/false,
                                      c10::nullopt, c10::nullopt)
              .squeeze(0);
      h = nh;
      w = nw;
    }
  }
  if (o.crop > 0) {
    if (o.crop > h || o.crop > w) {
      throw ExtractError("image " + path + " is " + std::to_string(w) + "x" + std::to_string(h) +
                         " after resizing, smaller than the crop " + std::to_string(o.crop));
    }
    // torchvision: int(round((h - crop) / 2.0)), round half to even
    const auto top =
        static_cast<std::int64_t>(std::nearbyint(static_cast<double>(h - o.crop) / 2.0));
    const auto left =
        static_cast<std::int64_t>(std::nearbyint(static_cast<double>(w - o.crop) / 2.0));
    x = x.narrow(1, top, o.crop).narrow(2, left, o.crop);
  }
  const at::Tensor mean = at::tensor({o.mean[0], o.mean[1], o.mean[2]}, at::kFloat).view({3, 1, 1});
  const at::Tensor std = at::tensor({o.std[0], o.std[1], o.std[2]}, at::kFloat).view({3, 1, 1});
  x = x.sub(mean).div(std);
  if (o.bgr) x = x.flip({0});
  return x.contiguous();
}

} // namespace detail_io

} // namespace torchlens::extract
