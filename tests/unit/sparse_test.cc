// A sparse backing (README's own set-up is `truncate -s 100G`): writeback's
// windows never join runs across a hole of the backing (filling it would
// allocate it: 43 MiB of dirty data once allocated a whole 256 MiB
// backing), and a backing out of space (ENOSPC) is reported in status and
// retried, with progress once space is freed.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// A sparse 16 MiB backing (all hole), a cache of 8 segments more than the
// smallest, a 16 MiB journal disk; writeback only when the test calls it.
struct SparseRig : EngineRig {
  explicit SparseRig(bool threads = false)
      : EngineRig(16 * kMiB, format::kMinCacheSize + 8 * format::kSegmentSize) {
    AddJournal(16 * kMiB);
    rng.seed(5);
    opts.threads = threads;
    opts.background = threads;
    opts.tunables.writeback_threshold = 0;
    backing->MakeSparse();
  }
  // Backing data written before the mount (allocated).
  void Preallocate(uint64_t off, uint64_t len) {
    std::vector<uint8_t> b(len);
    for (auto& x : b) x = uint8_t(rng() | 1);
    REQUIRE(Dev(backing)->WriteAt(off, b.data(), len).ok());
    REQUIRE(Dev(backing)->Sync().ok());
    std::memcpy(model.data() + off, b.data(), len);
  }
  uint64_t HoleBytes() {
    std::lock_guard<std::mutex> l(backing->mu);
    return backing->bytes_written_to_holes;
  }
  uint64_t Queries() {
    std::lock_guard<std::mutex> l(backing->mu);
    return backing->extent_queries;
  }
};

}  // namespace

TEST_CASE("MemDisk models holes: writes allocate, punches free, ExtentAt reports both") {
  auto d = std::make_shared<MemDisk>(64 * 4096);
  d->MakeSparse();
  auto dev = Dev(d);
  CHECK(dev->HasHole(0, 4096));
  std::vector<uint8_t> b(2 * 4096, 1);
  REQUIRE(dev->WriteAt(8 * 4096 + 100, b.data(), 4096).ok());  // touches blocks 8 and 9
  CHECK(d->bytes_written_to_holes == 4096);
  CHECK(d->nr_allocated == 2);
  Device::Extent x = dev->ExtentAt(0);
  CHECK((x.hole && x.end == 8 * 4096));
  x = dev->ExtentAt(8 * 4096 + 5);
  CHECK((!x.hole && x.end == 10 * 4096));
  CHECK(!dev->HasHole(8 * 4096, 2 * 4096));
  CHECK(dev->HasHole(8 * 4096, 3 * 4096));
  REQUIRE(dev->Discard(8 * 4096, 4096).ok());
  CHECK(d->nr_allocated == 1);
  CHECK(dev->HasHole(8 * 4096, 4096));
  d->SetCapacity(1);
  Status st = dev->WriteAt(20 * 4096, b.data(), 4096);
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.message().find("No space left on device") != std::string::npos);
}

TEST_CASE("writeback never fills a hole of a sparse backing; gaps inside its data are still filled") {
  for (bool journal : {true, false}) {
    CAPTURE(journal);
    SparseRig r;
    r.Preallocate(0, 4 * kMiB);  // the first 4 MiB hold data, the rest is a hole
    const uint64_t hole_bytes_before = r.HoleBytes();
    r.with_journal = journal;
    r.Open();
    // Random blocks over the whole image, one every ~20 KiB: gaps well
    // under the 256 KiB fill limit, so every gap would be filled.
    std::set<uint64_t> in_holes;
    for (int i = 0; i < 800; i++) {
      uint64_t block = r.rng() % (16 * kMiB / 4096);
      r.WriteBlock(block);
      if (block >= 4 * kMiB / 4096) in_holes.insert(block);
    }
    REQUIRE(r.e->WritebackAll().ok());
    const EngineStats s = r.e->Stats();
    CHECK(r.backing->data == r.model);
    // Only the dirty blocks themselves were written into the holes.
    CHECK(r.HoleBytes() - hole_bytes_before == in_holes.size() * 4096);
    CHECK(r.backing->nr_allocated == 4 * kMiB / 4096 + in_holes.size());
    // Gap filling still joins the runs inside the allocated 4 MiB.
    CHECK(s.backing_fill_bytes > 0);
    // Cheap: a few extent queries per unit, not one per run or block.
    CHECK(r.Queries() <= 4 * s.nr_writeback_units);
    CHECK(s.nr_writeback_units > 0);
  }
}

TEST_CASE("a sparse backing on a nearly full file system: writeback needs only the dirty data's space") {
  // 100 blocks, one every 8 KiB, into a hole with room for 150 blocks:
  // filling the 4 KiB gaps would need 199.
  for (bool journal : {true, false}) {
    CAPTURE(journal);
    SparseRig r;
    r.backing->SetCapacity(150);
    r.with_journal = journal;
    r.Open();
    for (uint64_t k = 0; k < 100; k++) r.WriteBlock(1000 + 2 * k);
    Status st = r.e->WritebackAll();
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    CHECK(r.backing->data == r.model);
    CHECK(r.backing->nr_allocated == 100);
    CHECK(!r.e->Stats().writeback_failing);
  }
}

TEST_CASE("ENOSPC on the backing is reported in status and retried; writeback resumes once space is freed") {
  for (bool journal : {true, false}) {
    CAPTURE(journal);
    SparseRig r;
    r.backing->SetCapacity(10);
    r.with_journal = journal;
    r.Open();
    for (uint64_t k = 0; k < 40; k++) r.WriteBlock(3000 + 3 * k);
    Status st = r.e->WritebackAll();
    CHECK(!st.ok());
    EngineStats s = r.e->Stats();
    CHECK(s.writeback_failing);
    CHECK_MESSAGE(s.writeback_error.find("No space left on device") != std::string::npos, s.writeback_error);
    CHECK(s.nr_dirty_cache_blocks == 40);
    r.backing->SetCapacity(UINT64_MAX);  // space freed
    st = r.e->WritebackAll();
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    s = r.e->Stats();
    CHECK(!s.writeback_failing);
    CHECK(s.writeback_error.empty());
    CHECK(s.nr_dirty_cache_blocks == 0);
    CHECK(r.backing->data == r.model);
  }
}

TEST_CASE("drop_caches on a full backing backs off and finishes once space is freed") {
  // 40 blocks, one every 12 KiB (gap filling would need 118 blocks), on a
  // backing with room for 5; then room for 60.
  SparseRig r(true);
  r.backing->SetCapacity(5);
  r.Open();
  for (uint64_t k = 0; k < 40; k++) r.WriteBlock(3000 + 3 * k);
  REQUIRE(r.e->Flush().ok());
  r.e->StartDropCaches();
  auto until = [&](auto pred, int seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  };
  auto enospc = [&] {
    std::lock_guard<std::mutex> l(r.backing->mu);
    return r.backing->nr_enospc;
  };
  REQUIRE(until([&] { return r.e->Stats().writeback_failing; }, 10));
  CHECK(r.e->Stats().writeback_error.find("No space left on device") != std::string::npos);
  // Backing off (1 s, 2 s, 4 s...): at most 2 retries in the next 5 s
  // (a retry every second would be 4 or 5).
  const uint64_t failures = enospc();
  std::this_thread::sleep_for(std::chrono::seconds(5));
  CHECK(enospc() - failures <= 3);
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 40);
  r.backing->SetCapacity(60);  // space freed: enough for the data, not for gap fill
  // The drop_caches in progress goes on at its next retry (8 s apart at most).
  CHECK(until([&] { return r.e->Stats().nr_dirty_cache_blocks == 0; }, 15));
  EngineStats s = r.e->Stats();
  CHECK(!s.writeback_failing);
  CHECK(s.writeback_error.empty());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("PosixDevice reports a sparse file's holes (SEEK_HOLE/SEEK_DATA)") {
  char path[] = "/tmp/wbfs-sparse-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 1 << 20) == 0);
  ::close(fd);
  DeviceOptions o;
  o.exclusive = false;
  auto r = OpenPosixDevice(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto& dev = *r.value();
  std::vector<uint8_t> b(8192, 7);
  REQUIRE(dev.WriteAt(64 << 10, b.data(), b.size()).ok());
  REQUIRE(dev.Sync().ok());
  Device::Extent x = dev.ExtentAt(0);
  if (!x.hole) {
    MESSAGE("this file system does not report holes");
  } else {
    CHECK(x.end == (64 << 10));
    x = dev.ExtentAt(64 << 10);
    CHECK(!x.hole);
    CHECK(x.end >= (72 << 10));
    CHECK(x.end < (1 << 20));
    CHECK(dev.HasHole(0, 4096));
    CHECK(!dev.HasHole(64 << 10, 8192));
    CHECK(dev.HasHole(64 << 10, 512 << 10));
    x = dev.ExtentAt(512 << 10);
    CHECK((x.hole && x.end == (1 << 20)));
    REQUIRE(dev.Discard(64 << 10, 4096).ok());
    CHECK(dev.HasHole(64 << 10, 4096));
    // Fallocated (unwritten) space is no hole: writing it allocates
    // nothing (SEEK_HOLE alone calls it a hole on ext4 and XFS).
    int fd2 = ::open(path, O_RDWR);
    REQUIRE(fd2 >= 0);
    const bool fallocated = ::fallocate(fd2, 0, 256 << 10, 128 << 10) == 0;
    ::close(fd2);
    if (fallocated) {
      CHECK(!dev.HasHole(256 << 10, 128 << 10));
      CHECK(dev.HasHole(200 << 10, 128 << 10));
    }
  }
  ::unlink(path);
}
