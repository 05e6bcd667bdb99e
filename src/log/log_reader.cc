#include "log/log_reader.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "util/crc32c.h"

namespace wbfs::log {

using format::kBlockSize;

bool IsCorruption(Damage d) { return d != Damage::kBadRecord && d != Damage::kTornChunk; }

Status ReadRecordSlots(Device& cache, uint64_t nonce, RecordSlots* out) {
  *out = RecordSlots();
  AlignedBuffer buf(kBlockSize);
  for (int i = 0; i < 2; i++) {
    RecordSlot& s = out->slot[static_cast<size_t>(i)];
    s.offset = format::kRecordOffsets[i];
    WBFS_RETURN_IF_ERROR(cache.ReadAt(s.offset, buf.data(), kBlockSize));
    s.zero = format::IsZero(buf.data(), kBlockSize);
    s.status = format::DecodeRecord(buf.data(), &s.record);
    s.other_format = s.status.ok() && s.record.nonce != nonce;
    if (!s.valid()) continue;
    if (out->in_use < 0 || s.record.seq > out->slot[static_cast<size_t>(out->in_use)].record.seq) {
      out->in_use = i;
    }
  }
  return Status::OK();
}

Status ReadCacheMeta(Device& cache, CacheMeta* meta, Reporter* reporter) {
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
  Status st = format::DecodeSuperblock(buf.data(), &meta->sb).WithContext(cache.Name());
  if (st.ok() && cache.Size() < meta->sb.cache_size) {
    st = Status::Corruption(cache.Name() + ": the cache is smaller (" +
                            std::to_string(cache.Size()) + " bytes) than when it was formatted (" +
                            std::to_string(meta->sb.cache_size) + " bytes)");
  }
  if (!st.ok()) {
    if (reporter != nullptr) reporter->Damaged(Damage::kBadSuperblock, format::kSuperblockOffset, st.message());
    return st;
  }
  WBFS_RETURN_IF_ERROR(ReadRecordSlots(cache, meta->sb.nonce, &meta->records));
  meta->record_slot = meta->records.in_use;
  if (meta->record_slot < 0) {
    st = Status::Corruption(cache.Name() + ": both superblock records are invalid");
    if (reporter != nullptr) reporter->Damaged(Damage::kNoRecord, format::kRecordOffsets[0], st.message());
    return st;
  }
  meta->record = meta->records.slot[static_cast<size_t>(meta->record_slot)].record;
  for (size_t i = 0; i < 2 && reporter != nullptr; i++) {
    const RecordSlot& s = meta->records.slot[i];
    if (s.valid() || s.zero) continue;
    reporter->Damaged(Damage::kBadRecord, s.offset,
                      "superblock record " + std::to_string(i) + ": " +
                          (s.status.ok() ? std::string("of another format") : s.status.message()) +
                          " (the other record is used)");
  }
  return Status::OK();
}

// The first blocks of the next kBatch segments, read by several threads at
// once when a walk reaches a segment's block 0. A failed read leaves its
// block unfetched: the walker then reads it itself and reports the error.
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
  const uint64_t end_id_;  // segments from here on are not part of this walk
  bool fetched_ = false;
  uint64_t first_ = 0;
  AlignedBuffer buf_;
  std::vector<uint8_t> ok_;  // per block of buf_ (not vector<bool>: written by several threads)
};

const char* WalkStopName(WalkStop s) {
  switch (s) {
    case WalkStop::kNone: return "none";
    case WalkStop::kLogFull: return "log full";
    case WalkStop::kSegmentEnd: return "segment end";
    case WalkStop::kUnwritten: return "unwritten";
    case WalkStop::kBadHeader: return "bad header";
    case WalkStop::kOtherFormat: return "other format";
    case WalkStop::kOtherSlot: return "other slot";
    case WalkStop::kChainBreak: return "chain break";
    case WalkStop::kTornData: return "torn data";
  }
  return "?";
}

ChunkWalker::ChunkWalker(Device& cache, const format::Superblock& sb, unsigned prefetch_threads,
                         uint64_t prefetch_end_id)
    : cache_(cache),
      sb_(sb),
      backing_blocks_(sb.backing_size / kBlockSize),
      // (No prefetch buffer of 256 KiB for a walk without threads: dump,
      // check's per-slot walks, the fuzzer.)
      prefetch_(prefetch_threads == 0 ? nullptr
                                      : std::make_unique<HeaderPrefetch>(cache, sb, prefetch_threads, prefetch_end_id)),
      hbuf_(kBlockSize) {}

ChunkWalker::~ChunkWalker() = default;

void ChunkWalker::StartChain(format::Position pos, uint64_t seq, uint32_t prev_crc, uint64_t end_id) {
  chain_ = true;
  started_ = false;
  pos_ = pos;
  expect_seq_ = seq;
  prev_crc_ = prev_crc;
  end_id_ = end_id;
  stop_ = WalkStop::kNone;
  detail_.clear();
}

void ChunkWalker::StartSegment(uint64_t segment_id, bool match_id) {
  chain_ = false;
  started_ = false;
  match_id_ = match_id;
  walk_id_ = segment_id;
  pos_ = {segment_id, 0};
  stop_ = WalkStop::kNone;
  detail_.clear();
}

uint64_t ChunkWalker::offset() const { return format::SegmentBlockOffset(sb_, pos_.segment_id, pos_.block); }

Status ChunkWalker::Next(bool* got) {
  *got = false;
  if (stop_ != WalkStop::kNone) return Status::OK();
  if (started_) {
    // Past the header returned last.
    const format::Position next = format::NextChunkPosition(h_.segment_id, h_.offset, h_.nr_blocks, h_.flags);
    if (chain_) {
      pos_ = next;
      expect_seq_ = h_.seq + 1;
      prev_crc_ = h_.header_crc;
    } else if (next.segment_id != h_.segment_id) {
      stop_ = WalkStop::kSegmentEnd;
      return Status::OK();
    } else {
      pos_ = {walk_id_, next.block};
    }
    started_ = false;
  }
  if (chain_ && pos_.segment_id >= end_id_) {
    stop_ = WalkStop::kLogFull;
    return Status::OK();
  }
  const uint8_t* header = pos_.block == 0 && prefetch_ != nullptr ? prefetch_->Get(pos_.segment_id) : nullptr;
  if (header == nullptr) {
    WBFS_RETURN_IF_ERROR(cache_.ReadAt(offset(), hbuf_.data(), kBlockSize));
    header = hbuf_.data();
  }
  Status st = format::DecodeChunkHeader(header, backing_blocks_, &h_);
  if (!st.ok()) {
    if (format::IsZero(header, kBlockSize)) {
      stop_ = WalkStop::kUnwritten;
    } else {
      stop_ = WalkStop::kBadHeader;
      detail_ = st.message();
    }
    return Status::OK();
  }
  if (h_.nonce != sb_.nonce) {
    stop_ = WalkStop::kOtherFormat;
  } else if (h_.offset != pos_.block || ((chain_ || match_id_) && h_.segment_id != pos_.segment_id)) {
    stop_ = WalkStop::kOtherSlot;
  } else if (chain_ && (h_.seq != expect_seq_ || h_.prev_crc != prev_crc_)) {
    stop_ = WalkStop::kChainBreak;
  } else {
    started_ = true;
    *got = true;
  }
  return Status::OK();
}

namespace {

// Why the chain ends, for a human (check prints it).
std::string ChainEndText(const ChunkWalker& w) {
  switch (w.stop()) {
    case WalkStop::kLogFull: return "the log fills the whole cache";
    case WalkStop::kUnwritten: return "unwritten block";
    case WalkStop::kBadHeader: return w.detail();
    case WalkStop::kOtherFormat: return "chunk of another format";
    case WalkStop::kOtherSlot:
    case WalkStop::kChainBreak:
      return "chunk of an earlier lap (seq " + std::to_string(w.header().seq) + ", expected " +
             std::to_string(w.expected_seq()) + ")";
    case WalkStop::kNone:
    case WalkStop::kSegmentEnd:
    case WalkStop::kTornData:
      break;
  }
  return WalkStopName(w.stop());
}

ChunkInfo InfoOf(const format::ChunkHeader& h, const LogScan& scan) {
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
  c.first_entry = scan.entries.size();
  c.first_extent = scan.extents.size();
  return c;
}

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
  const uint64_t end_id = rec.tail_segment_id + sb.nr_segments;
  ChunkWalker walk(cache, sb, opts.prefetch_threads, end_id);
  walk.StartChain({rec.tail_segment_id, rec.tail_block}, rec.tail_chunk_seq, rec.tail_prev_crc, end_id);
  uint64_t trusted = rec.durable_seq;
  for (;;) {
    bool got = false;
    WBFS_RETURN_IF_ERROR(walk.Next(&got));
    if (!got) break;
    const format::ChunkHeader& h = walk.header();
    out->chunks.push_back(InfoOf(h, *out));
    out->entries.insert(out->entries.end(), h.entries.begin(), h.entries.begin() + h.nr_blocks);
    out->extents.insert(out->extents.end(), h.extents.begin(), h.extents.begin() + h.nr_extents);
    trusted = std::max(trusted, std::min(h.durable_seq, h.seq - 1));
  }
  out->end = walk.position();
  out->end_offset = walk.offset();
  out->stop = walk.stop();
  out->end_reason = ChainEndText(walk);
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
      if (opts.reporter != nullptr) {
        opts.reporter->Damaged(Damage::kCorruptData, bad_at,
                               "a synced chunk's data does not match its checksum (corruption)");
      }
      continue;
    }
    keep = i;
    out->end = {c.segment_id, c.offset};
    out->end_offset = format::SegmentBlockOffset(sb, c.segment_id, c.offset);
    out->stop = WalkStop::kTornData;
    out->end_reason = "torn chunk (seq " + std::to_string(c.seq) + "): data checksum mismatch";
    break;
  }
  if (keep < out->chunks.size()) {
    out->dropped_chunks = out->chunks.size() - keep;
    out->entries.resize(out->chunks[keep].first_entry);
    out->extents.resize(out->chunks[keep].first_extent);
    out->chunks.resize(keep);
    if (opts.reporter != nullptr) {
      opts.reporter->Damaged(Damage::kTornChunk, out->end_offset,
                             "torn newest write: " + out->end_reason + "; " +
                                 std::to_string(out->dropped_chunks) +
                                 " chunk(s) from there on are not part of the log");
    }
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
                      SyncedLoss* out, Reporter* reporter) {
  *out = SyncedLoss();
  const format::Superblock& sb = meta.sb;
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
  ChunkWalker walk(cache, sb, threads, end_id);
  for (uint64_t id = first_id; id < end_id; id++) {
    // Whatever the slot holds, of any lap: only seqs tell old from new.
    walk.StartSegment(id, false);
    for (;;) {
      bool got = false;
      WBFS_RETURN_IF_ERROR(walk.Next(&got));
      if (!got) break;
      const format::ChunkHeader& h = walk.header();
      // A segment is written from its block 0 on, so a slot whose first
      // chunk is older than the chain's end holds nothing newer further
      // in; only the slot where the chain ends continues past its start.
      if (h.offset == 0 && h.seq < expect && h.segment_id != scan.end.segment_id) break;
      out->max_seq = std::max(out->max_seq, h.seq);
      if (h.seq >= expect) {
        out->lost_chunks++;
        out->lost_blocks += h.nr_blocks;
        if (!out->found && h.seq > expect && h.durable_seq >= expect) {
          out->found = true;
          out->witness_seq = h.seq;
          out->witness_offset = walk.offset();
        }
      }
    }
  }
  if (out->found && reporter != nullptr) {
    reporter->Damaged(Damage::kSyncedLoss, scan.end_offset, DescribeSyncedLoss(*out));
  }
  return Status::OK();
}

Status DumpSegment(Device& cache, const format::Superblock& sb, uint64_t segment_id, SegmentDump* out,
                   uint64_t* err_offset) {
  out->chunks.clear();
  out->detail.clear();
  out->other_segment = 0;
  ChunkWalker walk(cache, sb);
  walk.StartSegment(segment_id, true);
  for (;;) {
    bool got = false;
    Status st = walk.Next(&got);
    if (!st.ok()) {
      *err_offset = walk.offset();
      return st;
    }
    if (!got) break;
    out->chunks.push_back({walk.offset(), walk.header()});
  }
  out->stop = walk.stop();
  out->detail = walk.detail();
  if (out->stop == WalkStop::kOtherSlot) out->other_segment = walk.header().segment_id;
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
