// Read caching, write-around mode and discard.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// An 8 MiB backing holding a pattern, a 16 MiB cache.
struct RcRig : EngineRig {
  RcRig() : EngineRig(8 << 20, 16 << 20) {
    rng.seed(21);
    SetBacking([](size_t i) { return uint8_t(i / 4096 + i); });
  }
};

}  // namespace

TEST_CASE("read misses are staged and hit afterwards; not with read_cache_threshold 0") {
  RcRig r;
  r.Open();
  for (uint64_t b = 0; b < 100; b++) r.ReadBlock(b * 7);  // scattered 4 KiB reads
  r.Settle();
  CHECK(r.e->Stats().nr_staged_blocks == 0);
  r.e->ClearStats();
  for (uint64_t b = 0; b < 100; b++) r.ReadBlock(b * 7);
  CHECK(r.Hits() == 0);

  REQUIRE(r.e->SetTunable("read_cache_threshold", 1).ok());
  for (uint64_t b = 0; b < 100; b++) r.ReadBlock(b * 7);
  r.Settle();
  CHECK(r.e->Stats().nr_staged_blocks == 100);
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);  // staged blocks are clean
  r.e->ClearStats();
  for (uint64_t b = 0; b < 100; b++) r.ReadBlock(b * 7);
  CHECK(r.Hits() == 100);
  CHECK(r.Matches(0, 8 << 20));
  // Clean blocks survive a remount (they are in the log) and are never
  // written back.
  uint64_t backing_writes = r.backing->writes;
  REQUIRE(r.e->Close().ok());
  r.Open();
  r.e->ClearStats();
  for (uint64_t b = 0; b < 100; b++) r.ReadBlock(b * 7);
  CHECK(r.Hits() == 100);
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(r.backing->writes == backing_writes);
}

TEST_CASE("sequential runs: staged up to the threshold, not beyond") {
  RcRig r;
  r.opts.tunables.read_cache_threshold = 4;
  r.Open();
  SUBCASE("a run of exactly the threshold is staged") {
    for (uint64_t b = 100; b < 104; b++) r.ReadBlock(b);
    r.ReadBlock(500);  // ends the run
    r.Settle();
    CHECK(r.e->Stats().nr_staged_blocks == 5);
  }
  SUBCASE("one block more is not") {
    for (uint64_t b = 100; b < 105; b++) r.ReadBlock(b);
    r.ReadBlock(500);
    r.Settle();
    CHECK(r.e->Stats().nr_staged_blocks == 1);  // only block 500
  }
  SUBCASE("one read of the threshold's size is staged, one block larger is not") {
    (void)r.Read(100 * 4096, 4 * 4096);
    (void)r.Read(300 * 4096, 5 * 4096);
    r.Settle();
    CHECK(r.e->Stats().nr_staged_blocks == 4);
  }
  SUBCASE("two interleaved sequential streams are caught by address") {
    for (uint64_t i = 0; i < 20; i++) {
      r.ReadBlock(1000 + i);
      r.ReadBlock(1500 + i);
    }
    r.Settle();
    CHECK(r.e->Stats().nr_staged_blocks == 0);
  }
  SUBCASE("reads that are not whole blocks are not staged") {
    for (uint64_t b = 0; b < 10; b++) (void)r.Read(b * 9 * 4096 + 100, 3000);
    r.Settle();
    CHECK(r.e->Stats().nr_staged_blocks == 0);
  }
}

TEST_CASE("a write racing a staging read wins") {
  for (int around : {0, 1}) {
    RcRig r;
    r.opts.tunables.read_cache_threshold = 8;
    r.opts.tunables.write_around_mode = around;
    r.Open();
    r.backing->PauseReads();
    std::thread reader([&] { r.ReadBlock(42); });  // reserves a cell, reads, stalls
    for (int i = 0; i < 300 && r.backing->WaitingReads() == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE(r.backing->WaitingReads() == 1);
    // The reader holds the old data; the write lands before it returns.
    std::vector<uint8_t> fresh(4096, 0xEE);
    REQUIRE(r.e->Write(42 * 4096, fresh.data(), 4096).ok());
    std::memcpy(r.model.data() + 42 * 4096, fresh.data(), 4096);
    r.backing->Resume();
    reader.join();
    r.ReadBlock(600);
    r.Settle();
    CHECK_MESSAGE(r.Matches(42 * 4096, 4096), "write_around_mode " << around);
  }
}

TEST_CASE("write-around: writes reach the backing, cached copies go, fsync syncs the backing") {
  RcRig r;
  r.opts.tunables.read_cache_threshold = 8;
  r.opts.tunables.write_around_mode = 1;
  r.Open();
  for (uint64_t b = 0; b < 50; b++) r.ReadBlock(b * 3);
  r.Settle();
  CHECK(r.e->Stats().nr_staged_blocks == 50);
  r.Write(3 * 4096 + 100, 5000);  // over two cached blocks
  CHECK(std::memcmp(r.backing->data.data() + 3 * 4096, r.model.data() + 3 * 4096, 8192) == 0);
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);
  CHECK(r.Matches(0, 1 << 20));
  uint64_t syncs = r.backing->syncs;
  REQUIRE(r.e->Flush().ok());
  CHECK(r.backing->syncs == syncs + 1);
  // A crash must not bring the old cached copies back.
  r.PowerCut(9);
  r.Open();
  CHECK(r.Matches(0, 1 << 20));
}

TEST_CASE("write-around mount writes back what a write-back mount left dirty") {
  RcRig r;
  r.Open();
  r.Write(0, 100000);
  REQUIRE(r.e->Close().ok());
  r.opts.tunables.write_around_mode = 1;
  r.Open();
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);
  CHECK(r.backing->data == r.model);
}

TEST_CASE("discard of dirty, clean, partially dirty and buffered blocks, then replay") {
  for (int crash : {0, 1}) {
    RcRig r;
    r.opts.tunables.read_cache_threshold = 8;
    r.Open();
    r.Write(0, 40 * 4096);  // dirty, some on the cache device
    for (int i = 0; i < 200; i++) r.Write(uint64_t(100 + i) * 4096, 4096);
    REQUIRE(r.e->Flush().ok());
    REQUIRE(r.e->WritebackOldest(1).ok());  // some clean now
    r.Write(5 * 4096 + 512, 1024);          // partially dirty
    r.Write(320 * 4096, 8192);              // still in the RAM buffer
    for (uint64_t b = 600; b < 640; b += 2) r.ReadBlock(b);  // staged clean
    r.Settle();
    // Discard [2 KiB, 700 blocks + 1 KiB): partial at both ends.
    const uint64_t off = 2048, len = 700 * 4096 - 1024;
    REQUIRE(r.e->Discard(off, len).ok());
    std::memset(r.model.data() + off, 0, len);
    CHECK(r.Matches(0, 1 << 20));
    CHECK(r.Matches(0, 8 << 20));
    if (crash) {
      r.PowerCut(9);  // the discard returned: it is durable
    } else {
      REQUIRE(r.e->Close().ok());
    }
    r.Open();
    CHECK_MESSAGE(r.Matches(0, 8 << 20), "crash " << crash);
    REQUIRE(r.e->WritebackAll().ok());
    REQUIRE(r.e->Close().ok());
    CHECK(r.backing->data == r.model);
  }
}

TEST_CASE("a large read over scattered cached blocks is one backing read, overlaid") {
  RcRig r;
  r.opts.background = false;
  r.opts.tunables.read_cache_threshold = 0;  // nothing staged: count only the read's own I/O
  r.Open();
  // Every 5th block of a 1 MiB range is dirty: in the cache (sealed and
  // flushed) or, for the last ones, in RAM; a partial-sector write and a
  // discarded (zero-overlay) block in between.
  for (uint64_t b = 0; b < 256; b += 5) r.Write(1000 * 4096 + b * 4096, 4096);
  REQUIRE(r.e->Flush().ok());
  r.Write(1000 * 4096 + 7 * 4096 + 512, 700);
  REQUIRE(r.e->Discard(1000 * 4096 + 11 * 4096, 4096).ok());
  std::memset(r.model.data() + 1000 * 4096 + 11 * 4096, 0, 4096);
  const uint64_t before = r.backing->reads;
  CHECK(r.Matches(1000 * 4096 + 100, (1 << 20) - 300));
  const uint64_t reads = r.backing->reads - before;
  MESSAGE("backing reads for a 1 MiB read over 52 cached blocks: " << reads);
  CHECK(reads <= 2);
  // Far-apart pieces are not joined across a long cached run.
  for (uint64_t b = 1500; b < 1700; b++) r.Write(b * 4096, 4096);
  const uint64_t before2 = r.backing->reads;
  CHECK(r.Matches(1499 * 4096, 202 * 4096));
  CHECK(r.backing->reads - before2 == 2);
  REQUIRE(r.e->Close().ok());
}
