#include "log/check.h"

#include <map>
#include <unordered_map>

#include "util/aligned_buffer.h"
#include "util/coding.h"

namespace wbfs::log {

using format::kBlockSize;

BlockCounts CountBlocks(const LogScan& scan) {
  std::unordered_map<uint64_t, bool> dirty;  // block -> dirty
  BlockCounts n;
  for (const ChunkInfo& c : scan.chunks) {
    for (uint32_t i = 0; i < c.nr_extents; i++) {
      const format::Extent& x = scan.extents[c.first_extent + i];
      if (x.kind == format::kExtentPunched) continue;
      // Every discard the log still holds is replayed as pending: writeback
      // punches it on the backing before the segment leaves the log.
      if (x.kind == format::kExtentDiscard) n.discards++;
      if (x.count > dirty.size()) {
        for (auto it = dirty.begin(); it != dirty.end();) {
          it = it->first - x.start < x.count ? dirty.erase(it) : std::next(it);
        }
      } else {
        for (uint64_t b = x.start; b < x.start + x.count; b++) dirty.erase(b);
      }
    }
    for (uint32_t i = 0; i < c.nr_blocks; i++) {
      const format::ChunkEntry& e = scan.entries[c.first_entry + i];
      dirty[e.block] = (e.flags & format::kEntryDirty) != 0;
    }
  }
  n.cached = dirty.size();
  for (const auto& [b, d] : dirty) n.dirty += d;
  return n;
}

Status CheckCache(Device& cache, CheckReport* r) {
  *r = CheckReport();
  Status st = ReadCacheMeta(cache, &r->meta);
  if (!st.ok()) {
    if (st.code() != Status::Code::kCorruption) return st;
    r->consistent = false;
    // A superblock that does not decode, or two records that do not.
    uint64_t at = st.message().find("record") != std::string::npos ? format::kRecordOffsets[0] : 0;
    r->problems.push_back({at, st.message(), true});
    return Status::OK();
  }
  if (r->meta.blank) {
    r->blank = true;
    return Status::OK();
  }
  AlignedBuffer block(kBlockSize);
  for (int slot = 0; slot < 2; slot++) {
    WBFS_RETURN_IF_ERROR(cache.ReadAt(format::kRecordOffsets[slot], block.data(), kBlockSize));
    format::Record rec;
    Status rs = format::DecodeRecord(block.data(), &rec);
    if (rs.ok() && rec.nonce == r->meta.sb.nonce) {
      r->valid_records++;
    } else if (!format::IsZero(block.data(), kBlockSize)) {
      // One bad record is what a torn record write leaves: the other serves.
      r->problems.push_back({format::kRecordOffsets[slot],
                             "superblock record " + std::to_string(slot) + ": " +
                                 (rs.ok() ? std::string("of another format") : rs.message()) +
                                 " (the other record is used)",
                             false});
    }
  }

  LogScan scan;
  ScanOptions so;
  so.verify_all_data = true;
  WBFS_RETURN_IF_ERROR(ScanLog(cache, r->meta, so, &scan));
  r->end_reason = scan.end_reason;
  r->nr_chunks = scan.chunks.size();
  if (!scan.chunks.empty()) {
    r->first_seq = scan.chunks.front().seq;
    r->last_seq = scan.chunks.back().seq;
    r->first_segment = scan.chunks.front().segment_id;
    r->last_segment = scan.chunks.back().segment_id;
  }
  BlockCounts counts = CountBlocks(scan);
  r->nr_cached_blocks = counts.cached;
  r->nr_dirty_cache_blocks = counts.dirty;
  r->nr_pending_discards = counts.discards;
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
  if (scan.corrupt) {
    r->consistent = false;
    r->problems.push_back({scan.corrupt_offset,
                           "a synced chunk's data does not match its checksum (corruption)", true});
    for (CheckedSegment& s : r->segments) {
      if (scan.corrupt_offset >= s.offset && scan.corrupt_offset < s.offset + format::kSegmentSize) {
        s.valid = false;
      }
    }
  }
  if (scan.dropped_chunks > 0 || scan.end_reason.find("torn") != std::string::npos) {
    // The chain's end is a chunk whose data never fully reached the disk.
    r->problems.push_back({scan.end_offset,
                           "torn newest write: " + scan.end_reason + "; " +
                               std::to_string(scan.dropped_chunks) +
                               " chunk(s) from there on are not part of the log",
                           false});
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
  WBFS_RETURN_IF_ERROR(FindSyncedLoss(cache, r->meta, scan, 0, &loss));
  if (loss.found) {
    r->consistent = false;
    r->problems.push_back({scan.end_offset, DescribeSyncedLoss(loss), true});
  }
  return Status::OK();
}

}  // namespace wbfs::log
