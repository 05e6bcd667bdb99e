#include "log/log_writer.h"

#include <algorithm>
#include <cstring>

#include "util/crc32c.h"

namespace wbfs::log {

using format::kBlockSize;
using format::kBlocksPerSegment;

LogWriter::LogWriter(const format::Superblock& sb, Device* cache, const Options& o, uint64_t epoch)
    : sb_(sb), cache_(cache), opts_(o), epoch_(epoch), ring_(sb.nr_segments) {
  const uint32_t nbuf = std::max<uint32_t>(2, o.nr_ram_buffers);
  pool_.Reset(size_t{nbuf} * format::kSegmentSize);
  for (uint32_t i = 0; i < nbuf; i++) free_bufs_.push_back(pool_.data() + size_t{i} * format::kSegmentSize);
}

uint8_t* LogWriter::RamBlock(uint32_t slot) {
  SegmentLog& s = ring_[slot / kBlocksPerSegment];
  const uint32_t pos = slot % kBlocksPerSegment;
  if (s.buf == nullptr || pos < s.buf_start) return nullptr;
  return s.buf + size_t{pos - s.buf_start} * kBlockSize;
}

uint64_t LogWriter::CacheOffset(uint32_t slot) const {
  return format::SegmentBlockOffset(sb_, ring_[slot / kBlocksPerSegment].id, slot % kBlocksPerSegment);
}

bool LogWriter::InOpenChunk(uint32_t slot) const {
  if (!InCurrentSegment(slot)) return false;
  const uint32_t pos = slot % kBlocksPerSegment;
  return pos > chunk_start_ && pos <= chunk_start_ + chunk_n_;
}

uint32_t LogWriter::Append(const uint8_t* block) {
  SegmentLog& s = ring_[cur_];
  const uint32_t pos = chunk_start_ + 1 + chunk_n_;
  std::memcpy(s.buf + size_t{pos - s.buf_start} * kBlockSize, block, kBlockSize);
  chunk_n_++;
  return static_cast<uint32_t>(cur_) * kBlocksPerSegment + pos;
}

uint8_t* LogWriter::OpenHeader() {
  SegmentLog& s = ring_[cur_];
  uint8_t* header = s.buf + size_t{chunk_start_ - s.buf_start} * kBlockSize;
  std::memset(header, 0, kBlockSize);
  return header;
}

uint64_t LogWriter::Cut(uint16_t nr_blocks, uint16_t nr_extents, bool seal, uint64_t now_ms) {
  SegmentLog& s = ring_[cur_];
  const uint64_t seq = next_seq_++;
  jobs_.push_back({static_cast<uint32_t>(cur_), s.id, chunk_start_, nr_blocks, nr_extents, seq, now_ms, seal});
  if (s.first_chunk_seq == 0) s.first_chunk_seq = seq;
  s.last_chunk_seq = seq;
  s.last_ms = now_ms;
  s.unflushed++;
  s.fill = chunk_start_ + format::ChunkBlocks(nr_blocks);
  last_cut_seq_ = seq;
  if (seal || !format::ChunkFits(s.fill)) {
    s.sealed = true;
    cur_ = -1;
  } else {
    chunk_start_ = s.fill;
  }
  chunk_n_ = 0;
  return seq;
}

void LogWriter::ReleaseBuffer(uint32_t ring) {
  SegmentLog& s = ring_[ring];
  if (s.buf == nullptr) return;
  free_bufs_.push_back(s.buf);
  s.buf = nullptr;
}

void LogWriter::Begin() {
  const uint64_t id = last_seg_id_ + 1;
  const uint32_t ring = RingSlot(id);
  SegmentLog& s = ring_[ring];
  s = SegmentLog();
  s.id = id;
  s.buf = free_bufs_.back();
  free_bufs_.pop_back();
  cur_ = ring;
  chunk_start_ = 0;
  chunk_n_ = 0;
  last_seg_id_ = id;
}

Status LogWriter::FlushFront(Mutex* mu, bool skip, FlushedChunk* out) {
  const FlushJob job = jobs_.front();
  SegmentLog& s = ring_[job.ring];
  uint8_t* base = s.buf + size_t{job.offset - s.buf_start} * kBlockSize;
  format::ChunkHeader h;
  h.nonce = sb_.nonce;
  h.epoch = epoch_;
  h.seq = job.seq;
  h.segment_id = job.segment_id;
  h.offset = job.offset;
  h.prev_crc = last_crc_;
  h.nr_blocks = job.nr_blocks;
  h.nr_extents = job.nr_extents;
  h.durable_seq = durable_seq_;
  h.time_ms = job.time_ms;
  h.flags = job.seal ? format::kChunkSeal : 0;
  const size_t len = (size_t{job.nr_blocks} + 1) * kBlockSize;
  const uint64_t off = format::SegmentBlockOffset(sb_, job.segment_id, job.offset);
  const bool block_crcs = format::HasBlockCrcs(sb_);
  mu->unlock();
  // The chunk's blocks are frozen once cut: no lock needed to read them.
  Status st;
  uint32_t crc = 0;
  if (!skip) {
    if (block_crcs) {
      for (uint32_t i = 0; i < job.nr_blocks; i++) {
        out->block_crcs[i] = crc32c::Value(base + size_t{i + 1} * kBlockSize, kBlockSize);
        format::SetChunkEntryCrc(base, i, out->block_crcs[i]);
      }
      h.data_crc = format::BlockCrcsDataCrc(out->block_crcs, job.nr_blocks);
    } else {
      h.data_crc = crc32c::Value(base + kBlockSize, len - kBlockSize);
    }
    crc = format::SealChunkHeader(h, base);
    st = cache_->WriteAt(off, base, len);
  }
  mu->lock();
  jobs_.pop_front();
  s.unflushed--;
  out->written = false;
  if (skip || !st.ok()) return st;
  if (s.first_chunk_seq == job.seq) s.first_prev_crc = last_crc_;
  last_crc_ = crc;
  flushed_seq_ = job.seq;
  flushed_seg_id_ = job.segment_id;
  out->written = true;
  out->first_slot = job.ring * kBlocksPerSegment + job.offset + 1;
  out->nr_blocks = job.nr_blocks;
  out->bytes = len;
  out->sync_due = false;
  if (s.sealed && s.unflushed == 0) {
    if (static_cast<int64_t>(job.ring) != cur_) ReleaseBuffer(job.ring);
    if (++segments_since_sync_ >= opts_.sync_every_segments) {
      segments_since_sync_ = 0;
      out->sync_due = true;
    }
  }
  return Status::OK();
}

Status LogWriter::WriteRecord(Mutex* mu, uint64_t last_writeback_id, bool clean) {
  format::Record r;
  r.flags = clean ? format::kRecordClean : 0;
  r.nonce = sb_.nonce;
  r.seq = record_seq_ + 1;
  r.tail_segment_id = last_writeback_id + 1;
  r.tail_block = 0;
  r.last_writeback_id = last_writeback_id;
  const SegmentLog& t = ring_[RingSlot(r.tail_segment_id)];
  if (r.tail_segment_id <= last_seg_id_ && t.id == r.tail_segment_id && t.first_chunk_seq != 0) {
    r.tail_chunk_seq = t.first_chunk_seq;
    r.tail_prev_crc = t.first_prev_crc;
  } else {
    r.tail_chunk_seq = next_seq_;
    r.tail_prev_crc = last_crc_;
  }
  r.durable_seq = flushed_seq_;  // the sync below makes it true
  AlignedBuffer block(kBlockSize);
  format::EncodeRecord(r, block.data());
  const uint64_t off = format::kRecordOffsets[r.seq % 2];
  mu->unlock();
  Status st = cache_->Sync();  // chunks before the record
  if (st.ok()) st = cache_->WriteAt(off, block.data(), kBlockSize);
  if (st.ok()) st = cache_->Sync();
  mu->lock();
  WBFS_RETURN_IF_ERROR(st);
  record_seq_ = r.seq;
  record_tail_seg_ = r.tail_segment_id;
  MarkDurable(r.durable_seq);
  return Status::OK();
}

void LogWriter::ResumeAtRecord(const format::Record& r) {
  record_seq_ = r.seq;
  record_tail_seg_ = r.tail_segment_id;
  last_seg_id_ = r.tail_segment_id - 1;
  next_seq_ = r.tail_chunk_seq;
  last_crc_ = r.tail_prev_crc;
}

bool LogWriter::ReplayChunk(const ChunkInfo& c, uint64_t now_ms) {
  SegmentLog& s = ring_[RingSlot(c.segment_id)];
  const bool first = s.id != c.segment_id;
  if (first) {
    s = SegmentLog();
    s.id = c.segment_id;
    s.first_chunk_seq = c.seq;
    s.first_prev_crc = last_crc_;
    s.sealed = true;
  }
  last_crc_ = c.header_crc;
  s.last_chunk_seq = c.seq;
  s.last_ms = c.time_ms != 0 ? c.time_ms : now_ms;
  s.fill = c.offset + format::ChunkBlocks(c.nr_blocks);
  last_seg_id_ = c.segment_id;
  return first;
}

void LogWriter::ResumeAfterScan(const LogScan& scan) {
  next_seq_ = scan.next_seq;
  last_crc_ = scan.last_crc;
  if (!scan.chunks.empty()) flushed_seg_id_ = scan.chunks.back().segment_id;
  if (scan.end.block == 0) return;
  // Continue in a partly filled last segment.
  const uint32_t ring = RingSlot(scan.end.segment_id);
  SegmentLog& s = ring_[ring];
  s.sealed = false;
  s.buf = free_bufs_.back();
  free_bufs_.pop_back();
  s.buf_start = scan.end.block;
  cur_ = ring;
  chunk_start_ = scan.end.block;
  chunk_n_ = 0;
}

void LogWriter::SettleSeqs(uint64_t min_next) {
  next_seq_ = std::max(next_seq_, min_next);
  last_cut_seq_ = flushed_seq_ = durable_seq_ = next_seq_ - 1;
}

Status LogWriter::Format(Device& cache, uint64_t backing_size, const std::string& backing_id, uint64_t nonce,
                         CacheMeta* meta) {
  format::Superblock sb;
  sb.nr_segments = format::SegmentsFor(cache.Size());
  sb.backing_size = backing_size;
  sb.cache_size = format::kSegmentsOffset + sb.nr_segments * format::kSegmentSize;
  sb.nonce = nonce;
  sb.backing_id = backing_id;
  sb.format_time = static_cast<uint64_t>(::time(nullptr));
  format::Record r;
  r.nonce = sb.nonce;
  r.seq = 1;
  r.tail_segment_id = 1;
  r.tail_chunk_seq = 1;
  r.tail_prev_crc = format::ChainSeed(sb.nonce);
  // Records first, superblock last: an interrupted format leaves a blank
  // superblock and simply runs again.
  AlignedBuffer buf(format::kSegmentsOffset);
  format::EncodeRecord(r, buf.data() + format::kRecordOffsets[1]);
  WBFS_RETURN_IF_ERROR(cache.WriteAt(0, buf.data(), format::kSegmentsOffset));
  WBFS_RETURN_IF_ERROR(cache.Sync());
  format::EncodeSuperblock(sb, buf.data());
  WBFS_RETURN_IF_ERROR(cache.WriteAt(0, buf.data(), kBlockSize));
  WBFS_RETURN_IF_ERROR(cache.Sync());
  meta->blank = false;
  meta->sb = sb;
  meta->record = r;
  meta->record_slot = 1;
  return Status::OK();
}

}  // namespace wbfs::log
