#include "log/log_reader.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "util/crc32c.h"

namespace wbfs::log {

using format::kBlockSize;

Status ReadCacheMeta(Device& cache, CacheMeta* meta) {
  *meta = CacheMeta();
  if (cache.Size() < kBlockSize) {
    return Status::InvalidArgument(cache.Name() + " is smaller than one 4 KiB block");
  }
  AlignedBuffer buf(kBlockSize);
  WBFS_RETURN_IF_ERROR(cache.ReadAt(format::kSuperblockOffset, buf.data(), kBlockSize));
  if (format::IsZero(buf.data(), kBlockSize)) {
    meta->blank = true;
    return Status::OK();
  }
  WBFS_RETURN_IF_ERROR(format::DecodeSuperblock(buf.data(), &meta->sb).WithContext(cache.Name()));
  if (cache.Size() < meta->sb.cache_size) {
    return Status::Corruption(cache.Name() + ": the cache is smaller (" +
                              std::to_string(cache.Size()) + " bytes) than when it was formatted (" +
                              std::to_string(meta->sb.cache_size) + " bytes)");
  }
  for (int slot = 0; slot < 2; slot++) {
    format::Record r;
    WBFS_RETURN_IF_ERROR(cache.ReadAt(format::kRecordOffsets[slot], buf.data(), kBlockSize));
    if (!format::DecodeRecord(buf.data(), &r).ok() || r.nonce != meta->sb.nonce) continue;
    if (meta->record_slot < 0 || r.seq > meta->record.seq) {
      meta->record = r;
      meta->record_slot = slot;
    }
  }
  if (meta->record_slot < 0) {
    return Status::Corruption(cache.Name() + ": both superblock records are invalid");
  }
  return Status::OK();
}

namespace {

// The first blocks of the next kBatch segments, read by several threads at
// once when the chain reaches a segment's block 0. A failed read leaves
// its block unfetched: the scan then reads it itself and reports the error.
class HeaderPrefetch {
 public:
  static constexpr uint64_t kBatch = 64;
  HeaderPrefetch(Device& cache, const format::Superblock& sb, unsigned threads, uint64_t end_id)
      : cache_(cache), sb_(sb), threads_(threads), end_id_(end_id), buf_(kBatch * kBlockSize), ok_(kBatch) {}

  // The prefetched block 0 of `segment_id`, or nullptr.
  const uint8_t* Get(uint64_t segment_id) {
    if (threads_ == 0) return nullptr;
    if (!fetched_ || segment_id < first_ || segment_id >= first_ + kBatch) Fetch(segment_id);
    const size_t i = static_cast<size_t>(segment_id - first_);
    return ok_[i] ? buf_.data() + i * kBlockSize : nullptr;
  }

 private:
  void Fetch(uint64_t first) {
    fetched_ = true;
    first_ = first;
    const uint64_t n = std::min<uint64_t>(kBatch, end_id_ > first ? end_id_ - first : 0);
    std::fill(ok_.begin(), ok_.end(), 0);
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads_; t++) {
      workers.emplace_back([this, t, n] {
        for (uint64_t i = t; i < n; i += threads_) {
          const uint64_t off = format::SegmentBlockOffset(sb_, first_ + i, 0);
          ok_[i] = cache_.ReadAt(off, buf_.data() + i * kBlockSize, kBlockSize).ok();
        }
      });
    }
    for (std::thread& w : workers) w.join();
  }

  Device& cache_;
  const format::Superblock& sb_;
  const unsigned threads_;
  const uint64_t end_id_;  // segments from here on are not part of this lap
  bool fetched_ = false;
  uint64_t first_ = 0;
  AlignedBuffer buf_;
  std::vector<uint8_t> ok_;  // per block of buf_ (not vector<bool>: written by several threads)
};

// Does the data of chunk `c` (read into `data`, at cache offset `off`)
// match its checksums? Version 3 checks each block against its entry's crc
// and reports the first bad block's offset; version 2 has one crc for all.
bool DataMatches(const format::Superblock& sb, const LogScan& scan, const ChunkInfo& c,
                 const uint8_t* data, uint64_t off, uint64_t* bad_at) {
  *bad_at = off;
  if (!format::HasBlockCrcs(sb)) {
    return crc32c::Value(data, size_t{c.nr_blocks} * kBlockSize) == c.data_crc;
  }
  for (uint32_t i = 0; i < c.nr_blocks; i++) {
    if (crc32c::Value(data + size_t{i} * kBlockSize, kBlockSize) != scan.entries[c.first_entry + i].crc) {
      *bad_at = off + uint64_t{i} * kBlockSize;
      return false;
    }
  }
  return true;
}

}  // namespace

Status ScanLog(Device& cache, const CacheMeta& meta, const ScanOptions& opts, LogScan* out) {
  *out = LogScan();
  const format::Superblock& sb = meta.sb;
  const format::Record& rec = meta.record;
  const uint64_t backing_blocks = sb.backing_size / kBlockSize;
  AlignedBuffer hbuf(kBlockSize);
  format::ChunkHeader h;
  HeaderPrefetch prefetch(cache, sb, opts.prefetch_threads, rec.tail_segment_id + sb.nr_segments);

  format::Position pos{rec.tail_segment_id, rec.tail_block};
  uint64_t expect_seq = rec.tail_chunk_seq;
  uint32_t prev_crc = rec.tail_prev_crc;
  uint64_t trusted = rec.durable_seq;
  for (;;) {
    uint64_t off = format::SegmentBlockOffset(sb, pos.segment_id, pos.block);
    out->end = pos;
    out->end_offset = off;
    if (pos.segment_id >= rec.tail_segment_id + sb.nr_segments) {
      out->end_reason = "the log fills the whole cache";
      break;
    }
    const uint8_t* header = pos.block == 0 ? prefetch.Get(pos.segment_id) : nullptr;
    if (header == nullptr) {
      WBFS_RETURN_IF_ERROR(cache.ReadAt(off, hbuf.data(), kBlockSize));
      header = hbuf.data();
    }
    Status st = format::DecodeChunkHeader(header, backing_blocks, &h);
    if (!st.ok()) {
      out->end_reason = format::IsZero(header, kBlockSize) ? "unwritten block" : st.message();
      break;
    }
    if (h.nonce != sb.nonce) {
      out->end_reason = "chunk of another format";
      break;
    }
    if (h.seq != expect_seq || h.prev_crc != prev_crc || h.segment_id != pos.segment_id ||
        h.offset != pos.block) {
      out->end_reason = "chunk of an earlier lap (seq " + std::to_string(h.seq) + ", expected " +
                        std::to_string(expect_seq) + ")";
      break;
    }
    ChunkInfo c;
    c.seq = h.seq;
    c.segment_id = h.segment_id;
    c.offset = h.offset;
    c.nr_blocks = h.nr_blocks;
    c.flags = h.flags;
    c.header_crc = h.header_crc;
    c.data_crc = h.data_crc;
    c.durable_seq = h.durable_seq;
    c.epoch = h.epoch;
    c.time_ms = h.time_ms;
    c.nr_extents = h.nr_extents;
    c.first_entry = out->entries.size();
    c.first_extent = out->extents.size();
    out->entries.insert(out->entries.end(), h.entries.begin(), h.entries.begin() + h.nr_blocks);
    out->extents.insert(out->extents.end(), h.extents.begin(), h.extents.begin() + h.nr_extents);
    out->chunks.push_back(c);
    trusted = std::max(trusted, std::min(h.durable_seq, h.seq - 1));
    pos = format::NextChunkPosition(h.segment_id, h.offset, h.nr_blocks, h.flags);
    expect_seq = h.seq + 1;
    prev_crc = h.header_crc;
  }
  out->trusted_seq = trusted;

  // Check data where it was not known synced (or everywhere, for check).
  AlignedBuffer dbuf(format::kMaxChunkBlocks * kBlockSize);
  size_t keep = out->chunks.size();
  for (size_t i = 0; i < out->chunks.size(); i++) {
    ChunkInfo& c = out->chunks[i];
    bool trusted_chunk = c.seq <= trusted;
    if (trusted_chunk && !opts.verify_all_data) continue;
    uint64_t off = format::SegmentBlockOffset(sb, c.segment_id, c.offset + 1);
    size_t len = size_t{c.nr_blocks} * kBlockSize;
    if (len > 0) WBFS_RETURN_IF_ERROR(cache.ReadAt(off, dbuf.data(), len));
    c.data_checked = true;
    uint64_t bad_at = 0;
    if (DataMatches(sb, *out, c, dbuf.data(), off, &bad_at)) continue;
    if (trusted_chunk) {
      if (!out->corrupt) {
        out->corrupt = true;
        out->corrupt_offset = bad_at;
      }
      continue;
    }
    keep = i;
    out->end = {c.segment_id, c.offset};
    out->end_offset = format::SegmentBlockOffset(sb, c.segment_id, c.offset);
    out->end_reason = "torn chunk (seq " + std::to_string(c.seq) + "): data checksum mismatch";
    break;
  }
  if (keep < out->chunks.size()) {
    out->dropped_chunks = out->chunks.size() - keep;
    out->entries.resize(out->chunks[keep].first_entry);
    out->extents.resize(out->chunks[keep].first_extent);
    out->chunks.resize(keep);
  }
  if (out->chunks.empty()) {
    out->next_seq = rec.tail_chunk_seq;
    out->last_crc = rec.tail_prev_crc;
  } else {
    out->next_seq = out->chunks.back().seq + 1;
    out->last_crc = out->chunks.back().header_crc;
  }
  return Status::OK();
}

Status FindSyncedLoss(Device& cache, const CacheMeta& meta, const LogScan& scan, unsigned threads,
                      SyncedLoss* out) {
  *out = SyncedLoss();
  const format::Superblock& sb = meta.sb;
  const uint64_t backing_blocks = sb.backing_size / kBlockSize;
  const uint64_t expect = scan.next_seq;
  out->end_seq = expect;
  out->end_offset = scan.end_offset;
  out->max_seq = expect - 1;
  if (!scan.chunks.empty()) out->survivor_ms = scan.chunks.back().time_ms;
  // The slots after the chain's end, in log order, up to the first slot
  // that holds a segment of the chain (from the record's tail on): the
  // chain's own segments were just read and are older than its end.
  const uint64_t first_id = scan.end.segment_id;
  const uint64_t end_id = std::max(first_id + 1, std::min(first_id + sb.nr_segments,
                                                          meta.record.tail_segment_id + sb.nr_segments));
  HeaderPrefetch prefetch(cache, sb, threads, end_id);
  AlignedBuffer hbuf(kBlockSize);
  format::ChunkHeader h;
  for (uint64_t id = first_id; id < end_id; id++) {
    uint32_t pos = 0;
    for (;;) {
      const uint64_t off = format::SegmentBlockOffset(sb, id, pos);
      const uint8_t* header = pos == 0 ? prefetch.Get(id) : nullptr;
      if (header == nullptr) {
        WBFS_RETURN_IF_ERROR(cache.ReadAt(off, hbuf.data(), kBlockSize));
        header = hbuf.data();
      }
      if (!format::DecodeChunkHeader(header, backing_blocks, &h).ok() || h.nonce != sb.nonce ||
          h.offset != pos) {
        break;
      }
      // A segment is written from its block 0 on, so a slot whose first
      // chunk is older than the chain's end holds nothing newer further
      // in; only the slot where the chain ends continues past its start.
      if (pos == 0 && h.seq < expect && h.segment_id != scan.end.segment_id) break;
      out->max_seq = std::max(out->max_seq, h.seq);
      if (h.seq >= expect) {
        out->lost_chunks++;
        out->lost_blocks += h.nr_blocks;
        if (!out->found && h.seq > expect && h.durable_seq >= expect) {
          out->found = true;
          out->witness_seq = h.seq;
          out->witness_offset = off;
        }
      }
      const format::Position next = format::NextChunkPosition(h.segment_id, h.offset, h.nr_blocks, h.flags);
      if (next.segment_id != h.segment_id || !format::ChunkFits(next.block)) break;
      pos = next.block;
    }
  }
  return Status::OK();
}

std::string DescribeSyncedLoss(const SyncedLoss& loss) {
  return "the log ends at chunk seq " + std::to_string(loss.end_seq) + " (cache offset " +
         std::to_string(loss.end_offset) + "), but chunk seq " + std::to_string(loss.witness_seq) +
         " (at offset " + std::to_string(loss.witness_offset) +
         ") records it as synced: fsynced data was lost from the cache (" +
         std::to_string(loss.lost_chunks) + " later chunks holding " +
         std::to_string(loss.lost_blocks) + " blocks cannot be replayed)";
}

std::string RollbackPointText(const SyncedLoss& loss) {
  return "chunk seq " + std::to_string(loss.end_seq - 1) +
         (loss.survivor_ms ? " (cut " + FormatWallClockMs(loss.survivor_ms) + ")" : std::string());
}

}  // namespace wbfs::log
