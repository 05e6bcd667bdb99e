// MemDisk: an in-memory device for tests that knows what a power cut keeps.
//
// Writes land in `data` at once (what reads see) and are remembered as
// pending until Sync(); `durable` is the image as of the last sync. A
// crash (Crash()) builds a new durable image from `durable` plus any
// subset of the pending writes, each possibly torn at a sector (512-byte)
// boundary of the disk: sectors are atomic, as on real disks.
//
// Faults, per disk: fail the n-th read, write or sync from now on (EIO),
// or let a write land only partly before it fails (a short write). A
// PowerPlan shared by several disks cuts the power for all of them at the
// n-th write or sync counted across them: from then on they change nothing
// and every call fails, as if the machine had stopped mid-operation.
#ifndef WBFS_TESTS_SUPPORT_MEM_DEVICE_H_
#define WBFS_TESTS_SUPPORT_MEM_DEVICE_H_

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "util/clock.h"
#include "wbfs/device.h"

namespace wbfs::test {

struct PowerPlan {
  std::mutex mu;
  int64_t ops_left = -1;  // writes and syncs until the cut; -1: never
  bool cut = false;
  // Counts one mutating op; true when the power is (now) off.
  bool Tick() {
    std::lock_guard<std::mutex> l(mu);
    if (cut) return true;
    if (ops_left == 0) {
      cut = true;
      return true;
    }
    if (ops_left > 0) ops_left--;
    return false;
  }
  bool IsCut() {
    std::lock_guard<std::mutex> l(mu);
    return cut;
  }
  void Restore() {
    std::lock_guard<std::mutex> l(mu);
    cut = false;
    ops_left = -1;
  }
};

struct MemDisk {
  explicit MemDisk(size_t size, std::string n = "mem")
      : data(size, 0), durable(size, 0), name(std::move(n)) {}

  struct Pending {
    uint64_t off;
    std::vector<uint8_t> bytes;
  };

  std::mutex mu;
  std::vector<uint8_t> data;
  std::vector<uint8_t> durable;
  std::vector<Pending> pending;
  std::string name;
  std::string identity;  // Device::Identity (empty: none, as a file)
  uint64_t reads = 0, writes = 0, syncs = 0, bytes_written = 0;
  // A sparse disk (a sparse file): 4 KiB blocks are allocated by the
  // first write into them and freed by Discard; unallocated blocks are
  // holes (ExtentAt reports them). `capacity` blocks at most may be
  // allocated: a write that would need more fails with ENOSPC (nothing
  // lands). Counts the bytes written into holes and the extent queries.
  static constexpr uint64_t kAlloc = 4096;
  bool sparse = false;
  std::vector<bool> allocated;
  uint64_t nr_allocated = 0;
  uint64_t capacity = UINT64_MAX;
  uint64_t bytes_written_to_holes = 0;
  uint64_t extent_queries = 0;
  uint64_t nr_enospc = 0;  // writes refused for want of space
  // Turns sparse on: every block a hole (what `truncate -s` makes).
  void MakeSparse() {
    std::lock_guard<std::mutex> l(mu);
    sparse = true;
    allocated.assign((data.size() + kAlloc - 1) / kAlloc, false);
    nr_allocated = 0;
  }
  void SetCapacity(uint64_t blocks) {
    std::lock_guard<std::mutex> l(mu);
    capacity = blocks;
  }
  // Fail once this many more calls succeeded (-1: never). A failure is
  // sticky for writes and syncs until reset, one-shot for reads.
  int64_t fail_read_after = -1;
  int64_t fail_write_after = -1;
  int64_t fail_sync_after = -1;
  bool short_writes = false;  // a failing write first lands its first half
  bool fail_reads = false;    // every read fails
  // BusyMillis reports the disk busy all the time (utilization 100 %).
  std::atomic<bool> always_busy{false};
  // After a simulated crash the old engine must not touch the disk any
  // more: writes and syncs fail and change nothing until Crash()/KeepAll().
  bool frozen = false;
  std::shared_ptr<PowerPlan> power;
  // While set, writes (and reads, with paused_reads) wait: a disk that
  // stalls; Resume() lets them go.
  bool paused = false;
  bool paused_reads = false;
  uint64_t waiting_reads = 0;
  uint64_t waiting_writes = 0;
  std::condition_variable resumed;
  void Pause() {
    std::lock_guard<std::mutex> l(mu);
    paused = true;
  }
  void PauseReads() {
    std::lock_guard<std::mutex> l(mu);
    paused_reads = true;
  }
  // How many calls are stalled now (tests poll this from another thread).
  uint64_t WaitingWrites() {
    std::lock_guard<std::mutex> l(mu);
    return waiting_writes;
  }
  uint64_t WaitingReads() {
    std::lock_guard<std::mutex> l(mu);
    return waiting_reads;
  }
  void Resume() {
    std::lock_guard<std::mutex> l(mu);
    paused = false;
    paused_reads = false;
    resumed.notify_all();
  }

  // The image after a power cut: durable plus a random subset of the
  // pending writes, some torn at sector boundaries. Resets pending.
  void Crash(std::mt19937_64& rng) {
    std::lock_guard<std::mutex> l(mu);
    for (const Pending& p : pending) {
      unsigned r = static_cast<unsigned>(rng() % 4);
      if (r == 0) continue;  // lost
      size_t n = p.bytes.size();
      if (r == 1) n = (rng() % (n / 512 + 1)) * 512;  // torn (pending writes are sector-aligned)
      std::memcpy(durable.data() + p.off, p.bytes.data(), n);
    }
    data = durable;
    pending.clear();
    frozen = false;
  }
  // A durable byte, read under the lock (the engine's threads may sync).
  uint8_t Durable(size_t off) {
    std::lock_guard<std::mutex> l(mu);
    return durable[off];
  }
  // Everything written is kept (a process crash, not a power cut).
  void KeepAll() {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& p : pending) std::memcpy(durable.data() + p.off, p.bytes.data(), p.bytes.size());
    pending.clear();
    frozen = false;
  }
  // The power is gone for whoever still holds this disk (see frozen).
  void Freeze() {
    std::lock_guard<std::mutex> l(mu);
    frozen = true;
  }
  void ClearFaults() {
    std::lock_guard<std::mutex> l(mu);
    fail_read_after = fail_write_after = fail_sync_after = -1;
    short_writes = fail_reads = false;
  }
};

class MemDevice final : public Device {
 public:
  explicit MemDevice(std::shared_ptr<MemDisk> d) : d_(std::move(d)) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    std::unique_lock<std::mutex> l(d_->mu);
    if (d_->power && d_->power->IsCut()) return Status::IOError(d_->name + ": power cut", EIO);
    if (d_->fail_reads) return Status::IOError(d_->name + ": injected read error", EIO);
    if (d_->fail_read_after == 0) {
      d_->fail_read_after = -1;
      return Status::IOError(d_->name + ": injected read error", EIO);
    }
    if (d_->fail_read_after > 0) d_->fail_read_after--;
    if (off + len > d_->data.size()) return Status::IOError(d_->name + ": read beyond end", EIO);
    std::memcpy(buf, d_->data.data() + off, len);
    d_->reads++;
    // A stalled read has its data already: what a slow disk returns late.
    if (d_->paused_reads) {
      d_->waiting_reads++;
      d_->resumed.wait(l, [&] { return !d_->paused_reads; });
      d_->waiting_reads--;
    }
    return Status::OK();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::unique_lock<std::mutex> l(d_->mu);
    if (d_->paused) {
      d_->waiting_writes++;
      d_->resumed.wait(l, [&] { return !d_->paused; });
      d_->waiting_writes--;
    }
    if (d_->frozen) return Status::IOError(d_->name + ": frozen", EIO);
    if (d_->power && d_->power->Tick()) return Status::IOError(d_->name + ": power cut", EIO);
    if (off + len > d_->data.size()) return Status::IOError(d_->name + ": write beyond end", EIO);
    const auto* p = static_cast<const uint8_t*>(buf);
    if (d_->fail_write_after == 0) {
      if (d_->short_writes && len >= 1024) Land(off, p, len / 1024 * 512);
      return Status::IOError(d_->name + ": injected write error", EIO);
    }
    if (d_->fail_write_after > 0) d_->fail_write_after--;
    if (d_->sparse && len > 0) {
      const uint64_t a = off / MemDisk::kAlloc, b = (off + len - 1) / MemDisk::kAlloc + 1;
      uint64_t need = 0;
      for (uint64_t i = a; i < b; i++) need += d_->allocated[i] ? 0 : 1;
      if (d_->nr_allocated + need > d_->capacity) {
        d_->nr_enospc++;
        return Status::IOError(d_->name + ": write at offset " + std::to_string(off) + ": No space left on device",
                               ENOSPC);
      }
      for (uint64_t i = a; i < b; i++) {
        if (d_->allocated[i]) continue;
        d_->allocated[i] = true;
        d_->bytes_written_to_holes += std::min(off + len, (i + 1) * MemDisk::kAlloc) -
                                      std::max(off, i * MemDisk::kAlloc);
      }
      d_->nr_allocated += need;
    }
    Land(off, p, len);
    d_->writes++;
    d_->bytes_written += len;
    return Status::OK();
  }
  Status Sync() override {
    std::lock_guard<std::mutex> l(d_->mu);
    if (d_->frozen) return Status::IOError(d_->name + ": frozen", EIO);
    if (d_->power && d_->power->Tick()) return Status::IOError(d_->name + ": power cut", EIO);
    if (d_->fail_sync_after == 0) return Status::IOError(d_->name + ": injected sync error", EIO);
    if (d_->fail_sync_after > 0) d_->fail_sync_after--;
    for (const auto& p : d_->pending) {
      std::memcpy(d_->durable.data() + p.off, p.bytes.data(), p.bytes.size());
    }
    d_->pending.clear();
    d_->syncs++;
    return Status::OK();
  }
  Status Discard(uint64_t off, uint64_t len) override {
    uint64_t pa = 0, pb = 0;  // the whole blocks punched (sparse)
    {
      std::lock_guard<std::mutex> l(d_->mu);
      if (d_->sparse && !d_->frozen && !(d_->power && d_->power->IsCut()) && off + len <= d_->data.size()) {
        pa = (off + MemDisk::kAlloc - 1) / MemDisk::kAlloc * MemDisk::kAlloc;
        pb = std::max(pa, (off + len) / MemDisk::kAlloc * MemDisk::kAlloc);
        for (uint64_t at = pa; at < pb; at += MemDisk::kAlloc) {
          std::memset(d_->data.data() + at, 0, MemDisk::kAlloc);
          d_->pending.push_back({at, std::vector<uint8_t>(MemDisk::kAlloc, 0)});
          if (d_->allocated[at / MemDisk::kAlloc]) d_->nr_allocated--;
          d_->allocated[at / MemDisk::kAlloc] = false;
        }
      }
    }
    // The rest (everything when not sparse) is written with zeros, as a
    // file system zeroes the partial blocks of a punch.
    if (pa == pb) pa = pb = off + len;
    std::vector<uint8_t> z(std::max(pa - off, off + len - pb), 0);
    if (pa > off) WBFS_RETURN_IF_ERROR(WriteAt(off, z.data(), pa - off));
    if (off + len > pb) WBFS_RETURN_IF_ERROR(WriteAt(pb, z.data(), off + len - pb));
    return Status::OK();
  }
  Extent ExtentAt(uint64_t off) const override {
    std::lock_guard<std::mutex> l(d_->mu);
    const uint64_t size = d_->data.size();
    d_->extent_queries++;
    if (!d_->sparse || off >= size) return {false, size};
    const bool hole = !d_->allocated[off / MemDisk::kAlloc];
    uint64_t i = off / MemDisk::kAlloc + 1;
    while (i < d_->allocated.size() && d_->allocated[i] != hole) i++;
    return {hole, std::min(size, i * MemDisk::kAlloc)};
  }
  uint64_t Size() const override { return d_->data.size(); }
  uint64_t BusyMillis() const override {
    return d_->always_busy ? MonotonicMs() : 0;
  }
  std::string Name() const override { return d_->name; }
  std::string Identity() const override { return d_->identity; }

 private:
  // A disk writes whole sectors: an unaligned write is remembered as the
  // sectors it touches, with their content after it (as the page cache
  // would write them), so a crash never mixes bytes inside a sector.
  void Land(uint64_t off, const uint8_t* p, size_t len) {
    std::memcpy(d_->data.data() + off, p, len);
    uint64_t a = off / 512 * 512;
    uint64_t b = std::min<uint64_t>(d_->data.size(), (off + len + 511) / 512 * 512);
    d_->pending.push_back({a, std::vector<uint8_t>(d_->data.begin() + static_cast<long>(a),
                                                   d_->data.begin() + static_cast<long>(b))});
  }
  std::shared_ptr<MemDisk> d_;
};

inline std::unique_ptr<Device> Dev(const std::shared_ptr<MemDisk>& d) {
  return std::make_unique<MemDevice>(d);
}

}  // namespace wbfs::test

#endif  // WBFS_TESTS_SUPPORT_MEM_DEVICE_H_
