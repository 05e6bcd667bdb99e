// I/O errors: what fails, what keeps working, what is logged.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "util/clock.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// 8 MiB backing, the smallest cache, two RAM buffers; the log is kept.
struct FaultRig : EngineRig {
  FaultRig() : EngineRig(8 << 20, format::kMinCacheSize) {
    rng.seed(5);
    opts.nr_ram_buffers = 2;
    CaptureLog();
  }
};

}  // namespace

TEST_CASE("a failed backing read fails that read only") {
  FaultRig r;
  r.Open();
  REQUIRE(r.TryWrite(0, 4096).ok());
  r.backing->fail_read_after = 0;
  std::vector<uint8_t> b(8192);
  CHECK(r.e->Read(4096, b.data(), 4096).code() == Status::Code::kIOError);  // a miss
  CHECK(r.Matches(0, 4096));        // a hit needs no backing
  CHECK(r.Matches(4096, 4096));     // the fault was one-shot
  CHECK_FALSE(r.e->Stats().failed);
  CHECK(r.TryWrite(8192, 4096).ok());
  CHECK(r.e->Flush().ok());
  CHECK(r.Logged("read failed") == 1);
  CHECK(r.Logged("reads work again") == 1);
}

TEST_CASE("a failed cache read fails that read only") {
  FaultRig r;
  r.Open();
  for (int i = 0; i < 300; i++) REQUIRE(r.TryWrite(uint64_t(i) * 4096, 4096).ok());
  REQUIRE(r.e->Flush().ok());  // block 0 now lives on the cache device only
  r.cache->fail_read_after = 0;
  std::vector<uint8_t> b(4096);
  CHECK(r.e->Read(0, b.data(), 4096).code() == Status::Code::kIOError);
  CHECK(r.Matches(0, 300 * 4096));
  CHECK_FALSE(r.e->Stats().failed);
}

TEST_CASE("a failed backing write in writeback keeps the blocks dirty, and is retried") {
  FaultRig r;
  r.opts.room_retry_ms = 300;  // a writer waiting for room gives up after 0.3 s
  r.opts.background = false;   // only writers start writeback (the timing below is theirs)
  r.Open();
  r.backing->fail_write_after = 0;
  // Fill the log until it must wrap: the write that needs room fails.
  Status st;
  int i = 0;
  uint64_t t = MonotonicMs();
  for (; i < 2000 && st.ok(); i++) {
    t = MonotonicMs();
    st = r.TryWrite(uint64_t(i % 1500) * 4096, 4096);
  }
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(MonotonicMs() - t >= 250);  // the write that needed room retried first
  CHECK_FALSE(r.e->Stats().failed);  // the cache is fine: not a sticky failure
  uint64_t dirty = r.e->Stats().nr_dirty_cache_blocks;
  CHECK(dirty > 0);
  // Retried: still failing, still dirty, logged once; at once now, the
  // backing having failed for longer than room_retry_ms.
  t = MonotonicMs();
  CHECK(!r.TryWrite(0, 4096).ok());
  CHECK(MonotonicMs() - t < 250);
  // Nobody tried for longer than room_retry_ms: the old failure says
  // nothing about now, and the next writer rides out a new outage.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  t = MonotonicMs();
  CHECK(!r.TryWrite(0, 4096).ok());
  CHECK(MonotonicMs() - t >= 250);
  CHECK(r.e->Stats().nr_dirty_cache_blocks == dirty);
  CHECK(r.Logged("writeback failed") == 1);
  CHECK(r.Matches(0, 1500 * 4096));  // everything acknowledged reads back
  CHECK(r.e->Flush().ok());
  // The disk is back: writes go on and the backing gets everything.
  r.backing->ClearFaults();
  // Within a second of the last failure a writer gets it without trying
  // (WritebackUrgent: writers queued behind a dead backing fail at once).
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  for (int k = 0; k < 600; k++) REQUIRE(r.TryWrite(uint64_t(k % 1500) * 4096, 4096).ok());
  CHECK(r.Logged("writeback works again") == 1);
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("a writer waiting for room waits out a backing outage shorter than room_retry_ms") {
  FaultRig r;
  r.opts.room_retry_ms = 20000;
  r.opts.background = false;
  r.Open();
  r.backing->fail_write_after = 0;  // the backing is away for 0.6 s
  std::thread back([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    r.backing->ClearFaults();
  });
  const uint64_t t0 = MonotonicMs();
  Status st;
  for (int i = 0; i < 2000 && st.ok(); i++) st = r.TryWrite(uint64_t(i % 1500) * 4096, 4096);
  back.join();
  CHECK(st.ok());  // not one write failed
  CHECK(MonotonicMs() - t0 >= 500);  // the writer did wait for the backing
  CHECK(r.e->Stats().nr_writeback_waits > 0);
  CHECK(r.Logged("writeback failed") == 1);
  CHECK(r.Matches(0, 1500 * 4096));
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("a failed cache sync fails the fsync; what an earlier fsync covered survives") {
  FaultRig r;
  r.Open();
  REQUIRE(r.TryWrite(0, 20000).ok());
  REQUIRE(r.e->Flush().ok());
  std::vector<uint8_t> flushed = r.model;
  REQUIRE(r.TryWrite(40000, 5000).ok());
  r.cache->fail_sync_after = 0;
  CHECK(r.e->Flush().code() == Status::Code::kIOError);
  CHECK(r.e->Stats().failed);
  CHECK(r.e->Flush().code() == Status::Code::kIOError);  // sticky: no false success
  CHECK(r.Matches(0, 50000));                             // reads go on
  CHECK(r.Logged("cache failed") == 1);
  // Power cut, remount on a healthy disk.
  r.PowerCut(1);
  r.cache->ClearFaults();
  r.model = flushed;
  r.Open();
  CHECK(r.Matches(0, 20000));
}

TEST_CASE("a short cache write is a failed write: the torn chunk is dropped at replay") {
  FaultRig r;
  r.Open();
  REQUIRE(r.TryWrite(0, 16384).ok());
  REQUIRE(r.e->Flush().ok());
  std::vector<uint8_t> flushed = r.model;
  r.cache->fail_write_after = 0;
  r.cache->short_writes = true;
  REQUIRE(r.TryWrite(0, 16384).ok());  // lands in RAM
  CHECK(r.e->Flush().code() == Status::Code::kIOError);
  CHECK(r.Matches(0, 16384));  // the RAM copy still serves reads
  r.ProcessCrash();  // keep the half-written chunk: it must not validate
  r.cache->ClearFaults();
  r.model = flushed;
  r.Open();
  CHECK(r.Matches(0, 16384));
  CHECK(r.e->Stats().dropped_chunks == 1);  // its header landed, its data did not
}
