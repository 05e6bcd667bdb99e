#include "log/check.h"

#include "log/replay.h"

namespace wbfs::log {

using format::kBlockSize;

namespace {

// Every damage the reader reports becomes a problem of the report.
class CheckReporter final : public Reporter {
 public:
  explicit CheckReporter(CheckReport* r) : r_(r) {}
  void Damaged(Damage kind, uint64_t offset, const std::string& what) override {
    const bool corrupt = IsCorruption(kind);
    r_->problems.push_back({offset, what, corrupt, kind});
    if (corrupt) r_->consistent = false;
  }

 private:
  CheckReport* r_;
};

}  // namespace

Status CheckCache(Device& cache, CheckReport* r) {
  *r = CheckReport();
  CheckReporter reporter(r);
  Status st = ReadCacheMeta(cache, &r->meta, &reporter);
  // Corruption (a superblock or both records that do not decode) was
  // reported; anything else means the cache could not be read.
  if (!st.ok()) return st.code() == Status::Code::kCorruption ? Status::OK() : st;
  if (r->meta.blank) {
    r->blank = true;
    return Status::OK();
  }
  for (const RecordSlot& s : r->meta.records.slot) r->valid_records += s.valid();

  LogScan scan;
  ScanOptions so;
  so.verify_all_data = true;
  so.reporter = &reporter;
  WBFS_RETURN_IF_ERROR(ScanLog(cache, r->meta, so, &scan));
  r->end = scan.stop;
  r->end_reason = scan.end_reason;
  r->nr_chunks = scan.chunks.size();
  if (!scan.chunks.empty()) {
    r->first_seq = scan.chunks.front().seq;
    r->last_seq = scan.chunks.back().seq;
    r->first_segment = scan.chunks.front().segment_id;
    r->last_segment = scan.chunks.back().segment_id;
  }
  const ReplayState state = Replay(scan);
  r->nr_cached_blocks = state.nr_cached();
  r->nr_dirty_cache_blocks = state.nr_dirty;
  r->dirty_bytes = state.nr_dirty * kBlockSize;
  r->nr_pending_discards = state.discards.size();
  for (const ChunkInfo& c : scan.chunks) {
    if (r->segments.empty() || r->segments.back().id != c.segment_id) {
      CheckedSegment s;
      s.id = c.segment_id;
      s.offset = format::SegmentBlockOffset(r->meta.sb, c.segment_id, 0);
      r->segments.push_back(s);
    }
    r->segments.back().bytes += uint64_t{format::ChunkBlocks(c.nr_blocks)} * kBlockSize;
    r->segments.back().chunks++;
  }
  for (const Problem& p : r->problems) {
    if (p.kind != Damage::kCorruptData) continue;
    for (CheckedSegment& s : r->segments) {
      if (p.offset >= s.offset && p.offset < s.offset + format::kSegmentSize) s.valid = false;
    }
  }
  if (scan.stop == WalkStop::kTornData) {
    // The chain's end is a chunk whose data never fully reached the disk.
    CheckedSegment s;
    s.id = scan.end.segment_id;
    s.offset = format::SegmentBlockOffset(r->meta.sb, scan.end.segment_id, 0);
    s.valid = false;
    if (r->segments.empty() || r->segments.back().id != s.id) r->segments.push_back(s);
    else r->segments.back().valid = false;
  }

  // A chunk that ends the chain although a later chunk records it as
  // synced was lost after it was made durable: corruption, not a torn tail.
  SyncedLoss loss;
  WBFS_RETURN_IF_ERROR(FindSyncedLoss(cache, r->meta, scan, 0, &loss, &reporter));
  return Status::OK();
}

}  // namespace wbfs::log
