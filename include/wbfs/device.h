// Device: the narrow interface through which the engine does all cache and
// backing I/O. PosixDevice (src/io) is a regular file or a block device;
// tests put an in-memory, fault-injecting device behind the engine instead.
#ifndef WBFS_DEVICE_H_
#define WBFS_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "wbfs/status.h"

namespace wbfs {

// Thread-safe: concurrent calls on disjoint ranges are allowed.
class Device {
 public:
  virtual ~Device() = default;
  // Reads exactly `len` bytes at `off`; a short read is an IOError.
  virtual Status ReadAt(uint64_t off, void* buf, size_t len) = 0;
  // Writes exactly `len` bytes at `off`. Nothing is durable until Sync().
  virtual Status WriteAt(uint64_t off, const void* buf, size_t len) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Status Sync() = 0;
  // Makes the range read back as zeros, guaranteed (punch a hole, zero the
  // range, or write zeros; never a discard that may leave old data).
  virtual Status Discard(uint64_t off, uint64_t len) = 0;
  virtual uint64_t Size() const = 0;
  // Whether a write beyond Size() extends the device (a regular file) or
  // fails (a block device, a fixed-size test disk).
  virtual bool Grows() const { return false; }
  // A sparse file's allocation at `off`: whether it lies in a hole (no
  // storage allocated: it reads as zeros, and writing it allocates space)
  // and where that hole or data extent ends (at most Size()). Block devices
  // and file systems that do not report holes: data up to Size().
  struct Extent {
    bool hole = false;
    uint64_t end = 0;
  };
  virtual Extent ExtentAt(uint64_t /*off*/) const { return {false, Size()}; }
  // Whether [off, off + len) contains a hole (one ExtentAt per extent met).
  bool HasHole(uint64_t off, uint64_t len) const;
  // For messages: the path, or a test's name.
  virtual std::string Name() const = 0;
  // What the device is, stably and uniquely, where that is known beyond its
  // path (an RBD image: its cluster's fsid, pool id and image id), at most
  // format::kMaxBackingIdLen bytes; empty for files and block devices. A
  // cache records its backing's identity at format and is refused over a
  // backing with another one.
  virtual std::string Identity() const { return {}; }
  // Milliseconds the underlying disk has been busy, cumulative: its
  // io_ticks (as the kernel reports them) where the device sits on a block
  // device, otherwise the time spent in this Device's own calls. The
  // writeback modulator turns it into a utilisation.
  virtual uint64_t BusyMillis() const { return 0; }
  // Where BusyMillis comes from, for status.
  virtual std::string BusySource() const { return "none"; }

  // How many writes the device gains from having in flight at once. 1 (a
  // local disk: its queue is the kernel's, and one writer's sequential
  // calls already keep it busy); a network store (RBD), whose every call
  // is a round trip, says more. ApplyUnit hands that many to WriteBatch.
  virtual size_t QueueDepth() const { return 1; }
  struct Write {
    uint64_t off;
    const void* buf;
    size_t len;
  };
  // Writes n disjoint ranges, which may be in flight together and land in
  // any order; returns once every one has finished (the buffers are the
  // caller's): OK, or the first failure. Nothing is durable until Sync().
  // Default: one WriteAt after another.
  virtual Status WriteBatch(const Write* w, size_t n) {
    for (size_t i = 0; i < n; i++) {
      Status st = WriteAt(w[i].off, w[i].buf, w[i].len);
      if (!st.ok()) return st;
    }
    return Status::OK();
  }
};

struct DeviceOptions {
  // Hold an exclusive lock (flock for files, O_EXCL for block devices) so a
  // second mount of the same file is refused with Busy.
  bool exclusive = true;
  // Open with O_DIRECT when the file system allows it.
  bool direct = false;
  bool read_only = false;
  // Create a missing regular file (mode 0600; its directory is synced so
  // the new name is durable).
  bool create = false;
};

Result<std::unique_ptr<Device>> OpenPosixDevice(const std::string& path, const DeviceOptions& o);

// Asks a device about holes over ranges that ascend, remembering the last
// extent it was told about: one ExtentAt per extent met, not per range.
class HoleCursor {
 public:
  explicit HoleCursor(const Device& dev) : dev_(dev) {}
  // Does [a, b) meet a hole?
  bool Meets(uint64_t a, uint64_t b) {
    while (a < b) {
      if (a < from_ || a >= ext_.end) {
        ext_ = dev_.ExtentAt(a);
        from_ = a;
        if (ext_.end <= a) return false;
      }
      if (ext_.hole) return true;
      a = ext_.end;
    }
    return false;
  }

 private:
  const Device& dev_;
  Device::Extent ext_;
  uint64_t from_ = 0;
};

inline bool Device::HasHole(uint64_t off, uint64_t len) const { return HoleCursor(*this).Meets(off, off + len); }

}  // namespace wbfs

#endif  // WBFS_DEVICE_H_
