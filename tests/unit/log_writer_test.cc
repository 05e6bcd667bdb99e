// The LogWriter alone, against the log reader: what it writes is the log
// that replay reads, it resumes where a scan ended, and its record moves
// the tail.
#include <doctest/doctest.h>

#include <cstring>

#include "log/log_reader.h"
#include "log/log_writer.h"
#include "support/mem_device.h"

namespace wbfs {
namespace {

using format::kBlockSize;
using format::kBlocksPerSegment;
using test::MemDevice;
using test::MemDisk;

constexpr uint64_t kBackingSize = 64 << 20;

void Fill(uint8_t* p, uint64_t block, uint64_t version) {
  for (size_t i = 0; i < kBlockSize; i += 8) {
    const uint64_t v = block * 1000003 + version * 7 + i;
    std::memcpy(p + i, &v, 8);
  }
}

// A cache formatted by the LogWriter and a writer resumed on it (as the
// engine does for a freshly formatted cache).
struct Rig {
  std::shared_ptr<MemDisk> disk = std::make_shared<MemDisk>(8 << 20);
  MemDevice dev{disk};
  log::CacheMeta meta;
  Mutex mu;
  std::unique_ptr<log::LogWriter> w;
  uint64_t written_blocks = 0;  // image blocks 0, 1, ... in order, version = block

  Rig() {
    REQUIRE(log::LogWriter::Format(dev, kBackingSize, "", 42, &meta).ok());
    w = std::make_unique<log::LogWriter>(meta.sb, &dev, log::LogWriter::Options{2, 64}, 7);
    w->ResumeAtRecord(meta.record);
    w->SettleSeqs();
  }

  // Appends n blocks as one chunk (a new segment when the open one is
  // full), cuts it and writes it. The caller holds mu.
  void Chunk(uint32_t n, bool seal = false) REQUIRES(mu) {
    if (!w->HasRoom()) {
      if (w->cur() >= 0) FAIL("the open chunk is full: cut it first");
      w->ReleaseBuffer(w->RingSlot(w->last_seg_id() + 1));
      REQUIRE(w->HasFreeBuffer());
      w->Begin();
    }
    uint8_t data[kBlockSize];
    uint32_t k = 0;
    for (; k < n && w->HasRoom(); k++) {
      Fill(data, written_blocks + k, written_blocks + k);
      w->Append(data);
    }
    uint8_t* header = w->OpenHeader();
    for (uint32_t i = 0; i < k; i++) {
      format::EncodeChunkEntry(header, i, {written_blocks + i, format::kFullMask, format::kEntryDirty});
    }
    written_blocks += k;
    w->Cut(static_cast<uint16_t>(k), 0, seal, 1000);
    while (w->HasJobs()) {
      log::FlushedChunk f;
      REQUIRE(w->FlushFront(&mu, false, &f).ok());
      CHECK(f.written);
    }
  }

  log::LogScan Scan() {
    log::CacheMeta m;
    REQUIRE(log::ReadCacheMeta(dev, &m).ok());
    log::LogScan scan;
    REQUIRE(log::ScanLog(dev, m, log::ScanOptions{}, &scan).ok());
    return scan;
  }
};

// Every block the scan found, with its data as read from the cache.
void CheckScanHolds(Rig& r, const log::LogScan& scan, uint64_t blocks) {
  uint64_t seen = 0;
  std::vector<uint8_t> got(kBlockSize), want(kBlockSize);
  for (const log::ChunkInfo& c : scan.chunks) {
    for (uint32_t i = 0; i < c.nr_blocks; i++) {
      const format::ChunkEntry& e = scan.entries[c.first_entry + i];
      REQUIRE(e.block == seen);
      const uint64_t off = format::SegmentBlockOffset(r.meta.sb, c.segment_id, c.offset + 1 + i);
      REQUIRE(r.dev.ReadAt(off, got.data(), kBlockSize).ok());
      Fill(want.data(), e.block, e.block);
      REQUIRE(got == want);
      seen++;
    }
  }
  CHECK(seen == blocks);
}

TEST_CASE("LogWriter: the chunks it writes are the log the reader replays, across segments") {
  Rig r;
  MutexLock lk(r.mu);
  uint32_t chunks = 0;
  // Three segments and a half: chunks of 1..40 blocks, cut where they end.
  while (r.w->last_seg_id() < 4 || r.w->seg(r.w->RingSlot(4)).fill < 60) {
    r.Chunk(1 + chunks % 40);
    chunks++;
  }
  CHECK(r.w->last_cut_seq() == chunks);
  CHECK(r.w->flushed_seq() == chunks);
  CHECK(r.w->next_seq() == chunks + 1);
  CHECK(r.w->durable_seq() == 0);  // nothing synced the cache yet
  const log::LogScan scan = r.Scan();
  REQUIRE(scan.chunks.size() == chunks);
  for (uint32_t i = 0; i < chunks; i++) CHECK(scan.chunks[i].seq == i + 1);
  CHECK(scan.next_seq == r.w->next_seq());
  CHECK(scan.end.segment_id == 4);
  CHECK(scan.end.block == r.w->chunk_start());
  CheckScanHolds(r, scan, r.written_blocks);
}

TEST_CASE("LogWriter: resumed where a scan ended, it continues the chain in the same segment") {
  Rig r;
  {
    MutexLock lk(r.mu);
    for (int i = 0; i < 6; i++) r.Chunk(30);  // 4 and a short one fill segment 1; segment 2 is partly filled
    REQUIRE(r.w->last_seg_id() == 2);
  }
  const log::LogScan scan = r.Scan();
  REQUIRE(scan.chunks.size() == 6);
  REQUIRE(scan.end.block != 0);
  // A new writer, as mount makes one: record, then what the scan found.
  auto w2 = std::make_unique<log::LogWriter>(r.meta.sb, &r.dev, log::LogWriter::Options{2, 64}, 8);
  w2->ResumeAtRecord(r.meta.record);
  for (const log::ChunkInfo& c : scan.chunks) w2->ReplayChunk(c, 0);
  w2->ResumeAfterScan(scan);
  w2->SettleSeqs();
  CHECK(w2->cur() == w2->RingSlot(2));
  CHECK(w2->seg(w2->RingSlot(2)).id == 2);
  CHECK(w2->seg(w2->RingSlot(1)).first_chunk_seq == 1);
  CHECK(w2->seg(w2->RingSlot(2)).first_chunk_seq == 6);
  CHECK(w2->chunk_start() == scan.end.block);
  CHECK(w2->next_seq() == 7);
  r.w = std::move(w2);
  {
    MutexLock lk(r.mu);
    for (int i = 0; i < 4; i++) r.Chunk(30);
  }
  const log::LogScan again = r.Scan();
  INFO(again.end_reason);
  CHECK(again.chunks.size() == 10);
  CheckScanHolds(r, again, r.written_blocks);
}

TEST_CASE("LogWriter: a sealed chunk ends its segment; a full one does too") {
  Rig r;
  MutexLock lk(r.mu);
  r.Chunk(3, /*seal=*/true);
  CHECK(r.w->cur() == -1);
  CHECK(r.w->seg(0).sealed);
  CHECK(r.w->last_sealed_id() == 1);
  r.Chunk(kBlocksPerSegment - 2);  // header + 126 blocks: no chunk fits after it
  CHECK(r.w->cur() == -1);
  CHECK(r.w->last_seg_id() == 2);
  CHECK(r.w->seg(1).sealed);
  CHECK(r.w->seg(1).fill == kBlocksPerSegment - 1);
  const log::LogScan scan = r.Scan();
  REQUIRE(scan.chunks.size() == 2);
  CHECK((scan.chunks[0].flags & format::kChunkSeal) != 0);
  CHECK(scan.chunks[1].segment_id == 2);
}

TEST_CASE("LogWriter: a failed chunk write moves no seq and the chain stays readable") {
  Rig r;
  MutexLock lk(r.mu);
  r.Chunk(10);
  uint8_t data[kBlockSize];
  Fill(data, 99, 99);
  r.w->Append(data);
  format::EncodeChunkEntry(r.w->OpenHeader(), 0, {99, format::kFullMask, format::kEntryDirty});
  r.w->Cut(1, 0, false, 1000);
  r.disk->fail_write_after = 0;
  log::FlushedChunk f;
  const Status st = r.w->FlushFront(&r.mu, false, &f);
  CHECK_FALSE(st.ok());
  CHECK_FALSE(f.written);
  CHECK(r.w->flushed_seq() == 1);
  CHECK(r.w->last_cut_seq() == 2);
  CHECK_FALSE(r.w->HasJobs());
  CHECK(r.w->seg(0).unflushed == 0);
  CHECK(r.Scan().chunks.size() == 1);
}

TEST_CASE("LogWriter: the record moves the tail, alternates slots and makes the flushed chunks durable") {
  Rig r;
  MutexLock lk(r.mu);
  while (r.w->last_seg_id() < 3) r.Chunk(40);
  const uint64_t seg2_first = r.w->seg(r.w->RingSlot(2)).first_chunk_seq;
  REQUIRE(seg2_first > 1);
  const uint64_t syncs = r.disk->syncs;
  REQUIRE(r.w->WriteRecord(&r.mu, 1, false).ok());
  CHECK(r.disk->syncs == syncs + 2);  // chunks first, then the record
  CHECK(r.w->durable_seq() == r.w->flushed_seq());
  CHECK(r.w->record_tail_seg() == 2);
  log::CacheMeta m;
  REQUIRE(log::ReadCacheMeta(r.dev, &m).ok());
  CHECK(m.record.seq == 2);
  CHECK(m.record_slot == 0);
  CHECK(m.record.tail_segment_id == 2);
  CHECK(m.record.tail_chunk_seq == seg2_first);
  CHECK((m.record.flags & format::kRecordClean) == 0);
  // Replay from the new tail reads segments 2 and 3 only.
  log::LogScan scan;
  REQUIRE(log::ScanLog(r.dev, m, log::ScanOptions{}, &scan).ok());
  REQUIRE(!scan.chunks.empty());
  CHECK(scan.chunks.front().seq == seg2_first);
  CHECK(scan.chunks.back().seq == r.w->last_cut_seq());
  // Everything written back: a clean record in the other slot, the tail
  // past the log.
  REQUIRE(r.w->WriteRecord(&r.mu, r.w->last_seg_id(), true).ok());
  REQUIRE(log::ReadCacheMeta(r.dev, &m).ok());
  CHECK(m.record.seq == 3);
  CHECK(m.record_slot == 1);
  CHECK((m.record.flags & format::kRecordClean) != 0);
  CHECK(m.record.tail_chunk_seq == r.w->next_seq());
  REQUIRE(log::ScanLog(r.dev, m, log::ScanOptions{}, &scan).ok());
  CHECK(scan.chunks.empty());
}

}  // namespace
}  // namespace wbfs
