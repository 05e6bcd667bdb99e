// wbfs check's analysis, on caches built by the engine in memory.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "log/check.h"
#include "log/replay.h"
#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// An 8 MiB cache written by `fill` through an engine that then crashes
// (no clean close).
std::shared_ptr<MemDisk> CrashedCache(size_t backing_size, const std::function<void(Engine&)>& fill) {
  EngineRig r(backing_size, 8 << 20);
  r.opts.threads = false;
  r.Open();
  fill(*r.e);
  r.ProcessCrash();
  return r.cache;
}

// A cache with several synced segments and 3 chunks cut by fsyncs after.
std::shared_ptr<MemDisk> BuildCache() {
  return CrashedCache(8 << 20, [](Engine& e) {
    std::vector<uint8_t> b(4096, 7);
    for (int i = 0; i < 600; i++) REQUIRE(e.Write(uint64_t(i) * 4096, b.data(), 4096).ok());
    REQUIRE(e.Flush().ok());
    for (int i = 0; i < 3; i++) {
      REQUIRE(e.Write(uint64_t(700 + i) * 4096, b.data(), 4096).ok());
      REQUIRE(e.Flush().ok());
    }
  });
}

log::CheckReport Check(const std::shared_ptr<MemDisk>& cache) {
  log::CheckReport r;
  REQUIRE(log::CheckCache(*Dev(cache), &r).ok());
  return r;
}

}  // namespace

TEST_CASE("check: a crashed but consistent cache") {
  auto cache = BuildCache();
  log::CheckReport r = Check(cache);
  CHECK(r.consistent);
  CHECK(r.nr_dirty_cache_blocks == 603);
  CHECK(r.nr_chunks >= 8);
  CHECK(r.segments.size() == 5);  // 603 blocks, 127 a segment
  for (const auto& s : r.segments) CHECK(s.valid);
  CHECK(r.problems.empty());
}

TEST_CASE("check: a flipped byte in synced data is corruption at its segment") {
  auto cache = BuildCache();
  log::CheckReport r0 = Check(cache);
  const uint64_t off = r0.segments[1].offset + 5 * 4096 + 100;
  cache->data[off] ^= 1;
  log::CheckReport r = Check(cache);
  CHECK_FALSE(r.consistent);
  REQUIRE(!r.problems.empty());
  CHECK(r.problems[0].corrupt);
  CHECK(r.problems[0].offset >= r0.segments[1].offset);
  CHECK(r.problems[0].offset < r0.segments[1].offset + format::kSegmentSize);
  CHECK_FALSE(r.segments[1].valid);
}

TEST_CASE("check: a torn newest chunk is the normal end of the log") {
  auto cache = BuildCache();
  log::CheckReport r0 = Check(cache);
  // Zero the data block of the last chunk: its header survived, its data not.
  const auto& last = r0.segments.back();
  cache->data[last.offset + last.bytes - 100] ^= 0xff;
  log::CheckReport r = Check(cache);
  CHECK(r.consistent);
  REQUIRE(r.problems.size() == 1);
  CHECK_FALSE(r.problems[0].corrupt);
  CHECK(r.problems[0].what.find("torn newest write") != std::string::npos);
  CHECK(r.nr_dirty_cache_blocks == 602);
}

TEST_CASE("check: a synced chunk whose header is gone is lost data, not a torn tail") {
  auto cache = BuildCache();
  log::CheckReport r0 = Check(cache);
  // The first chunk of segment 3: later chunks record it as synced.
  cache->data[r0.segments[2].offset + 200] ^= 0x55;
  log::CheckReport r = Check(cache);
  CHECK_FALSE(r.consistent);
  bool found = false;
  for (const auto& p : r.problems) found = found || (p.corrupt && p.what.find("records it as synced") != std::string::npos);
  CHECK(found);
}

TEST_CASE("check: garbage superblock, one torn record, blank cache") {
  auto cache = BuildCache();
  SUBCASE("garbage superblock") {
    for (int i = 0; i < 4096; i++) cache->data[i] = uint8_t(i * 7 + 1);
    log::CheckReport r = Check(cache);
    CHECK_FALSE(r.consistent);
    REQUIRE(!r.problems.empty());
    CHECK(r.problems[0].offset == 0);
  }
  SUBCASE("one torn record is fine, the other serves") {
    // Each clean unmount writes a record, alternating slots: two mounts
    // closed cleanly, then a third that crashes, leave both slots valid.
    EngineRig rig(8 << 20, 8 << 20);
    cache = rig.cache;
    std::vector<uint8_t> b(4096, 7);
    rig.opts.threads = false;
    for (int mount = 0; mount < 3; mount++) {
      rig.Open();
      for (int i = 0; i < 50; i++) REQUIRE(rig.e->Write(uint64_t(mount * 50 + i) * 4096, b.data(), 4096).ok());
      REQUIRE(rig.e->Flush().ok());
      if (mount < 2) {
        rig.Close();
        continue;
      }
      rig.ProcessCrash();
    }
    log::CheckReport r0 = Check(cache);
    REQUIRE(r0.valid_records == 2);
    REQUIRE(r0.meta.record_slot >= 0);
    // Tear the record in use: the other (older) one has to serve.
    const int used = r0.meta.record_slot;
    const uint64_t slot_off = format::kRecordOffsets[used];
    cache->data[slot_off + 30] ^= 1;
    log::CheckReport r = Check(cache);
    CHECK(r.consistent);
    CHECK(r.valid_records == 1);
    CHECK(r.meta.record_slot == 1 - used);
    CHECK(r.meta.record.seq < r0.meta.record.seq);
    REQUIRE(r.problems.size() == 1);
    CHECK(r.problems[0].kind == log::Damage::kBadRecord);
    CHECK(r.problems[0].offset == slot_off);
    CHECK_FALSE(r.problems[0].corrupt);
    // The older record's tail replays the same log.
    CHECK(r.nr_dirty_cache_blocks == r0.nr_dirty_cache_blocks);
    CHECK(r.last_seq == r0.last_seq);
  }
  SUBCASE("blank") {
    std::memset(cache->data.data(), 0, 4096);
    log::CheckReport r = Check(cache);
    CHECK(r.blank);
    CHECK(r.consistent);
  }
}

namespace {

log::LogScan Scan(const std::shared_ptr<MemDisk>& cache, unsigned prefetch_threads) {
  auto dev = Dev(cache);
  log::CacheMeta meta;
  REQUIRE(log::ReadCacheMeta(*dev, &meta).ok());
  log::ScanOptions so;
  so.prefetch_threads = prefetch_threads;
  log::LogScan scan;
  REQUIRE(log::ScanLog(*dev, meta, so, &scan).ok());
  return scan;
}

void CheckSameScan(const log::LogScan& a, const log::LogScan& b) {
  REQUIRE(a.chunks.size() == b.chunks.size());
  for (size_t i = 0; i < a.chunks.size(); i++) {
    CHECK(a.chunks[i].seq == b.chunks[i].seq);
    CHECK(a.chunks[i].segment_id == b.chunks[i].segment_id);
    CHECK(a.chunks[i].offset == b.chunks[i].offset);
    CHECK(a.chunks[i].header_crc == b.chunks[i].header_crc);
  }
  CHECK(a.entries.size() == b.entries.size());
  CHECK(a.end.segment_id == b.end.segment_id);
  CHECK(a.end.block == b.end.block);
  CHECK(a.end_reason == b.end_reason);
  CHECK(a.next_seq == b.next_seq);
}

}  // namespace

TEST_CASE("scan: prefetching readers find the same log as the scan one header at a time") {
  SUBCASE("a log of full segments and fsync-cut chunks, crashed") {
    auto cache = BuildCache();
    log::LogScan one = Scan(cache, 0);
    CHECK(one.chunks.size() >= 8);
    CheckSameScan(one, Scan(cache, 3));
    // A prefetch read that fails is read again by the scan itself.
    cache->fail_read_after = 3;  // superblock, two records: the first prefetch read fails
    CheckSameScan(one, Scan(cache, 4));
    CHECK(cache->fail_read_after == -1);  // the injected failure did happen
  }
  SUBCASE("a log that wrapped around the ring several times") {
    auto cache = CrashedCache(16 << 20, [](Engine& e) {
      std::vector<uint8_t> b(4096, 9);
      for (int i = 0; i < 5000; i++) {
        REQUIRE(e.Write(uint64_t(i * 7 % 4096) * 4096, b.data(), 4096).ok());
        if (i % 97 == 0) REQUIRE(e.Flush().ok());
      }
      REQUIRE(e.Flush().ok());
    });
    log::LogScan one = Scan(cache, 0);
    CHECK(one.chunks.size() > 10);
    CHECK(one.chunks.front().segment_id > 14);  // the ring (13 segments) went round
    CheckSameScan(one, Scan(cache, 8));
  }
}

// ---------------------------------------------------------------- the walker, the reporter, the fold

namespace {

struct Collect final : log::Reporter {
  std::vector<std::pair<log::Damage, uint64_t>> got;
  void Damaged(log::Damage kind, uint64_t offset, const std::string&) override { got.emplace_back(kind, offset); }
};

log::CacheMeta Meta(const std::shared_ptr<MemDisk>& cache) {
  log::CacheMeta meta;
  REQUIRE(log::ReadCacheMeta(*Dev(cache), &meta).ok());
  return meta;
}

}  // namespace

TEST_CASE("walker: why the chain and a segment walk stop") {
  auto cache = BuildCache();
  log::CheckReport r0 = Check(cache);
  CHECK(r0.end == log::WalkStop::kUnwritten);  // a crashed log ends at blocks never written
  const auto& last = r0.segments.back();
  SUBCASE("a damaged header after the last chunk's is a bad header") {
    const uint64_t end = last.offset + last.bytes;
    cache->data[end] = 'X';  // a header's first byte: magic
    CHECK(Check(cache).end == log::WalkStop::kBadHeader);
  }
  SUBCASE("torn data") {
    cache->data[last.offset + last.bytes - 100] ^= 0xff;
    log::CheckReport r = Check(cache);
    CHECK(r.end == log::WalkStop::kTornData);
    REQUIRE(r.problems.size() == 1);
    CHECK(r.problems[0].kind == log::Damage::kTornChunk);
  }
  SUBCASE("segment walks") {
    const log::CacheMeta meta = Meta(cache);
    log::SegmentDump d;
    uint64_t err = 0;
    REQUIRE(log::DumpSegment(*Dev(cache), meta.sb, r0.segments[0].id, &d, &err).ok());
    CHECK(d.stop == log::WalkStop::kSegmentEnd);  // a full segment: one chunk
    CHECK(d.chunks.size() == 1);
    REQUIRE(log::DumpSegment(*Dev(cache), meta.sb, last.id, &d, &err).ok());
    CHECK(d.stop == log::WalkStop::kUnwritten);
    CHECK(d.chunks.size() == last.chunks);
    // The slot of the first segment, asked for as the next lap's segment.
    REQUIRE(log::DumpSegment(*Dev(cache), meta.sb, r0.segments[0].id + meta.sb.nr_segments, &d, &err).ok());
    CHECK(d.stop == log::WalkStop::kOtherSlot);
    CHECK(d.other_segment == r0.segments[0].id);
    CHECK(d.chunks.empty());
  }
}

TEST_CASE("reporter: every synced chunk whose data is bad is reported, with its offset") {
  auto cache = BuildCache();
  log::CheckReport r0 = Check(cache);
  const uint64_t a = r0.segments[1].offset + 5 * 4096 + 100, b = r0.segments[2].offset + 9 * 4096;
  cache->data[a] ^= 1;
  cache->data[b] ^= 1;
  Collect rep;
  log::ScanOptions so;
  so.verify_all_data = true;
  so.reporter = &rep;
  log::LogScan scan;
  REQUIRE(log::ScanLog(*Dev(cache), Meta(cache), so, &scan).ok());
  REQUIRE(rep.got.size() == 2);
  CHECK(rep.got[0].first == log::Damage::kCorruptData);
  CHECK(rep.got[0].second == a / 4096 * 4096);
  CHECK(rep.got[1].second == b / 4096 * 4096);
  CHECK(scan.corrupt_offset == rep.got[0].second);
  log::CheckReport r = Check(cache);
  CHECK_FALSE(r.segments[1].valid);
  CHECK_FALSE(r.segments[2].valid);
}

TEST_CASE("replay fold: newest copies, dirty flags, discards, what the journal applied") {
  auto cache = CrashedCache(8 << 20, [](Engine& e) {
    std::vector<uint8_t> b(4096, 3);
    for (int i = 0; i < 40; i++) REQUIRE(e.Write(uint64_t(i) * 4096, b.data(), 4096).ok());
    REQUIRE(e.Flush().ok());
    for (int i = 0; i < 10; i++) REQUIRE(e.Write(uint64_t(i) * 4096, b.data(), 4096).ok());  // rewrites
    REQUIRE(e.Flush().ok());
    REQUIRE(e.Discard(20 * 4096, 5 * 4096).ok());
    REQUIRE(e.Flush().ok());
  });
  const log::CacheMeta meta = Meta(cache);
  log::LogScan scan;
  REQUIRE(log::ScanLog(*Dev(cache), meta, log::ScanOptions(), &scan).ok());
  const log::ReplayState st = log::Replay(scan);
  CHECK(st.nr_cached() == 35);
  CHECK(st.nr_dirty == 35);
  REQUIRE(st.discards.size() == 1);
  CHECK(st.discards[0].start == 20);
  CHECK(st.discards[0].count == 5);
  CHECK(st.blocks.count(22) == 0);
  // Block 3's newest copy is the rewrite: in a later chunk than block 30's.
  REQUIRE(st.blocks.count(3) == 1);
  CHECK(scan.chunks[st.blocks.at(3).chunk].seq > scan.chunks[st.blocks.at(30).chunk].seq);
  CHECK(scan.entries[scan.chunks[st.blocks.at(3).chunk].first_entry + st.blocks.at(3).index].block == 3);
  // Everything applied by the journal: cached, nothing dirty, nothing pending.
  const log::ReplayState applied = log::Replay(scan, scan.next_seq - 1);
  CHECK(applied.nr_cached() == 35);
  CHECK(applied.nr_dirty == 0);
  CHECK(applied.discards.empty());
  // The engine's replay arrives at the same state.
  EngineRig rig(8 << 20, 0);
  rig.cache = cache;  // the one built above
  rig.opts.threads = false;
  rig.Open();
  CHECK(rig.e->Stats().nr_dirty_cache_blocks == st.nr_dirty);
  CHECK(rig.e->Stats().nr_cached_blocks == st.nr_cached());
  CHECK(rig.e->Stats().pending_discards == st.discards.size());
}
