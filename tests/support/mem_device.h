// MemDisk: an in-memory device for tests that knows what a power cut keeps.
//
// Writes land in `data` at once (what reads see) and are remembered as
// pending until Sync(); `durable` is the image as of the last sync. A
// crash (Crash()) builds a new durable image from `durable` plus any
// subset of the pending writes, each possibly torn at a 512-byte boundary.
// Faults: fail the n-th write or sync from now on.
#ifndef WBFS_TESTS_SUPPORT_MEM_DEVICE_H_
#define WBFS_TESTS_SUPPORT_MEM_DEVICE_H_

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "wbfs/device.h"

namespace wbfs::test {

struct MemDisk {
  explicit MemDisk(size_t size, std::string n = "mem") : data(size, 0), durable(size, 0), name(std::move(n)) {}

  struct Pending {
    uint64_t off;
    std::vector<uint8_t> bytes;
  };

  std::mutex mu;
  std::vector<uint8_t> data;
  std::vector<uint8_t> durable;
  std::vector<Pending> pending;
  std::string name;
  uint64_t writes = 0, syncs = 0, bytes_written = 0;
  int64_t fail_write_after = -1;  // fail once this many more writes succeeded
  int64_t fail_sync_after = -1;
  bool fail_reads = false;
  // After a simulated crash the old engine must not touch the disk any
  // more: writes and syncs fail and change nothing until Crash()/KeepAll().
  bool frozen = false;

  // The image after a power cut: durable plus a random subset of the
  // pending writes, some torn at sector boundaries. Resets pending.
  void Crash(std::mt19937_64& rng) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<uint8_t> img = durable;
    for (const Pending& p : pending) {
      unsigned r = rng() % 4;
      if (r == 0) continue;  // lost
      size_t n = p.bytes.size();
      if (r == 1 && n > 512) n = (rng() % (n / 512)) * 512;  // torn
      std::memcpy(img.data() + p.off, p.bytes.data(), n);
    }
    data = img;
    durable = img;
    pending.clear();
    frozen = false;
  }
  // Everything written is kept (a process crash, not a power cut).
  void KeepAll() {
    std::lock_guard<std::mutex> l(mu);
    durable = data;
    pending.clear();
    frozen = false;
  }
};

class MemDevice final : public Device {
 public:
  explicit MemDevice(std::shared_ptr<MemDisk> d) : d_(std::move(d)) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    std::lock_guard<std::mutex> l(d_->mu);
    if (d_->fail_reads) return Status::IOError(d_->name + ": injected read error", EIO);
    if (off + len > d_->data.size()) return Status::IOError(d_->name + ": read beyond end", EIO);
    std::memcpy(buf, d_->data.data() + off, len);
    return Status::OK();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::lock_guard<std::mutex> l(d_->mu);
    if (d_->frozen) return Status::IOError(d_->name + ": frozen", EIO);
    if (d_->fail_write_after == 0) return Status::IOError(d_->name + ": injected write error", EIO);
    if (d_->fail_write_after > 0) d_->fail_write_after--;
    if (off + len > d_->data.size()) return Status::IOError(d_->name + ": write beyond end", EIO);
    std::memcpy(d_->data.data() + off, buf, len);
    const auto* p = static_cast<const uint8_t*>(buf);
    d_->pending.push_back({off, std::vector<uint8_t>(p, p + len)});
    d_->writes++;
    d_->bytes_written += len;
    return Status::OK();
  }
  Status Sync() override {
    std::lock_guard<std::mutex> l(d_->mu);
    if (d_->frozen) return Status::IOError(d_->name + ": frozen", EIO);
    if (d_->fail_sync_after == 0) return Status::IOError(d_->name + ": injected sync error", EIO);
    if (d_->fail_sync_after > 0) d_->fail_sync_after--;
    d_->durable = d_->data;
    d_->pending.clear();
    d_->syncs++;
    return Status::OK();
  }
  Status Discard(uint64_t off, uint64_t len) override {
    std::vector<uint8_t> z(len, 0);
    return WriteAt(off, z.data(), z.size());
  }
  uint64_t Size() const override { return d_->data.size(); }
  std::string Name() const override { return d_->name; }

 private:
  std::shared_ptr<MemDisk> d_;
};

inline std::unique_ptr<Device> Dev(const std::shared_ptr<MemDisk>& d) {
  return std::make_unique<MemDevice>(d);
}

}  // namespace wbfs::test

#endif  // WBFS_TESTS_SUPPORT_MEM_DEVICE_H_
