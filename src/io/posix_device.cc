// PosixDevice: a regular file or a block device. The only code in wbfs that
// calls pread, pwrite, fdatasync and ioctl. With O_DIRECT it owns alignment:
// unaligned reads go through an aligned bounce buffer, unaligned writes are
// refused (the engine only writes whole 4 KiB blocks to a direct device).
//
// A device opened buffered (the backing, the journal) still moves *bulk*
// transfers (aligned, at least kBulk bytes: writeback's windows and runs,
// journal entries) through a second, O_DIRECT descriptor: such data is
// read once and written once, so the host's page cache gains nothing from
// it, and buffered reads of it would come in readahead-sized requests (a
// disk that pays per request pays many times). The kernel keeps the two
// descriptors coherent: a direct read first writes back dirty cached pages
// of its range, a direct write drops them. Small and unaligned I/O (a user
// read of a missed block, a write around the cache) stays buffered.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/sysmacros.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "io/busy_timer.h"
#include "wbfs/device.h"

namespace wbfs {
namespace {

constexpr size_t kDirectAlign = 4096;
constexpr size_t kBulk = 128 << 10;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

class PosixDevice final : public Device {
 public:
  PosixDevice(std::string path, int fd, int bulk_fd, uint64_t size, bool direct, bool block_device,
              std::string stat_path)
      : path_(std::move(path)),
        fd_(fd),
        bulk_fd_(bulk_fd),
        size_(size),
        direct_(direct),
        block_(block_device),
        stat_path_(std::move(stat_path)) {}
  ~PosixDevice() override {
    ::close(fd_);
    if (bulk_fd_ >= 0) ::close(bulk_fd_);
  }

  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    if (direct_ && !Aligned(off, buf, len)) return BounceRead(off, buf, len);
    return FullRead(Fd(off, buf, len), off, buf, len);
  }

  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    if (direct_ && !Aligned(off, buf, len)) {
      if (off % kDirectAlign != 0 || len % kDirectAlign != 0) {
        return Status::InvalidArgument(path_ + ": unaligned write to a direct-I/O device");
      }
      std::unique_ptr<void, FreeDeleter> bounce(AllocAligned(len));
      if (!bounce) return Status::IOError(path_ + ": out of memory", ENOMEM);
      std::memcpy(bounce.get(), buf, len);
      return FullWrite(fd_, off, bounce.get(), len);
    }
    return FullWrite(Fd(off, buf, len), off, buf, len);
  }

  Status Sync() override {
    BusyTimer t(&busy_ns_);
    if (::fdatasync(fd_) != 0) return PosixError(path_ + ": fdatasync", errno);
    return Status::OK();
  }

  // The range must read as zeros afterwards (the engine drops its zero
  // overlay once this returns), so never BLKDISCARD: a discard is a hint
  // that a disk may ignore or apply lazily, leaving old data readable.
  // fallocate(PUNCH_HOLE) guarantees zeros, on a file and on a block device
  // (there it unmaps only where the device zeroes, otherwise it fails);
  // then ZERO_RANGE, BLKZEROOUT (block devices: zeroes, writing them if
  // need be), and last writing zeros here.
  Status Discard(uint64_t off, uint64_t len) override {
    if (len == 0) return Status::OK();
    const auto o = static_cast<off_t>(off), l = static_cast<off_t>(len);
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return Status::OK();
    if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return Status::OK();
    if (block_) {
      uint64_t range[2] = {off, len};
      if (::ioctl(fd_, BLKZEROOUT, range) == 0) return Status::OK();
    }
    // Not supported here: write zeros instead.
    constexpr size_t kChunk = 1 << 20;
    std::unique_ptr<void, FreeDeleter> zeros(AllocAligned(kChunk));
    if (!zeros) return Status::IOError(path_ + ": out of memory", ENOMEM);
    std::memset(zeros.get(), 0, kChunk);
    while (len > 0) {
      size_t n = len < kChunk ? static_cast<size_t>(len) : kChunk;
      WBFS_RETURN_IF_ERROR(WriteAt(off, zeros.get(), n));
      off += n;
      len -= n;
    }
    return Status::OK();
  }

  // A regular file's current size (a journal grows as it is written).
  uint64_t Size() const override {
    struct stat st;
    if (!block_ && ::fstat(fd_, &st) == 0) return static_cast<uint64_t>(st.st_size);
    return size_;
  }
  bool Grows() const override { return !block_; }
  std::string Name() const override { return path_; }

  // A hole is a range with no storage (writing it allocates). FIEMAP
  // first: it tells holes from fallocated (unwritten) extents, which
  // SEEK_HOLE reports as holes on ext4 and XFS but which writing does not
  // allocate (gap filling over them costs no space, and a fallocated
  // backing keeps its large sequential writes). Then SEEK_HOLE/SEEK_DATA
  // (tmpfs has no FIEMAP); a file system with neither reports the whole
  // file as data, as does a block device.
  Extent ExtentAt(uint64_t off) const override {
    const uint64_t size = Size();
    if (block_ || off >= size) return {false, size};
    constexpr unsigned kExtents = 16;
    alignas(struct fiemap) char buf[sizeof(struct fiemap) + kExtents * sizeof(struct fiemap_extent)] = {};
    auto* fm = reinterpret_cast<struct fiemap*>(buf);
    fm->fm_start = off;
    fm->fm_length = size - off;
    fm->fm_extent_count = kExtents;
    if (::ioctl(fd_, FS_IOC_FIEMAP, fm) == 0) {
      uint64_t at = off;  // [off, at) is data
      for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
        const struct fiemap_extent& e = fm->fm_extents[i];
        if (e.fe_logical > at) {
          return at > off ? Extent{false, at} : Extent{true, std::min<uint64_t>(e.fe_logical, size)};
        }
        at = std::max<uint64_t>(at, e.fe_logical + e.fe_length);
        if (e.fe_flags & FIEMAP_EXTENT_LAST) break;
      }
      return at > off ? Extent{false, std::min(at, size)} : Extent{true, size};
    }
    const off_t h = ::lseek(fd_, static_cast<off_t>(off), SEEK_HOLE);
    if (h < 0) return {false, size};
    if (static_cast<uint64_t>(h) > off) return {false, std::min<uint64_t>(static_cast<uint64_t>(h), size)};
    const off_t d = ::lseek(fd_, static_cast<off_t>(off), SEEK_DATA);
    if (d < 0) return {true, size};  // ENXIO: a hole up to the end
    return {true, std::min<uint64_t>(static_cast<uint64_t>(d), size)};
  }

  uint64_t BusyMillis() const override {
    if (!stat_path_.empty()) {
      // /sys/dev/block/M:m/stat: the 10th field is io_ticks in ms.
      std::ifstream in(stat_path_);
      uint64_t v = 0;
      for (int i = 0; i < 10 && (in >> v); i++) {
      }
      if (in) return v;
    }
    return busy_ns_.load(std::memory_order_relaxed) / 1000000;
  }
  std::string BusySource() const override {
    return stat_path_.empty() ? "time in wbfs's own I/O calls" : "io_ticks of " + stat_path_;
  }

 private:
  // The descriptor for a transfer: the bulk one where it applies.
  int Fd(uint64_t off, const void* buf, size_t len) const {
    return bulk_fd_ >= 0 && len >= kBulk && Aligned(off, buf, len) ? bulk_fd_ : fd_;
  }
  static bool Aligned(uint64_t off, const void* buf, size_t len) {
    return off % kDirectAlign == 0 && len % kDirectAlign == 0 &&
           reinterpret_cast<uintptr_t>(buf) % kDirectAlign == 0;
  }
  static void* AllocAligned(size_t len) {
    void* p = nullptr;
    if (::posix_memalign(&p, kDirectAlign, len) != 0) return nullptr;
    return p;
  }

  Status BounceRead(uint64_t off, void* buf, size_t len) {
    uint64_t start = off / kDirectAlign * kDirectAlign;
    uint64_t end = (off + len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    size_t n = static_cast<size_t>(end - start);
    std::unique_ptr<void, FreeDeleter> bounce(AllocAligned(n));
    if (!bounce) return Status::IOError(path_ + ": out of memory", ENOMEM);
    WBFS_RETURN_IF_ERROR(FullRead(fd_, start, bounce.get(), n));
    std::memcpy(buf, static_cast<char*>(bounce.get()) + (off - start), len);
    return Status::OK();
  }

  Status FullRead(int fd, uint64_t off, void* buf, size_t len) {
    return FullIO(fd, off, static_cast<char*>(buf), len, "read",
                  [](int f, char* p, size_t n, off_t o) { return ::pread(f, p, n, o); });
  }

  Status FullWrite(int fd, uint64_t off, const void* buf, size_t len) {
    return FullIO(fd, off, static_cast<const char*>(buf), len, "write",
                  [](int f, const char* p, size_t n, off_t o) { return ::pwrite(f, p, n, o); });
  }

  // pread or pwrite until done: again on EINTR, buffered when the direct
  // descriptor is refused after all (EINVAL), an error on a short transfer.
  template <typename Ptr, typename Op>
  Status FullIO(int fd, uint64_t off, Ptr p, size_t len, const char* what, Op op) {
    BusyTimer t(&busy_ns_);
    while (len > 0) {
      const ssize_t r = op(fd, p, len, static_cast<off_t>(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && fd == bulk_fd_) {  // O_DIRECT refused here after all
          fd = fd_;
          continue;
        }
        return PosixError(path_ + ": " + what + " at offset " + std::to_string(off), errno);
      }
      if (r == 0) {
        return Status::IOError(path_ + ": short " + what + " at offset " + std::to_string(off), EIO);
      }
      p += r;
      off += static_cast<uint64_t>(r);
      len -= static_cast<size_t>(r);
    }
    return Status::OK();
  }

  const std::string path_;
  const int fd_;
  const int bulk_fd_;  // O_DIRECT, for bulk transfers of a buffered device; -1: none
  const uint64_t size_;
  const bool direct_;
  const bool block_;
  const std::string stat_path_;
  std::atomic<uint64_t> busy_ns_{0};
};

// The sysfs statistics of the block device holding `st` (the device itself
// for a block device), or "" when there is none (tmpfs, overlay, NFS...).
std::string DiskStatPath(const struct stat& st) {
  dev_t d = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
  if (major(d) == 0) return "";
  std::string p = "/sys/dev/block/" + std::to_string(major(d)) + ":" + std::to_string(minor(d)) + "/stat";
  std::ifstream in(p);
  return in ? p : "";
}

}  // namespace

Result<std::unique_ptr<Device>> OpenPosixDevice(const std::string& path, const DeviceOptions& o) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT || !o.create || o.read_only) return PosixError(path, errno);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) return PosixError(path, errno);
    if (fd >= 0) {
      int e = ::fsync(fd) == 0 ? 0 : errno;
      ::close(fd);
      if (e != 0) return PosixError(path + ": fsync", e);
      std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
      if (dir.empty()) dir = "/";
      int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd < 0) return PosixError(dir, errno);
      e = ::fsync(dfd) == 0 ? 0 : errno;
      ::close(dfd);
      if (e != 0) return PosixError(dir + ": fsync", e);
    }
    if (::stat(path.c_str(), &st) != 0) return PosixError(path, errno);
  }
  bool block = S_ISBLK(st.st_mode);
  if (!block && !S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(path + " is neither a regular file nor a block device");
  }
  int flags = (o.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (block && o.exclusive) flags |= O_EXCL;
  int fd = -1;
  bool direct = false;
  if (o.direct) {
    fd = ::open(path.c_str(), flags | O_DIRECT);
    if (fd >= 0) direct = true;
    else if (errno != EINVAL) return PosixError(path, errno);
  }
  if (fd < 0) fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    if (errno == EBUSY) return Status::Busy(path + " is in use (is it mounted already?)");
    return PosixError(path, errno);
  }
  if (!block && o.exclusive && ::flock(fd, (o.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK) return Status::Busy(path + " is in use by another wbfs mount or tool");
    return PosixError(path + ": flock", e);
  }
  uint64_t size = 0;
  if (block) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      int e = errno;
      ::close(fd);
      return PosixError(path + ": BLKGETSIZE64", e);
    }
  } else {
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      return PosixError(path, e);
    }
    size = static_cast<uint64_t>(st.st_size);
  }
  // A buffered device's bulk descriptor (see the top of this file); none
  // where the file system refuses O_DIRECT (tmpfs on older kernels).
  // Without O_EXCL: the first descriptor holds the claim.
  const int bulk_fd = direct ? -1 : ::open(path.c_str(), (flags & ~O_EXCL) | O_DIRECT);
  return std::unique_ptr<Device>(new PosixDevice(path, fd, bulk_fd, size, direct, block, DiskStatPath(st)));
}

}  // namespace wbfs
