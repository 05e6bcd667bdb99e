// The engine's life: Open (checks, journal recovery, format), Start
// (replay into the CacheMap and the LogWriter, the threads), the prefill of
// a new cache, the superblock record, Close, Stats and the online
// tunables. The rules are in engine_impl.h.
#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "engine/engine_impl.h"
#include "util/aligned_buffer.h"
#include "util/clock.h"

namespace wbfs {

std::string StatName(unsigned i) {
  std::string s = (i & kStatWrite) ? "write" : "read";
  s += (i & kStatHit) ? "_hit" : "_miss";
  s += (i & kStatBuffer) ? "_buffer" : "_cache";
  s += (i & kStatFull) ? "_full" : "_partial";
  return s;
}

namespace engine_detail {

uint64_t RandomU64() {
  uint64_t v = 0;
  while (getrandom(&v, sizeof(v), 0) != sizeof(v)) {
  }
  return v;
}

// ---------------------------------------------------------------- start

Status EngineImpl::Start(const log::CacheMeta& meta, const log::LogScan* scan, bool journal_replayed) {
  // Nothing else runs yet; the lock is taken for the rules' sake (and the
  // threads started at the end wait for it).
  Lock lk(mu_);
  const bool formatted = scan == nullptr;
  st_.formatted = formatted;
  st_.journal_replayed = journal_replayed;
  log_.ResumeAtRecord(meta.record);
  last_writeback_id_ = meta.record.tail_segment_id - 1;
  // What the journal says the backing holds already: chunks up to `done`
  // of this cache are on it (the record's tail may lag behind).
  uint64_t done = 0;
  if (journal_ && journal_->state().point.cache_nonce == sb_.nonce) {
    carry_.set_backing_point(journal_->state().point);
    done = journal_->state().point.chunk_seq;
  }
  const uint64_t open_ms = WallClockMs();
  if (!formatted) {
    // The fold's rules (punched markers, what the journal applied, which
    // copy is newest) are log/replay.h's; this keeps the index and the
    // segments' bookkeeping.
    uint32_t ring = 0;
    SegmentBook* book = nullptr;
    log::ReplayCursor replay(*scan, done);
    for (log::ReplayStep step; replay.Next(&step);) {
      const log::ChunkInfo& c = *step.chunk;
      switch (step.kind) {
        case log::ReplayStep::kChunkBegin:
          ring = RingSlot(c.segment_id);
          book = &map_.book(ring);
          if (log_.ReplayChunk(c, open_ms)) *book = SegmentBook();  // a new occupant
          break;
        case log::ReplayStep::kDrop:
          map_.InvalidateRange(step.extent.start, step.extent.count);
          if (step.pending_discard) AddPendingDiscardLocked(*book, step.extent.start, step.extent.count, c.offset);
          break;
        case log::ReplayStep::kBlock: {
          const format::ChunkEntry& e = step.entry;
          const uint32_t slot = ring * kBlocksPerSegment + c.offset + 1 + step.index;
          map_.Place(slot, e.block, e.mask, step.dirty);
          map_.SetCrc(slot, e.crc);
          break;
        }
        case log::ReplayStep::kChunkEnd:
          if (step.applied) book->applied = log_.seg(ring).fill;
          if (step.changes && book->unapplied_ms == 0) book->unapplied_ms = log_.seg(ring).last_ms;
          break;
      }
    }
    st_.replayed_chunks = scan->chunks.size();
    st_.dropped_chunks = scan->dropped_chunks;
    log_.ResumeAfterScan(*scan);
    // Segments the journal applied whole need no writeback.
    while (last_writeback_id_ < log_.last_seg_id()) {
      const uint32_t r = RingSlot(last_writeback_id_ + 1);
      const log::SegmentLog& s = log_.seg(r);
      if (s.id != last_writeback_id_ + 1 || !s.sealed || map_.book(r).applied < s.fill) break;
      last_writeback_id_++;
    }
    // What the scan checksummed may still sit in a volatile device cache.
    lk.unlock();
    Status st = cache_->Sync();
    lk.lock();
    WBFS_RETURN_IF_ERROR(st);
  }
  log_.SettleSeqs();
  if (opts_.threads) {
    flusher_ = std::thread([this] { FlusherMain(); });
    if (opts_.background) bg_ = std::thread([this] { BackgroundMain(); });
    if (formatted && opts_.prefill_new_cache) {
      st_.prefilling = true;
      prefill_ = std::thread([this] { PrefillMain(); });
    }
  }
  return Status::OK();
}

// Writes zeros over every segment of the first lap the log has not reached,
// one at a time, skipping ahead when the log overtakes it. A segment being
// written is not handed to the log until it is done (AcquireSegmentLocked
// waits), so a zero never lands where the log has written. A crash leaves
// only zeros beyond the log's end, which replay reads as unwritten. A
// failed write ends the prefill (the log writes where it goes anyway).
void EngineImpl::PrefillMain() {
  AlignedBuffer zeros(format::kSegmentSize);
  Lock lk(mu_);
  for (uint64_t id = log_.last_seg_id() + 1;; id++) {
    id = std::max(id, log_.last_seg_id() + 1);
    if (closed_ || failed_ || id > nr_segments_) break;
    prefill_slot_ = RingSlot(id);
    lk.unlock();
    Status st = cache_->WriteAt(format::SegmentBlockOffset(sb_, id, 0), zeros.data(), zeros.size());
    lk.lock();
    prefill_slot_ = -1;
    cv_.notify_all();
    if (!st.ok()) {
      Log("prefilling the cache stopped: " + st.message());
      st_.prefill_stopped = st.message();
      break;
    }
    st_.cache_prefill_bytes += zeros.size();
  }
  // The file system's allocation of every block written is committed here,
  // not by the first flush of a user (the first fsync after a prefill of
  // 768 MiB took 0.47 s: mkfs.ext4 on a fresh mount spent it in its first
  // discard).
  if (st_.cache_prefill_bytes > 0 && !closed_ && !failed_) {
    lk.unlock();
    Status st = cache_->Sync();
    lk.lock();
    if (st.ok()) st_.nr_cache_syncs++;
    else Log("syncing the prefilled cache failed: " + st.message());
  }
  st_.prefilling = false;
}

// ---------------------------------------------------------------- record

Status EngineImpl::WriteRecordLocked(bool clean) {
  // One record write at a time: two writers (a writer that needs a slot,
  // the background refresh) would pick the same seq and slot, and if the
  // one with the older tail landed last, a reused segment would later be
  // read as part of the log.
  cv_.wait(mu_, [&]() REQUIRES(mu_) { return !recording_; });
  Claim claim(&recording_, &cv_);
  WBFS_RETURN_IF_ERROR(WaitFlushedLocked(log_.last_cut_seq()));
  if (detach_ && AllAppliedLocked()) last_writeback_id_ = log_.last_seg_id();  // nothing left to replay
  const Status st = log_.WriteRecord(&mu_, last_writeback_id_, clean);
  if (!st.ok()) {
    SetFailedLocked(st);
    return FailedStatus();
  }
  st_.cache_bytes_written += kBlockSize;
  st_.nr_cache_syncs += 2;
  return Status::OK();
}

// ---------------------------------------------------------------- close

Status EngineImpl::Close() {
  Status result;
  {
    Lock lk(mu_);
    if (closed_) return Status::OK();
    closed_ = true;
    bg_stop_ = true;
    abort_wb_ = true;
    cv_.notify_all();
  }
  if (bg_.joinable()) bg_.join();
  if (prefill_.joinable()) prefill_.join();
  {
    Lock lk(mu_);
    // A writer or writeback still inside would need the engine: let them finish.
    cv_.wait(lk, [&]() REQUIRES(mu_) { return !acquiring_ && !wb_running_; });
    if (!failed_) {
      if (log_.chunk_n() > 0) {
        CutChunkLocked();
        PumpLocked();
      }
      // Write-around data went to the backing without a flush: make it
      // durable before the unmount counts as clean.
      if (write_around()) {
        lk.unlock();
        result = backing_->Sync();
        lk.lock();
      }
      if (result.ok()) result = WriteRecordLocked(true);
      // Every chunk is written (WriteRecordLocked waited for them), so the
      // flusher trimmed every record: the region is left empty.
      if (result.ok() && ack_) ack_->Trim(log_.flushed_seq());
    } else {
      result = FailedStatus();
    }
    stop_ = true;
    cv_.notify_all();
  }
  if (flusher_.joinable()) flusher_.join();
  return result;
}

EngineStats EngineImpl::Stats() const {
  Lock lk(mu_);
  EngineStats s = st_;
  s.image_size = sb_.backing_size;
  s.segment_size = format::kSegmentSize;
  s.nr_segments = nr_segments_;
  s.nr_cache_blocks = nr_segments_ * format::kMaxChunkBlocks;
  s.current_id = log_.last_seg_id();
  s.last_flushed_id = log_.flushed_seg_id();
  s.last_writeback_id = last_writeback_id_;
  s.nr_dirty_cache_blocks = map_.nr_dirty();
  s.tunables = tun_;
  s.nr_cached_blocks = map_.nr_cached();
  s.cache_data_bytes = s.nr_cache_blocks * format::kBlockSize;
  s.dirty_bytes = s.nr_dirty_cache_blocks * format::kBlockSize;
  s.cached_bytes = s.nr_cached_blocks * format::kBlockSize;
  s.nr_cur_batched_writeback = cur_batch_;
  s.backing_utilization = util_;
  s.utilization_source = backing_->BusySource();
  s.dropping_caches = force_drop_;
  s.nr_staging = stager_.size();
  s.writeback_failing = carry_.failing();
  s.writeback_error = carry_.error();
  s.pending_discards = zeros_.pending();
  s.journal = journal_ != nullptr;
  if (journal_) {
    s.journal_name = journal_->Name();
    s.journal_bytes_written = journal_->bytes_written();
  }
  s.backing_point_seq = carry_.backing_point().chunk_seq;
  s.backing_point_ms = carry_.backing_point().time_ms;
  s.oldest_unapplied_ms = OldestUnappliedMsLocked();
  s.ack_log_records = ack_ ? ack_->LiveCount() : 0;
  s.failed = failed_;
  s.error = error_;
  return s;
}

void EngineImpl::ClearStats() {
  Lock lk(mu_);
  st_.stat.fill(0);
  st_.nr_partial_flushed = 0;
}

void EngineImpl::StartDropCaches() {
  Lock lk(mu_);
  if (!AllAppliedLocked()) force_drop_ = true;
  carry_.RetryNow();  // a failing writeback is retried at once
  cv_.notify_all();
}

}  // namespace engine_detail

using engine_detail::EngineImpl;
using engine_detail::RandomU64;
using format::kBlockSize;

namespace {

// Ack log slots by default: 4 x (8 RAM buffers x 128 blocks), so that the
// log is full only when the flusher is far behind (17 MB of region).
constexpr uint64_t kAckLogSlots = 4 * 8 * format::kBlocksPerSegment;

// Reads the ack log in opts.ack_log, if any, for the cache of `meta`
// (blank: about to be formatted). Nothing is written.
Status ReadAckLog(const EngineOptions& opts, const log::CacheMeta& meta, const std::string& cache_name,
                  std::unique_ptr<log::AckLog>* ack, std::vector<log::AckRecord>* records) {
  if (opts.ack_log.base == nullptr) return Status::OK();
  *ack = std::make_unique<log::AckLog>(opts.ack_log.base, opts.ack_log.size);
  WBFS_RETURN_IF_ERROR((*ack)->Attach());
  if (!(*ack)->formatted()) return Status::OK();
  (*ack)->Scan(records);
  if (!records->empty() && (meta.blank || (*ack)->nonce() != meta.sb.nonce)) {
    return Status::InvalidArgument("the shared ack log belongs to another cache (nonce " +
                                   std::to_string((*ack)->nonce()) + ", not that of " + cache_name +
                                   "): it holds " + std::to_string(records->size()) +
                                   " acknowledged writes of that cache; nothing was changed");
  }
  return Status::OK();
}

// Applies the acknowledged writes a dead engine left in the ack log (ack
// logging off meanwhile), makes them durable on the cache, and only then
// empties the region and hands it to the engine. A death before the end
// leaves the region as it was: the next open applies them again.
Status RebuildAckLog(EngineImpl* engine, std::unique_ptr<log::AckLog> ack,
                     const std::vector<log::AckRecord>& records, const EngineOptions& opts, uint64_t nonce) {
  if (!ack->formatted() || ack->nonce() != nonce) {
    WBFS_RETURN_IF_ERROR(ack->Format(nonce));  // zeros, or empty and another cache's
  }
  Engine* e = engine;  // the public paths
  for (const log::AckRecord& r : records) {
    if (r.kind == log::AckRecord::kDiscard) {
      WBFS_RETURN_IF_ERROR(e->Discard(r.offset, r.length).WithContext("applying the shared ack log again"));
      continue;
    }
    // Each run of the sectors the block held, as a write of its own.
    for (uint32_t a = 0; a < format::kSectorsPerBlock;) {
      if (!(r.mask & (1u << a))) {
        a++;
        continue;
      }
      uint32_t b = a;
      while (b < format::kSectorsPerBlock && (r.mask & (1u << b))) b++;
      Status st = e->Write(r.offset + a * format::kSectorSize, r.data.data() + a * format::kSectorSize,
                           (b - a) * format::kSectorSize);
      WBFS_RETURN_IF_ERROR(st.WithContext("applying the shared ack log again"));
      a = b;
    }
  }
  if (!records.empty()) {
    WBFS_RETURN_IF_ERROR(engine->Flush().WithContext("applying the shared ack log again"));
    if (opts.log) {
      opts.log("ack log: applied again " + std::to_string(records.size()) +
               " writes and discards that the previous daemon had acknowledged");
    }
  }
  ack->Reset();
  engine->AttachAckLog(std::move(ack), records.size());
  return Status::OK();
}

}  // namespace

size_t AckLogBytes() { return log::AckLog::BytesFor(kAckLogSlots); }

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& opts,
                                             std::unique_ptr<Device> backing,
                                             std::unique_ptr<Device> cache,
                                             std::unique_ptr<Device> journal_dev) {
  const uint64_t bsize = backing->Size();
  const std::string backing_id = backing->Identity().substr(0, format::kMaxBackingIdLen);
  if (bsize == 0 || bsize % kBlockSize != 0) {
    return Status::InvalidArgument("the backing " + backing->Name() + " is " +
                                   std::to_string(bsize) +
                                   " bytes, which is not a positive multiple of 4096");
  }
  if (bsize / kBlockSize > format::kMaxBackingBlocks) {
    return Status::InvalidArgument("the backing " + backing->Name() + " is too large");
  }
  log::CacheMeta meta;
  WBFS_RETURN_IF_ERROR(log::ReadCacheMeta(*cache, &meta));
  bool formatted = false;
  if (meta.blank) {
    if (cache->Size() < format::kMinCacheSize && opts.format_blank_cache) {
      return Status::InvalidArgument(
          "the cache " + cache->Name() + " is " + std::to_string(cache->Size()) +
          " bytes; it must be at least " + std::to_string(format::kMinCacheSize) +
          " bytes (1 MiB of superblock plus 4 segments of 512 KiB)");
    }
  } else if (meta.sb.backing_size != bsize) {
    return Status::InvalidArgument("the cache " + cache->Name() + " was formatted for a backing of " +
                                   std::to_string(meta.sb.backing_size) + " bytes, but " +
                                   backing->Name() + " is " + std::to_string(bsize) + " bytes");
  } else if (!meta.sb.backing_id.empty() && meta.sb.backing_id != backing_id) {
    // A cache that recorded no identity (formatted over a file, or by a
    // wbfs that predates the field) is checked by size only, as before.
    return Status::InvalidArgument("the cache " + cache->Name() + " was formatted for the backing " +
                                   meta.sb.backing_id + ", but " + backing->Name() + " is " +
                                   (backing_id.empty() ? std::string("a device without that identity")
                                                       : backing_id) +
                                   "; nothing was changed");
  }
  // The log is read before anything is written: a log that lost synced
  // data is refused here, with both files untouched, unless the caller
  // accepted the loss.
  log::LogScan scan;
  log::SyncedLoss loss;
  if (!meta.blank) {
    log::ScanOptions so;
    so.prefetch_threads = opts.threads ? 8 : 0;
    WBFS_RETURN_IF_ERROR(log::ScanLog(*cache, meta, so, &scan));
    WBFS_RETURN_IF_ERROR(log::FindSyncedLoss(*cache, meta, scan, so.prefetch_threads, &loss));
    if (loss.found && !opts.accept_loss) {
      return Status::Corruption(
          "the cache " + cache->Name() + " is damaged: " + log::DescribeSyncedLoss(loss) +
          ". Nothing was changed. 'wbfs check " + cache->Name() + "' reports the damage; " +
          "--accept-loss mounts or writes back what survives, rolling the image back to flush "
          "point " + log::RollbackPointText(loss));
    }
  }
  std::unique_ptr<log::AckLog> ack;
  std::vector<log::AckRecord> acked;
  WBFS_RETURN_IF_ERROR(ReadAckLog(opts, meta, cache->Name(), &ack, &acked));
  // Everything checked (nothing written yet): the journal comes first, so
  // that a unit a crash interrupted reaches the backing before anything
  // else reads or writes it.
  std::unique_ptr<journal::Journal> journal;
  bool replayed = false;
  if (journal_dev) {
    auto j = journal::Journal::Open(std::move(journal_dev), bsize);
    if (!j.ok()) return j.status();
    journal = std::move(j.value());
    auto rep = journal->Recover(*backing);
    if (!rep.ok()) return rep.status();
    replayed = rep.value().replayed;
    if (replayed && opts.log) {
      opts.log("journal " + journal->Name() + ": applied the interrupted writeback unit " +
               std::to_string(rep.value().entry_seq) + " again (" +
               std::to_string(rep.value().bytes) + " bytes)");
    }
  }
  if (meta.blank) {
    if (!opts.format_blank_cache) {
      // Its own code: the offline writeback tells "nothing to write back"
      // from every other refusal by it, not by the message.
      return Status::NotFound("the cache " + cache->Name() + " is not formatted");
    }
    WBFS_RETURN_IF_ERROR(log::LogWriter::Format(*cache, bsize, backing_id, RandomU64(), &meta));
    formatted = true;
  }
  format::Superblock sb = meta.sb;
  auto engine = std::make_unique<EngineImpl>(opts, std::move(backing), std::move(cache),
                                             std::move(journal), sb);
  WBFS_RETURN_IF_ERROR(engine->Start(meta, formatted ? nullptr : &scan, replayed));
  if (loss.found) WBFS_RETURN_IF_ERROR(engine->RestartLogAfterLoss(loss));
  // Write-around never leaves dirty data in the cache: whatever an earlier
  // write-back mount left goes to the backing first. From then on writes
  // reach the backing directly, so it is the live image, not a flush point.
  if (opts.tunables.write_around_mode) {
    EngineStats st = engine->Stats();
    if (st.nr_dirty_cache_blocks > 0 || st.pending_discards > 0) {
      if (opts.log) {
        opts.log("write_around_mode: writing back " + std::to_string(st.nr_dirty_cache_blocks) +
                 " dirty blocks and " + std::to_string(st.pending_discards) + " discards first");
      }
      WBFS_RETURN_IF_ERROR(engine->WritebackAll());
    }
    WBFS_RETURN_IF_ERROR(engine->ForgetBackingPoint());
  }
  // Last: the acknowledged writes go on top of everything the cache holds.
  if (ack) WBFS_RETURN_IF_ERROR(RebuildAckLog(engine.get(), std::move(ack), acked, opts, sb.nonce));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace wbfs
