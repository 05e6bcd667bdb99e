// Writeback units built from hand-made slot words: what a unit takes, its
// net effect and the journal::Unit it packs (src/engine/writeback_unit.h).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "engine/block_index.h"
#include "engine/writeback_unit.h"
#include "util/crc32c.h"

namespace wbfs::wb {
namespace {

using format::kBlockSize;
using format::kBlocksPerSegment;
using format::kSectorSize;

// A log of a few segments: slot words, and a view per segment.
struct Log {
  explicit Log(uint32_t nr_segments) : slots(size_t{nr_segments} * kBlocksPerSegment, 0) {}
  std::vector<uint64_t> slots;
  std::vector<SegmentView> views;
  std::vector<std::vector<PendingDiscard>> discards;

  // A segment in ring slot `ring` with chunks up to block `fill`.
  void Segment(uint64_t id, uint32_t ring, uint32_t fill, uint64_t last_seq, bool sealed = true) {
    discards.reserve(16);
    discards.emplace_back();
    views.push_back({id, ring, 0, fill, sealed, last_seq, 1000 + last_seq, &discards.back()});
  }
  // Block `block` written at position `pos` of the last segment.
  void Put(uint32_t pos, uint64_t block, bool valid = true, uint8_t mask = 0xff) {
    uint64_t w = SlotWord::Make(block, mask, true);
    if (!valid) w &= ~(SlotWord::kValid | SlotWord::kDirty);  // superseded: logged only
    slots[views.back().ring * kBlocksPerSegment + pos] = w;
  }
  void Discard(uint32_t pos, uint64_t start, uint64_t count) { discards.back().push_back({start, count, pos}); }
};

// The bytes of block `b` at `slot` in a read buffer laid out as the plan says.
std::vector<uint8_t> ReadBuffer(const Plan& plan) {
  std::vector<uint8_t> data(plan.total);
  for (const Item& it : plan.taken) std::memset(data.data() + it.data, static_cast<int>(it.slot & 0xff), kBlockSize);
  return data;
}

TEST_CASE("a unit applies the newest version of each block, and a later discard drops an earlier write") {
  Log log(2);
  log.Segment(7, 1, 10, 20);
  log.Put(1, 100, /*valid=*/false);  // block 100, later rewritten at pos 3
  log.Put(2, 200);
  log.Put(3, 100);
  log.Put(4, 300);
  log.Discard(5, 300, 1);            // after 300's write: 300 is dropped
  log.Segment(8, 0, 4, 25, /*sealed=*/false);
  log.Discard(1, 200, 1);            // before 200's rewrite below: that one stays
  log.Put(2, 200);

  SUBCASE("with a journal: every logged version is taken, in log order") {
    const Plan plan = BuildPlan(log.views, log.slots, {}, 42, true);
    REQUIRE(plan.taken.size() == 5);
    CHECK(plan.taken[0].slot == 1 * kBlocksPerSegment + 1);
    CHECK(plan.taken[4].slot == 0 * kBlocksPerSegment + 2);
    REQUIRE(plan.net.size() == 3);
    CHECK(plan.net[0].block == 100);
    CHECK(plan.net[0].slot == 1 * kBlocksPerSegment + 3);  // the newer copy
    CHECK_FALSE(plan.net[0].dropped);
    CHECK(plan.net[1].block == 200);
    CHECK(plan.net[1].slot == 0 * kBlocksPerSegment + 2);  // rewritten after the discard
    CHECK_FALSE(plan.net[1].dropped);
    CHECK(plan.net[2].block == 300);
    CHECK(plan.net[2].dropped);  // the discard came later
    REQUIRE(plan.punches.size() == 2);
    CHECK(plan.point.cache_nonce == 42);
    CHECK(plan.point.chunk_seq == 25);
    CHECK(plan.point.segment_id == 8);
    CHECK_FALSE(plan.point.whole);  // the segment being filled: a partial point
    CHECK(plan.ends == std::vector<uint32_t>{10, 4});
    // One read per segment, over the blocks taken.
    REQUIRE(plan.ranges.size() == 2);
    CHECK(plan.ranges[0].from == 1);
    CHECK(plan.ranges[0].to == 5);
    CHECK(plan.ranges[1].from == 2);
    CHECK(plan.ranges[1].to == 3);
    CHECK(plan.total == 5 * kBlockSize);
  }
  SUBCASE("without a journal: only what is still dirty") {
    const Plan plan = BuildPlan(log.views, log.slots, {}, 42, false);
    CHECK(plan.taken.size() == 4);
    CHECK(plan.ranges[0].from == 2);
  }
  SUBCASE("what is already applied is not taken again") {
    log.views[0].applied = 4;
    const Plan plan = BuildPlan(log.views, log.slots, {}, 42, true);
    CHECK(plan.taken.size() == 2);  // 300 (pos 4) and the second 200
  }
}

TEST_CASE("a packed unit: runs sorted by address, adjacent sectors merged, partial blocks by sector") {
  Log log(1);
  log.Segment(1, 0, 128, 5);
  log.Put(1, 11);
  log.Put(2, 10);
  log.Put(3, 13, true, 0x0f);  // the first 2 KiB of block 13 only
  log.Discard(4, 50, 2);
  const Plan plan = BuildPlan(log.views, log.slots, {}, 1, true);
  std::vector<Piece> pieces;
  const journal::Unit unit = Pack(plan, &pieces);
  REQUIRE(unit.punches.size() == 1);
  CHECK(unit.punches[0].offset == 50 * kBlockSize);
  CHECK(unit.punches[0].length == 2 * kBlockSize);
  REQUIRE(unit.runs.size() == 2);
  CHECK(unit.runs[0].offset == 10 * kBlockSize);  // blocks 10 and 11, one run
  CHECK(unit.runs[0].length == 2 * kBlockSize);
  CHECK(unit.runs[1].offset == 13 * kBlockSize);
  CHECK(unit.runs[1].length == 4 * kSectorSize);
  REQUIRE(unit.data_len == 2 * kBlockSize + 4 * kSectorSize);
  CHECK(unit.data == nullptr);  // not copied: the pieces say where it lies
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[0].at == 0);  // block 10 was at slot 2
  CHECK(pieces[0].slot == 2);
  CHECK(pieces[0].len == kBlockSize);
  CHECK(pieces[1].at == kBlockSize);  // block 11 at slot 1
  CHECK(pieces[1].slot == 1);
  CHECK(pieces[2].at == 2 * kBlockSize);  // the first four sectors of slot 3, one piece
  CHECK(pieces[2].slot == 3);
  CHECK(pieces[2].from == 0);
  CHECK(pieces[2].len == 4 * kSectorSize);
}

TEST_CASE("the pieces of a packed unit follow its sectors: a hole in the mask starts a new piece") {
  Log log(1);
  log.Segment(1, 0, 8, 3);
  log.Put(1, 20, true, 0x33);  // sectors 0-1 and 4-5
  const Plan plan = BuildPlan(log.views, log.slots, {}, 1, true);
  std::vector<Piece> pieces;
  const journal::Unit unit = Pack(plan, &pieces);
  REQUIRE(unit.runs.size() == 2);
  REQUIRE(pieces.size() == 2);
  CHECK(pieces[0].from == 0);
  CHECK(pieces[0].len == 2 * kSectorSize);
  CHECK(pieces[1].at == 2 * kSectorSize);
  CHECK(pieces[1].from == 4 * kSectorSize);
  CHECK(pieces[1].len == 2 * kSectorSize);
  CHECK(unit.data_len == 4 * kSectorSize);
}

TEST_CASE("a run of a packed unit is at most 1 MiB") {
  Log log(3);
  for (uint32_t k = 0; k < 3; k++) {
    log.Segment(k + 1, k, 128, k + 1);
    for (uint32_t pos = 1; pos < 128; pos++) log.Put(pos, uint64_t{k} * 127 + pos - 1);
  }
  const Plan plan = BuildPlan(log.views, log.slots, {}, 1, true);
  std::vector<Piece> pieces;
  const journal::Unit unit = Pack(plan, &pieces);
  uint64_t at = 0;
  for (const format::ByteRange& r : unit.runs) {
    CHECK(r.offset == at);
    CHECK(r.length <= (1u << 20));
    at += r.length;
  }
  CHECK(at == 381 * kBlockSize);
  CHECK(unit.runs.size() == 2);
}

TEST_CASE("a block failing its checksum is reported, and left out only when asked") {
  Log log(1);
  log.Segment(1, 0, 8, 3);
  log.Put(1, 5);
  log.Put(2, 6);
  std::vector<uint32_t> crcs(kBlocksPerSegment, 0);
  Plan plan = BuildPlan(log.views, log.slots, crcs, 1, true);
  std::vector<uint8_t> data = ReadBuffer(plan);
  // The right crc for block 5 (slot 1) only.
  const uint32_t good = crc32c::Value(data.data() + plan.taken[0].data, kBlockSize);
  crcs[1] = good;
  plan = BuildPlan(log.views, log.slots, crcs, 1, true);
  std::vector<Item*> items;
  for (Item& it : plan.net) items.push_back(&it);
  const auto crc_of = [&](const Item& it) { return crc32c::Value(data.data() + it.data, kBlockSize); };
  std::vector<Item> bad = CheckData(items, crc_of, false);
  REQUIRE(bad.size() == 1);
  CHECK(bad[0].block == 6);
  CHECK_FALSE(plan.net[1].dropped);
  bad = CheckData(items, crc_of, true);
  REQUIRE(bad.size() == 1);
  CHECK(plan.net[1].dropped);
  std::vector<Piece> pieces;
  const journal::Unit unit = Pack(plan, &pieces);
  REQUIRE(unit.runs.size() == 1);
  CHECK(unit.runs[0].offset == 5 * kBlockSize);
}

}  // namespace
}  // namespace wbfs::wb
