// wbfs check's analysis, on caches built by the engine in memory.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "log/check.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// An 8 MiB cache written by `fill` through an engine that then crashes
// (no clean close).
std::shared_ptr<MemDisk> CrashedCache(size_t backing_size, const std::function<void(Engine&)>& fill) {
  auto backing = std::make_shared<MemDisk>(backing_size);
  auto cache = std::make_shared<MemDisk>(8 << 20);
  EngineOptions o;
  o.threads = false;
  auto e = std::move(Engine::Open(o, Dev(backing), Dev(cache)).value());
  fill(*e);
  cache->Freeze();
  e.reset();
  cache->KeepAll();
  return cache;
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
    log::CheckReport r0 = Check(cache);
    uint64_t slot_off = format::kRecordOffsets[r0.meta.record_slot == 0 ? 1 : 0];
    cache->data[slot_off + 30] ^= 1;
    log::CheckReport r = Check(cache);
    CHECK(r.consistent);
    CHECK(r.valid_records == 1);
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
