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
  bool HasHole(uint64_t off, uint64_t len) const {
    for (uint64_t end = off + len; off < end;) {
      const Extent e = ExtentAt(off);
      if (e.hole) return true;
      if (e.end <= off) return false;
      off = e.end;
    }
    return false;
  }
  // For messages: the path, or a test's name.
  virtual std::string Name() const = 0;
  // Milliseconds the underlying disk has been busy, cumulative: its
  // io_ticks (as the kernel reports them) where the device sits on a block
  // device, otherwise the time spent in this Device's own calls. The
  // writeback modulator turns it into a utilisation.
  virtual uint64_t BusyMillis() const { return 0; }
  // Where BusyMillis comes from, for status.
  virtual std::string BusySource() const { return "none"; }
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

}  // namespace wbfs

#endif  // WBFS_DEVICE_H_
