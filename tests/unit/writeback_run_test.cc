// wb::Run (one unit's I/O) on in-memory disks, and wb::Carry (what a unit
// leaves to the next): src/engine/writeback.h.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "engine/block_index.h"
#include "engine/writeback.h"
#include "log/log_writer.h"
#include "support/mem_device.h"
#include "util/crc32c.h"

namespace wbfs::wb {
namespace {

using format::kBlockSize;
using format::kBlocksPerSegment;
using test::MemDevice;
using test::MemDisk;

// A cache holding segment 1 with blocks 10 and 11 at positions 1 and 2,
// their slot words and checksums, and a blank backing.
struct UnitRig {
  std::shared_ptr<MemDisk> cache_disk = std::make_shared<MemDisk>(8 << 20);
  std::shared_ptr<MemDisk> backing_disk = std::make_shared<MemDisk>(1 << 20);
  MemDevice cache{cache_disk}, backing{backing_disk};
  log::CacheMeta meta;
  std::vector<uint64_t> slots;
  std::vector<uint32_t> crcs;
  std::vector<PendingDiscard> discards;
  std::vector<SegmentView> views;

  UnitRig() {
    REQUIRE(log::LogWriter::Format(cache, backing.Size(), "", 9, &meta).ok());
    slots.assign(meta.sb.nr_segments * kBlocksPerSegment, 0);
    crcs.assign(slots.size(), 0);
    for (uint32_t pos = 1; pos <= 2; pos++) {
      const uint64_t block = 9 + pos;
      std::vector<uint8_t> data(kBlockSize, static_cast<uint8_t>(block));
      REQUIRE(cache.WriteAt(format::SegmentBlockOffset(meta.sb, 1, pos), data.data(), kBlockSize).ok());
      slots[pos] = SlotWord::Make(block, format::kFullMask, true);
      crcs[pos] = crc32c::Value(data.data(), kBlockSize);
    }
    views.push_back({1, 0, 0, 3, true, 1, 1000, &discards});
  }
  Plan MakePlan() { return BuildPlan(views, slots, crcs, meta.sb.nonce, false); }
  // The backing's block `block`, filled with one byte value? -1: mixed.
  int BackingByte(uint64_t block) {
    std::vector<uint8_t> got(kBlockSize);
    REQUIRE(backing.ReadAt(block * kBlockSize, got.data(), kBlockSize).ok());
    for (uint8_t b : got) {
      if (b != got[0]) return -1;
    }
    return got[0];
  }
  void CorruptCacheBlock(uint32_t pos) {
    uint8_t x = 0x5a;
    REQUIRE(cache.WriteAt(format::SegmentBlockOffset(meta.sb, 1, pos) + 100, &x, 1).ok());
  }
};

TEST_CASE("wb::Run applies the unit's blocks read from the cache") {
  UnitRig r;
  Plan plan = r.MakePlan();
  RunOptions o;
  SUBCASE("the unit held in memory") { o.memory_unit = kMemoryUnit; }
  SUBCASE("the unit read as needed") { o.memory_unit = 0; }
  o.verify = true;
  const Outcome out = Run(r.cache, r.backing, nullptr, r.meta.sb, &plan, o, nullptr);
  REQUIRE(out.st.ok());
  CHECK_FALSE(out.empty);
  CHECK(out.bad.empty());
  CHECK(out.applied.bytes_written == 2 * kBlockSize);
  CHECK(r.BackingByte(10) == 10);
  CHECK(r.BackingByte(11) == 11);
  CHECK(r.BackingByte(12) == 0);
}

TEST_CASE("wb::Run: a block that fails its checksum stops the unit before the backing changes") {
  UnitRig r;
  r.CorruptCacheBlock(2);
  Plan plan = r.MakePlan();
  RunOptions o;
  SUBCASE("the unit held in memory") { o.memory_unit = kMemoryUnit; }
  SUBCASE("the unit read as needed") { o.memory_unit = 0; }
  o.verify = true;
  const Outcome out = Run(r.cache, r.backing, nullptr, r.meta.sb, &plan, o, nullptr);
  CHECK(out.st.code() == Status::Code::kCorruption);
  REQUIRE(out.bad.size() == 1);
  CHECK(out.bad[0].block == 11);
  CHECK(r.backing_disk->writes == 0);
  CHECK(r.BackingByte(10) == 0);
}

TEST_CASE("wb::Run with accept_loss leaves the bad block out and applies the rest") {
  UnitRig r;
  r.CorruptCacheBlock(2);
  Plan plan = r.MakePlan();
  RunOptions o;
  SUBCASE("the unit held in memory") { o.memory_unit = kMemoryUnit; }
  SUBCASE("the unit read as needed") { o.memory_unit = 0; }
  o.verify = true;
  o.accept_loss = true;
  const Outcome out = Run(r.cache, r.backing, nullptr, r.meta.sb, &plan, o, nullptr);
  REQUIRE(out.st.ok());
  REQUIRE(out.bad.size() == 1);
  CHECK(r.BackingByte(10) == 10);
  CHECK(r.BackingByte(11) == 0);  // the backing keeps its older copy
}

TEST_CASE("wb::CacheData reads a unit's data from the cache, neighbours in one read") {
  auto disk = std::make_shared<MemDisk>(8 << 20);
  MemDevice cache(disk);
  log::CacheMeta meta;
  REQUIRE(log::LogWriter::Format(cache, 1 << 20, "", 9, &meta).ok());
  // Segment 1 (ring 0) holds at positions 1..4 blocks of bytes 1..4; the
  // unit's data is position 3, then 1 and 2 (neighbours in the cache), then
  // the second half of position 4.
  for (uint32_t pos = 1; pos <= 4; pos++) {
    std::vector<uint8_t> b(kBlockSize, static_cast<uint8_t>(pos));
    REQUIRE(cache.WriteAt(format::SegmentBlockOffset(meta.sb, 1, pos), b.data(), kBlockSize).ok());
  }
  const std::vector<Piece> pieces = {{0, 3, 0, kBlockSize},
                                     {kBlockSize, 1, 0, kBlockSize},
                                     {2 * kBlockSize, 2, 0, kBlockSize},
                                     {3 * kBlockSize, 4, 2048, 2048}};
  CacheData data(cache, meta.sb, pieces);
  std::vector<uint8_t> want;
  for (const Piece& p : pieces) want.insert(want.end(), p.len, static_cast<uint8_t>(p.slot));
  SUBCASE("all of it") {
    std::vector<uint8_t> got(want.size());
    const uint64_t reads = disk->reads;
    REQUIRE(data.Read(0, got.data(), got.size()).ok());
    CHECK(got == want);
    CHECK(disk->reads - reads == 3);  // slot 3; slots 1 and 2 together; half of slot 4
  }
  SUBCASE("any stretch of it") {
    for (uint64_t at = 0; at < want.size(); at += 512) {
      for (uint64_t len = 512; at + len <= want.size(); len += 1536) {
        std::vector<uint8_t> got(len);
        REQUIRE(data.Read(at, got.data(), len).ok());
        REQUIRE(std::equal(got.begin(), got.end(), want.begin() + static_cast<long>(at)));
      }
    }
  }
  SUBCASE("beyond it") {
    std::vector<uint8_t> got(1024);
    CHECK_FALSE(data.Read(want.size() - 512, got.data(), 1024).ok());
  }
}

TEST_CASE("wb::Run reports a failed cache read and a failed backing write") {
  for (size_t memory_unit : {kMemoryUnit, size_t{0}}) {  // the unit held in memory, or read as needed
    CAPTURE(memory_unit);
    RunOptions o;
    o.memory_unit = memory_unit;
    {
      UnitRig r;
      Plan plan = r.MakePlan();
      r.cache_disk->fail_read_after = 0;
      const Outcome out = Run(r.cache, r.backing, nullptr, r.meta.sb, &plan, o, nullptr);
      CHECK_FALSE(out.st.ok());
      CHECK(r.backing_disk->writes == 0);
    }
    {
      UnitRig r;
      Plan plan = r.MakePlan();
      r.backing_disk->fail_write_after = 0;
      const Outcome out = Run(r.cache, r.backing, nullptr, r.meta.sb, &plan, o, nullptr);
      CHECK_FALSE(out.st.ok());
    }
  }
}

TEST_CASE("wb::Carry: a pending journaled unit widens the next one until a unit succeeds") {
  Carry c;
  uint64_t upto = 5, batch = 1;
  bool current = false;
  c.Cover(&upto, &batch, &current);
  CHECK(upto == 5);
  CHECK(batch == 1);
  CHECK_FALSE(current);
  CHECK(c.Failed(Status::IOError("disk gone", 5), /*redo=*/true, 9, 4, true));  // first: log it
  CHECK(c.failing());
  CHECK(c.error().find("disk gone") != std::string::npos);
  c.Cover(&upto, &batch, &current);
  CHECK(upto == 9);
  CHECK(batch == 4);
  CHECK(current);
  CHECK_FALSE(c.Failed(Status::IOError("still gone", 5), false, 2, 1, false));  // logged already
  CHECK(c.error().find("still gone") != std::string::npos);
  upto = 1, batch = 1, current = false;
  c.Cover(&upto, &batch, &current);
  CHECK(upto == 9);  // the redo stays until a success
  format::FlushPoint p;
  p.chunk_seq = 77;
  CHECK(c.Succeeded(p));  // was failing: log that it works again
  CHECK_FALSE(c.failing());
  CHECK(c.error().empty());
  CHECK(c.backing_point().chunk_seq == 77);
  upto = 1, batch = 1, current = false;
  c.Cover(&upto, &batch, &current);
  CHECK(upto == 1);
  CHECK(batch == 1);
  CHECK_FALSE(c.Succeeded(p));
}

TEST_CASE("wb::Carry: a unit stopped for unmount is no failure, and retries back off to 8 s") {
  Carry c;
  CHECK_FALSE(c.Failed(Status::Failed("unmounting"), false, 1, 1, false));
  CHECK_FALSE(c.failing());
  CHECK(c.RetryDue(0));
  uint64_t waits[6];
  for (uint64_t& w : waits) {
    c.BackOff(1000);
    w = c.RetryWaitMs(1000);
  }
  CHECK(waits[0] == 1000);
  CHECK(waits[1] == 2000);
  CHECK(waits[2] == 4000);
  CHECK(waits[3] == kMaxRetryMs);
  CHECK(waits[5] == kMaxRetryMs);
  CHECK_FALSE(c.RetryDue(1000 + kMaxRetryMs - 1));
  CHECK(c.RetryDue(1000 + kMaxRetryMs));
  c.RetryNow();
  CHECK(c.RetryDue(0));
  c.Succeeded(format::FlushPoint{});
  c.BackOff(0);
  CHECK(c.RetryWaitMs(0) == 1000);  // a success starts the back-off over
}

}  // namespace
}  // namespace wbfs::wb
