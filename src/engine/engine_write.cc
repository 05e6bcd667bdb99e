// The write path: Write copies each 4 KiB piece into the open chunk
// (PlaceLocked: LogWriter::Append, then the CacheMap), merging a partial
// piece with the block's current content (read outside the lock into a
// PreRead); write-around; discards (an extent chunk, the zero overlay) and
// what the writeback of one leaves pending.
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/engine_impl.h"
#include "engine/pieces.h"
#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "util/crc32c.h"

namespace wbfs::engine_detail {

namespace {

using format::kSectorSize;
using format::kSectorsPerBlock;

// Sectors of a block touched by the byte range [lo, hi).
uint8_t CoverMask(uint32_t lo, uint32_t hi) {
  uint8_t m = 0;
  for (uint32_t s = lo / kSectorSize; s * kSectorSize < hi; s++) m |= static_cast<uint8_t>(1u << s);
  return m;
}
// Sectors touched but not wholly covered by [lo, hi): they need their old
// content before the new bytes are laid over them.
uint8_t PartialMask(uint32_t lo, uint32_t hi) {
  uint8_t m = 0;
  if (lo % kSectorSize) m |= static_cast<uint8_t>(1u << (lo / kSectorSize));
  if (hi % kSectorSize) m |= static_cast<uint8_t>(1u << (hi / kSectorSize));
  return m;
}
void CopySectors(uint8_t* dst, const uint8_t* src, uint8_t mask) {
  for (uint32_t s = 0; s < kSectorsPerBlock; s++) {
    if (mask & (1u << s)) std::memcpy(dst + s * kSectorSize, src + s * kSectorSize, kSectorSize);
  }
}

}  // namespace

// A whole block read outside the lock for a partial write (see WriteBlock).
struct PreRead {
  bool valid = false;
  bool has_cache = false;  // cache_data holds the old copy from the cache device
  uint64_t block = 0;
  uint32_t slot = BlockIndex::kNone;
  uint8_t mask = 0;
  uint64_t zero_gen = 0;       // zeros_.generation() when read
  uint32_t crc = 0;            // of the cache copy, to verify it
  AlignedBuffer cache_data;    // allocated on first use
  AlignedBuffer backing_data;
};


Status EngineImpl::Write(uint64_t off, const void* buf, size_t len) {
  if (off > Size() || len > Size() - off) return Status::OutOfRange("write beyond the image");
  const auto* src = static_cast<const uint8_t*>(buf);
  if (write_around()) return WriteAround(off, src, len);
  PreRead pre;
  Lock lk(mu_);
  if (closed_) return Status::Failed("the engine is closed");
  if (!stager_.empty()) {
    stager_.CancelRange(off / kBlockSize, (off + len + kBlockSize - 1) / kBlockSize - off / kBlockSize);
  }
  for (Pieces p(off, len); !p.done();) {
    bool retry = false;
    WBFS_RETURN_IF_ERROR(WriteBlockLocked(p.block(), p.lo(), p.hi(), src + p.at(), &pre, &retry));
    if (retry) continue;  // the lock was dropped: the same piece again
    pre.valid = false;
    p.Next();
  }
  st_.user_bytes_written += len;
  return Status::OK();
}

// One 4 KiB piece. A partial piece needs the block's current content for
// the sectors it keeps: from RAM, or read outside the lock into `pre`
// (then *retry is set and the caller comes back; the read is used only if
// the block's cache slot and mask are still what they were).
Status EngineImpl::WriteBlockLocked(uint64_t block, uint32_t lo, uint32_t hi,
                                    const uint8_t* src, PreRead* pre, bool* retry) {
  WBFS_RETURN_IF_ERROR(EnsureRoomLocked());
  if (ack_ && ack_->Full()) {
    WBFS_RETURN_IF_ERROR(AckRoomLocked());
    *retry = true;  // the lock was dropped
    return Status::OK();
  }
  const bool full = lo == 0 && hi == kBlockSize;
  const uint8_t cover = CoverMask(lo, hi);
  uint32_t slot = map_.Find(block);
  uint8_t old_mask = slot == BlockIndex::kNone ? 0 : map_.Mask(slot);
  uint8_t* ram = slot == BlockIndex::kNone ? nullptr : log_.RamBlock(slot);
  unsigned stat = kStatWrite | (full ? kStatFull : 0) | (slot != BlockIndex::kNone ? kStatHit : 0);

  alignas(64) uint8_t tmp[kBlockSize];
  const uint8_t* data = src;
  uint8_t mask = format::kFullMask;
  if (!full) {
    uint8_t need_backing = PartialMask(lo, hi) & static_cast<uint8_t>(~old_mask);
    if (zeros_.Covers(block)) need_backing = 0;  // those sectors read as zeros (tmp below)
    bool need_cache = slot != BlockIndex::kNone && ram == nullptr;
    if (need_backing || need_cache) {
      // The pre-read is used only if nothing it depends on changed
      // meanwhile: the block's slot and mask, and no discard began to
      // zero it (a discard logged and punched during the read would
      // otherwise leave the stale backing bytes in the partial sectors).
      if (!(pre->valid && pre->block == block && pre->slot == slot && pre->mask == old_mask &&
            pre->zero_gen == zeros_.generation() && (!need_cache || pre->has_cache))) {
        pre->valid = false;
        pre->has_cache = need_cache;
        pre->block = block;
        pre->slot = slot;
        pre->mask = old_mask;
        pre->zero_gen = zeros_.generation();
        pre->crc = need_cache && block_crcs_ ? map_.crc(slot) : 0;
        if (pre->cache_data.size() == 0) {
          pre->cache_data.Reset(kBlockSize);
          pre->backing_data.Reset(kBlockSize);
        }
        if (need_cache) map_.BookOf(slot).pins++;
        uint64_t cache_off = need_cache ? log_.CacheOffset(slot) : 0;
        mu_.unlock();
        Status st;
        if (need_cache) st = cache_->ReadAt(cache_off, pre->cache_data.data(), kBlockSize);
        if (st.ok() && need_backing) {
          st = backing_->ReadAt(block * kBlockSize, pre->backing_data.data(), kBlockSize);
        }
        mu_.lock();
        if (need_cache) {
          map_.BookOf(slot).pins--;
          cv_.notify_all();
        }
        WBFS_RETURN_IF_ERROR(st);
        if (need_cache && block_crcs_ && crc32c::Value(pre->cache_data.data(), kBlockSize) != pre->crc) {
          return BadBlockLocked(cache_off, block);
        }
        pre->valid = true;
        *retry = true;
        return Status::OK();
      }
    }
    std::memset(tmp, 0, sizeof(tmp));
    if (slot != BlockIndex::kNone) CopySectors(tmp, ram ? ram : pre->cache_data.data(), old_mask);
    if (need_backing) CopySectors(tmp, pre->backing_data.data(), need_backing);
    std::memcpy(tmp + lo, src, hi - lo);
    data = tmp;
    mask = old_mask | cover;
  }
  if (slot != BlockIndex::kNone && log_.InOpenChunk(slot)) {
    // Still in the open chunk: change it in place.
    std::memcpy(ram, data, kBlockSize);
    map_.Rewrite(slot, block, mask);
    if (ack_) AckBlockLocked(block, slot);
    if (open_chunk_ms_ == 0) open_chunk_ms_ = WallClockMs();
    st_.stat[stat | kStatBuffer]++;
    return Status::OK();
  }
  if (slot != BlockIndex::kNone && log_.InCurrentSegment(slot)) stat |= kStatBuffer;
  st_.stat[stat]++;
  PlaceLocked(block, data, mask, true);
  return Status::OK();
}

Status EngineImpl::AckRoomLocked() {
  if (log_.chunk_n() > 0) {
    CutChunkLocked();
    PumpLocked();
  }
  WBFS_RETURN_IF_ERROR(WaitFlushedLocked(log_.last_cut_seq()));
  // Every chunk cut is written, so every record is trimmed (FlushFrontLocked):
  // still full would mean a record tagged beyond them.
  if (ack_->Full()) return Status::Failed("the ack log is full of records of written chunks (a bug)");
  return Status::OK();
}

void EngineImpl::AckBlockLocked(uint64_t block, uint32_t slot) {
  // The block as placed (a partial write merged with what it kept), from
  // the chunk's RAM, with its sector mask: the sectors outside it are not
  // in the block (they read from the backing), so the rebuild writes only
  // those inside. The open chunk gets the next seq when it is cut.
  ack_->Append(log::AckRecord::kWrite, block * kBlockSize, kBlockSize, map_.Mask(slot), log_.next_seq(),
               log_.RamBlock(slot));
}

// Write-around needs no ack log record: the data is on the backing (its
// write returned) before Write returns, and a death of this process does
// not lose what a write that returned handed to the kernel or the cluster.
Status EngineImpl::WriteAround(uint64_t off, const uint8_t* src, size_t len) {
  const uint64_t b0 = off / kBlockSize, n = (off + len + kBlockSize - 1) / kBlockSize - b0;
  {
    Lock lk(mu_);
    if (failed_) return FailedStatus();
    if (closed_) return Status::Failed("the engine is closed");
    stager_.CancelRange(b0, n);
    bool cached = false;
    for (uint64_t b = b0; b < b0 + n; b++) {
      const uint64_t lo = std::max(off, b * kBlockSize), hi = std::min(off + len, (b + 1) * kBlockSize);
      unsigned stat = kStatWrite | (hi - lo == kBlockSize ? kStatFull : 0);
      if (map_.Find(b) != BlockIndex::kNone) {
        cached = true;
        stat |= kStatHit;
      }
      st_.stat[stat]++;
    }
    // A clean cached copy must be gone from the log (durably) before the
    // backing changes under it, or a crash could bring it back.
    if (cached) WBFS_RETURN_IF_ERROR(AppendExtentsLocked({b0, n, format::kExtentInvalidate}));
  }
  Status st = backing_->WriteAt(off, src, len);
  Lock lk(mu_);
  stager_.CancelRange(b0, n);  // reads that staged the old data meanwhile
  around_gen_++;  // even a failed write may have landed
  if (!st.ok()) return st;
  st_.user_bytes_written += len;
  st_.backing_bytes_written += len;
  return Status::OK();
}

// The extent chunk is cut, flushed and synced before this returns.
Status EngineImpl::AppendExtentsLocked(const format::Extent& x) {
  // Room for the extent chunk first (that may need writeback: a new
  // segment). Every wait drops the lock, so look again after each.
  const bool discard = x.kind == format::kExtentDiscard;
  for (;;) {
    WBFS_RETURN_IF_ERROR(EnsureRoomLocked());
    if (log_.chunk_n() > 0) {
      CutChunkLocked();  // earlier writes go first, with their own flags
      PumpLocked();
      continue;
    }
    if (discard && ack_ && ack_->Full()) {
      WBFS_RETURN_IF_ERROR(AckRoomLocked());
      continue;
    }
    break;
  }
  // From here on nothing needs a new segment.
  map_.InvalidateRange(x.start, x.count);
  // The discard is durable before Discard returns (below), so its record
  // is trimmed by then; it keeps the ack log complete by itself (a death
  // after this point may or may not keep the discard: it was not
  // acknowledged). Invalidations (write-around) are not changes of the image.
  if (discard && ack_) {
    ack_->Append(log::AckRecord::kDiscard, x.start * kBlockSize, x.count * kBlockSize, 0, log_.next_seq(), nullptr);
  }
  if (discard) AddPendingDiscardLocked(map_.book(log_.cur()), x.start, x.count, log_.chunk_start());
  format::EncodeChunkExtent(log_.OpenHeader(), 0, 0, x);
  const uint64_t seq = QueueChunkLocked(0, 1, discard);
  PumpLocked();
  WBFS_RETURN_IF_ERROR(WaitFlushedLocked(seq));
  mu_.unlock();
  Status st = SyncTo(seq);
  mu_.lock();
  return st;
}

void EngineImpl::AddPendingDiscardLocked(SegmentBook& s, uint64_t start, uint64_t count, uint32_t pos) {
  s.discards.push_back({start, count, pos});
  zeros_.AddPending(start, count);
}

void EngineImpl::DiscardAppliedLocked(uint64_t start, uint64_t count) {
  std::vector<std::pair<uint64_t, uint64_t>> still;
  for (uint64_t id = last_writeback_id_ + 1; id <= log_.last_seg_id(); id++) {
    if (log_.seg(RingSlot(id)).id != id) continue;
    for (const PendingDiscard& d : map_.book(RingSlot(id)).discards) {
      if (d.start < start + count && start < d.start + d.count) still.push_back({d.start, d.start + d.count});
    }
  }
  zeros_.Applied(start, count, still);
}

Status EngineImpl::Discard(uint64_t off, uint64_t len) {
  if (off > Size() || len > Size() - off) return Status::OutOfRange("discard beyond the image");
  if (len == 0) return Status::OK();
  const uint64_t fb0 = (off + kBlockSize - 1) / kBlockSize, fb1 = (off + len) / kBlockSize;
  // Partial blocks at the ends: zero just the bytes covered, as writes.
  std::vector<uint8_t> zeros(kBlockSize, 0);
  auto zero = [&](uint64_t a, uint64_t b) -> Status {
    return a < b ? Write(a, zeros.data(), static_cast<size_t>(b - a)) : Status::OK();
  };
  if (fb0 >= fb1) {
    for (Pieces p(off, len); !p.done(); p.Next()) {
      WBFS_RETURN_IF_ERROR(zero(off + p.at(), off + p.at() + (p.hi() - p.lo())));
    }
    return Status::OK();
  }
  WBFS_RETURN_IF_ERROR(zero(off, fb0 * kBlockSize));
  WBFS_RETURN_IF_ERROR(zero(fb1 * kBlockSize, off + len));
  Lock lk(mu_);
  if (failed_) return FailedStatus();
  if (closed_) return Status::Failed("the engine is closed");
  stager_.CancelRange(fb0, fb1 - fb0);
  // (One extent: backing addresses are below 2^48.)
  if (!write_around()) {
    // Write-back: a change like a write; the writeback unit that covers it
    // punches the backing, in log order.
    WBFS_RETURN_IF_ERROR(AppendExtentsLocked({fb0, fb1 - fb0, format::kExtentDiscard}));
    st_.discarded_bytes += len;
    return Status::OK();
  }
  // Write-around: nothing is dirty, so the backing is punched now, after
  // the cached copies are durably dropped (as for a write).
  WBFS_RETURN_IF_ERROR(AppendExtentsLocked({fb0, fb1 - fb0, format::kExtentInvalidate}));
  lk.unlock();
  Status st = backing_->Discard(fb0 * kBlockSize, (fb1 - fb0) * kBlockSize);
  lk.lock();
  stager_.CancelRange(fb0, fb1 - fb0);  // reads that staged the old data meanwhile
  around_gen_++;
  if (st.ok()) st_.discarded_bytes += len;
  return st;
}

void EngineImpl::PlaceLocked(uint64_t block, const uint8_t* data, uint8_t mask, bool dirty) {
  const uint32_t slot = log_.Append(data);
  map_.Place(slot, block, mask, dirty);
  if (dirty && ack_) AckBlockLocked(block, slot);  // a clean block (staged read) changes nothing
  if (dirty && open_chunk_ms_ == 0) open_chunk_ms_ = WallClockMs();
}

}  // namespace wbfs::engine_detail
