#pragma once
// Private to src/extract: file descriptors that never write through a symbolic
// link, whole-buffer pread/pwrite, flushes, atomic replacement of small
// records, and the crash-safe .npy header of a growing file.

#include "../io/dtypes.hpp"

#include <torchlens/extract/extract.hpp>
#include <torchlens/torch_error.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace torchlens::extract::detail_io {

namespace fs = std::filesystem;

inline std::string errno_text() {
  return std::strerror(errno);
}

/// An open file descriptor, closed on scope exit.
class Fd {
 public:
  Fd() = default;
  /// Opens `path`, never through a symbolic link: a link planted in the output
  /// folder must not make torchlens write somewhere else.
  Fd(const std::string& path, int flags) : path_(path) {
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(path, ec))) {
      throw ExtractError("refusing to write through the symbolic link " + path);
    }
    fd_ = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0) throw ExtractError("cannot open " + path + ": " + errno_text());
  }
  Fd(Fd&& o) noexcept : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      close_();
      path_ = std::move(o.path_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { close_(); }

  int get() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }

  void pwrite_all(const void* data, std::size_t n, std::size_t offset) const {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        throw TorchError(TORCHLENS_HERE, "writing " + path_ + " failed: " + errno_text());
      }
      p += w;
      n -= static_cast<std::size_t>(w);
      offset += static_cast<std::size_t>(w);
    }
  }
  void pread_all(void* data, std::size_t n, std::size_t offset) const {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw ExtractError(path_ + " is shorter than its .npy header says");
      p += r;
      n -= static_cast<std::size_t>(r);
      offset += static_cast<std::size_t>(r);
    }
  }
  void sync() const {
    if (::fdatasync(fd_) != 0)
      throw TorchError(TORCHLENS_HERE, "flushing " + path_ + " failed: " + errno_text());
  }
  void truncate(std::size_t size) const {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      throw TorchError(TORCHLENS_HERE, "truncating " + path_ + " failed: " + errno_text());
    }
  }
  /// An exclusive advisory lock (flock) without waiting; false when another
  /// process holds it. Released when the descriptor closes (or the process dies).
  bool try_lock() const { return ::flock(fd_, LOCK_EX | LOCK_NB) == 0; }

 private:
  void close_() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::string path_;
  int fd_ = -1;
};

/// Flushes a folder, so that a rename or a new file in it reaches the disk.
inline void sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

/// Writes `text` to `path` atomically: a temp file, flushed, renamed over it.
inline void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    Fd f(tmp.string(), O_WRONLY | O_CREAT | O_TRUNC);
    f.pwrite_all(text.data(), text.size(), 0);
    f.sync();
  }
  fs::rename(tmp, path);
  sync_dir(path.parent_path());
}

/// Creates `path` holding `text` unless it exists (atomically, also against
/// other processes doing the same); true when this call created it.
inline bool create_once(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".new." + std::to_string(::getpid());
  {
    Fd f(tmp.string(), O_WRONLY | O_CREAT | O_TRUNC);
    f.pwrite_all(text.data(), text.size(), 0);
    f.sync();
  }
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  std::error_code ec;
  fs::remove(tmp, ec);
  if (rc != 0 && err != EEXIST) {
    throw ExtractError("cannot create " + path.string() + ": " + std::strerror(err));
  }
  sync_dir(path.parent_path());
  return rc == 0;
}

/// The whole content of a small file.
inline std::string read_text(const fs::path& path) {
  Fd f(path.string(), O_RDONLY);
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw ExtractError("cannot read " + path.string() + ": " + ec.message());
  std::string s(static_cast<std::size_t>(size), '\0');
  if (size > 0) f.pread_all(s.data(), s.size(), 0);
  return s;
}

/// The header of a .npy file that grows: `npy_header(descr, [rows, ...])`
/// padded with spaces to `length` bytes (the length of the header for the
/// file's final row count), so that it can be rewritten in place after every
/// committed batch and the file never claims rows that are not on disk
/// (numpy reserves room the same way for growing files).
std::string growing_npy_header(const std::string& descr, std::vector<std::int64_t> shape,
                               std::int64_t rows, std::size_t length);

/// The .npy descriptor of a type extract writes (bfloat16 widened).
std::string npy_descr_of(c10::ScalarType t);

} // namespace torchlens::extract::detail_io

namespace torchlens::extract::detail_io {

/// extract_to_dir for one shard of a sharded run (shards.cpp).
ExtractResult extract_shard(const MakeExtractor& make, const Stimuli& stimuli,
                            const ExtractOptions& options);

/// Every option besides keys, batch size and seed that changes what is
/// written, as canonical text (recorded in the plan and index.json).
std::string options_text(const ExtractOptions& options, const Stimuli& stimuli);

/// How a layer is written (ExtractOptions::dtype, flatten): its type, its
/// shape ([rows, ...]), and a batch of its activations.
c10::ScalarType written_type(c10::ScalarType computed, const ExtractOptions& options);
std::vector<std::int64_t> written_shape(std::vector<std::int64_t> shape,
                                        const ExtractOptions& options);
at::Tensor as_written(const at::Tensor& t, const ExtractOptions& options);

/// Writes `<stem>.mean.npy` and `<stem>.var.npy` beside each finished layer
/// file of `dir` (ExtractOptions::statistics), in one streaming pass over it.
void write_statistics(const fs::path& dir, const std::vector<std::string>& files);
/// Whether they are there for every file.
bool statistics_present(const fs::path& dir, const std::vector<std::string>& files);

/// A path as recorded (absolute, normalised when possible).
std::string absolute_text(const std::string& p);

/// Checks ExtractOptions::gradients_of and targets against the stimuli
/// (ExtractError: targets without loss:cross_entropy or the reverse, targets
/// that are not [N] integers).
void check_gradient_options(const ExtractOptions& options, const Stimuli& stimuli);
/// The targets of stimuli [start, start + count), or undefined without them.
at::Tensor batch_targets(const ExtractOptions& options, std::int64_t start, std::int64_t count);
/// The file of a layer: `<stem>.npy`, or `<stem>.grad.npy` for its gradient.
std::string layer_file(const std::string& label, bool gradient);

/// The records of the files a run writes for `layers` over `rows` stimuli: the
/// activations, then (with gradients_of) their gradients. `Layer` is the
/// index's or a shard's progress record; both have these fields.
template <class Layer>
std::vector<Layer> layer_records(const std::vector<ExtractLayer>& layers, const ExtractOptions& o,
                                 std::int64_t rows) {
  std::vector<Layer> out;
  for (const bool gradient : {false, true}) {
    if (gradient && !o.gradients_of) break;
    for (const auto& l : layers) {
      Layer r;
      r.label = l.label;
      r.file = layer_file(l.label, gradient);
      r.key = l.key;
      r.op = l.op;
      r.module = l.module;
      r.dtype = io::dtypes::name(written_type(l.dtype, o));
      r.shape = written_shape(l.shape, o);
      r.shape[0] = rows;
      r.gradient = gradient;
      out.push_back(std::move(r));
    }
  }
  return out;
}

} // namespace torchlens::extract::detail_io
