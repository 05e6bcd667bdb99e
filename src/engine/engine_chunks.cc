// The log's side of the engine: room for the next block (sealing the
// segment, acquiring the next ring slot once its occupant is written back),
// cutting chunks for the flusher, the flusher itself, Flush (group commit)
// and the cache sync; a failure that fails the engine.
#include <algorithm>

#include "engine/engine_impl.h"
#include "util/clock.h"

namespace wbfs::engine_detail {

// Leaves room for one more block in the open chunk, sealing the current
// segment and acquiring the next one as needed. May drop the lock.
Status EngineImpl::EnsureRoomLocked() {
  for (;;) {
    if (failed_) return FailedStatus();
    if (closed_) return Status::Failed("the engine is closed");
    if (log_.HasRoom()) return Status::OK();
    if (log_.cur() >= 0) {
      CutChunkLocked();  // the segment is full: this seals it
      PumpLocked();
    }
    WBFS_RETURN_IF_ERROR(AcquireSegmentLocked());
  }
}

void EngineImpl::CutChunkLocked(bool seal) {
  if (log_.cur() < 0 || log_.chunk_n() == 0) return;
  uint8_t* header = log_.OpenHeader();
  const uint32_t base = static_cast<uint32_t>(log_.cur()) * kBlocksPerSegment + log_.chunk_start() + 1;
  bool changes = false;
  for (uint32_t i = 0; i < log_.chunk_n(); i++) {
    const uint64_t w = map_.word(base + i);
    changes = changes || SlotWord::Dirty(w);
    format::EncodeChunkEntry(header, i,
                             {SlotWord::Block(w), SlotWord::Mask(w),
                              static_cast<uint8_t>(SlotWord::Dirty(w) ? format::kEntryDirty : 0)});
  }
  QueueChunkLocked(static_cast<uint16_t>(log_.chunk_n()), 0, changes, seal);
}

void EngineImpl::SealCurrentLocked() {
  if (log_.cur() < 0) return;
  if (log_.chunk_n() > 0) {
    CutChunkLocked(true);
    return;
  }
  if (log_.seg(static_cast<uint32_t>(log_.cur())).fill == 0) return;  // nothing logged in it: nothing to seal
  // A chunk needs data entries or extents: the marker carries one extent
  // of kind kExtentPunched, which every reader ignores (format.h).
  format::EncodeChunkExtent(log_.OpenHeader(), 0, 0, {0, 1, format::kExtentPunched});
  QueueChunkLocked(0, 1, false, true);
}

// The open chunk (its entries encoded) goes to the flusher with the next
// seq (LogWriter::Cut); a chunk with changes starts its segment's dirty
// age. Returns the seq.
uint64_t EngineImpl::QueueChunkLocked(uint16_t nr_blocks, uint16_t nr_extents, bool changes, bool seal) {
  SegmentBook& b = map_.book(log_.cur());
  const uint64_t now = WallClockMs();
  if (changes && b.unapplied_ms == 0) b.unapplied_ms = open_chunk_ms_ != 0 ? open_chunk_ms_ : now;
  open_chunk_ms_ = 0;
  const uint64_t seq = log_.Cut(nr_blocks, nr_extents, seal, now);
  cv_.notify_all();
  return seq;
}

Status EngineImpl::AcquireSegmentLocked() {
  if (acquiring_) {  // another writer is at it: wait, then let the caller recheck
    cv_.wait(mu_, [&]() REQUIRES(mu_) { return !acquiring_; });
    return Status::OK();
  }
  Claim claim(&acquiring_, &cv_);
  const uint32_t ring = RingSlot(log_.last_seg_id() + 1);
  for (;;) {
    if (failed_) return FailedStatus();
    const log::SegmentLog& prev = log_.seg(ring);
    if (prev.id != 0 && prev.id > last_writeback_id_) {
      WBFS_RETURN_IF_ERROR(WritebackUrgent(prev.id));
      continue;
    }
    if (map_.book(ring).pins > 0 || prev.unflushed > 0 || static_cast<int64_t>(ring) == prefill_slot_) {
      cv_.wait(mu_);
      continue;
    }
    if (prev.id != 0 && prev.id >= log_.record_tail_seg()) {
      WBFS_RETURN_IF_ERROR(WriteRecordLocked(false));
      continue;
    }
    log_.ReleaseBuffer(ring);  // sealed and flushed, not yet released
    if (!log_.HasFreeBuffer()) {
      cv_.wait(mu_);
      continue;
    }
    break;
  }
  map_.Evict(ring);  // what the old occupant still caches (clean by now)
  log_.Begin();
  return Status::OK();
}

// ---------------------------------------------------------------- flush

void EngineImpl::FlusherMain() {
  Lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&]() REQUIRES(mu_) { return !flushing_ && (stop_ || log_.HasJobs()); });
    if (!log_.HasJobs()) return;  // stop_ and drained
    FlushFrontLocked();
  }
}

void EngineImpl::PumpLocked() {
  while (!opts_.threads && log_.HasJobs()) FlushFrontLocked();
}

// Writes the oldest cut chunk (LogWriter::FlushFront), one at a time in
// seq order; then records its blocks' checksums and syncs the cache every
// sync_every_segments segments.
void EngineImpl::FlushFrontLocked() {
  flushing_ = true;
  log::FlushedChunk f;
  const Status st = log_.FlushFront(&mu_, failed_, &f);
  flushing_ = false;
  if (!st.ok()) {
    SetFailedLocked(st);
    return;
  }
  cv_.notify_all();
  if (!f.written) return;
  // Written (the write returned): a death of this process can no longer
  // lose the chunk, so the ack log need not keep its blocks.
  if (ack_) ack_->Trim(log_.flushed_seq());
  map_.SetCrcs(f.first_slot, f.block_crcs, f.nr_blocks);
  st_.cache_bytes_written += f.bytes;
  st_.nr_chunks_written++;
  if (f.sync_due) {
    const uint64_t target = log_.flushed_seq();
    mu_.unlock();
    (void)SyncTo(target);  // a failure marks the engine failed
    mu_.lock();
  }
}

Status EngineImpl::WaitFlushedLocked(uint64_t seq) {
  cv_.wait(mu_, [&]() REQUIRES(mu_) { return failed_ || log_.flushed_seq() >= seq; });
  if (log_.flushed_seq() < seq) return FailedStatus();
  return Status::OK();
}

Status EngineImpl::SyncTo(uint64_t seq) {
  MutexLock sl(sync_mu_);
  uint64_t target;
  {
    Lock lk(mu_);
    if (log_.durable_seq() >= seq) return Status::OK();
    if (failed_) return FailedStatus();
    target = log_.flushed_seq();
  }
  Status st = cache_->Sync();
  Lock lk(mu_);
  st_.nr_cache_syncs++;
  if (!st.ok()) {
    SetFailedLocked(st);
    return FailedStatus();
  }
  log_.MarkDurable(target);
  cv_.notify_all();
  return Status::OK();
}

Status EngineImpl::Flush() {
  uint64_t target;
  {
    Lock lk(mu_);
    if (failed_) return FailedStatus();
    if (closed_) return Status::Failed("the engine is closed");
    if (log_.chunk_n() > 0) {
      st_.nr_partial_flushed++;
      CutChunkLocked();
      PumpLocked();
    }
    target = log_.last_cut_seq();
    // The flusher idle: write the chunks here rather than wake it and wait
    // (two thread hand-offs on the fsync path).
    while (!flushing_ && log_.HasJobs() && log_.flushed_seq() < target && !failed_) FlushFrontLocked();
    WBFS_RETURN_IF_ERROR(WaitFlushedLocked(target));
  }
  WBFS_RETURN_IF_ERROR(SyncTo(target));
  // Write-around data went to the backing: the flush covers it too. A
  // failed backing sync fails the engine, as a failed cache sync does: a
  // later flush must not report durable what this one could not make so.
  if (write_around()) {
    Status st = backing_->Sync();
    if (!st.ok()) {
      Lock lk(mu_);
      SetFailedLocked(st.WithContext("syncing the backing (write_around_mode)"));
      return FailedStatus();
    }
  }
  return Status::OK();
}

void EngineImpl::SetFailedLocked(const Status& st) {
  if (!failed_) {
    failed_ = true;
    error_ = st.message();
    Log("cache failed: " + st.message() + "; writes and flushes now fail with EIO, reads go on; "
        "unmount and check the cache device");
  }
  cv_.notify_all();
}

}  // namespace wbfs::engine_detail
