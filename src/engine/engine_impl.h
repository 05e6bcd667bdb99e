// EngineImpl: the engine behind include/wbfs/engine.h, its state and its
// rules; the methods live in the files named after their job (engine.cc:
// open, start, record, close, status; engine_read.cc; engine_write.cc;
// engine_chunks.cc: room, chunks, flush and sync; engine_writeback.cc:
// writeback units and the background loop). The state is held in parts
// that own it (CacheMap, log::LogWriter, ZeroMap, ReadStager, wb::Carry),
// each GUARDED_BY the one mutex.
//
// Data flow. Write() copies each 4 KiB piece into the RAM buffer of the
// current segment, inside the open chunk (LogWriter::Append), and
// returns. A chunk is cut when its segment is full or when Flush() is
// called: the engine encodes the per-block entries into its header block
// and LogWriter::Cut gives it its seq; the flusher thread then has the
// LogWriter compute the checksums, seal the header and write header + data
// to the cache in one sequential write. Flush() waits for the flusher to
// reach its chunk and syncs the cache (one sync serves every Flush()
// waiting at that moment: group commit).
//
// Ids. Segments have ids 1, 2, ...; id N lives in ring slot (N-1) mod n.
// Chunks have seqs 1, 2, ... Progress is monotonic: last_cut_seq >=
// flushed_seq >= durable_seq (the LogWriter's), and the log's last segment
// id > last_writeback_id_.
//
// Log wrap. Before segment N takes its slot, the previous occupant N-n must
// be written back (WritebackLocked), unpinned, and behind the record's tail
// (WriteRecordLocked), so that replay never starts in a reused slot.
//
// Writeback units. Writeback applies the log to the backing in order, in
// units of whole segments (or, for WritebackAll and max_dirty_age, up to
// the newest chunk), each ending at a chunk boundary: the image as it was
// when that chunk was cut. With a journal the unit holds every change the
// log made in it (versions superseded later included), reaches the
// backing through the journal (journal/journal.h), and so the backing
// alone is always the image at some flush point. Without one, only the
// newest version of each block is written and a crash in a unit leaves
// the backing a mix until the cache replays. Discards are changes like
// writes: logged, read as zeros meanwhile (zeros_), punched by the unit
// that covers them.
//
// Locking. One mutex (mu_) guards all state. No device I/O is done under
// it: readers and writeback pin the segments they read (pins), drop the
// lock for the I/O and take it again; slot reuse waits for pins to drain.
// sync_mu_ serializes cache syncs and is taken before mu_, never after.
// The rules are annotations the compiler checks (util/mutex.h): fields are
// GUARDED_BY(mu_), the ...Locked methods REQUIRE it (and drop it only
// around I/O: mu_.unlock() ... mu_.lock(), or a wait), the public methods
// and thread mains EXCLUDE it. The parts the engine holds (map_, log_, zeros_,
// stager_, carry_) have no lock of their own: each is a field GUARDED_BY(mu_),
// so every call into one holds mu_; the LogWriter's calls that do I/O take
// mu_ as an argument (REQUIRES it) and drop it around the I/O only. What the
// analysis cannot see is the pin protocol: a pinned segment's buffer is
// read without the lock.
#ifndef WBFS_ENGINE_ENGINE_IMPL_H_
#define WBFS_ENGINE_ENGINE_IMPL_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/block_index.h"
#include "engine/cache_map.h"
#include "engine/policy.h"
#include "engine/read_plan.h"
#include "engine/read_stager.h"
#include "engine/writeback.h"
#include "engine/writeback_unit.h"
#include "engine/zero_map.h"
#include "journal/journal.h"
#include "log/ack_log.h"
#include "log/log_reader.h"
#include "log/log_writer.h"
#include "log/replay.h"
#include "util/mutex.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

namespace wbfs::engine_detail {

// A fresh random nonce (a cache's, a log's).
uint64_t RandomU64();

using wb::PendingDiscard;
using format::kBlockSize;
using format::kBlocksPerSegment;

// Sets a claim flag (acquiring_, wb_running_) and clears it, waking the
// waiters, on every way out of the scope. The engine's lock must be held at
// both ends.
class Claim {
 public:
  Claim(bool* flag, CondVar* cv) : flag_(flag), cv_(cv) { *flag_ = true; }
  ~Claim() {
    *flag_ = false;
    cv_->notify_all();
  }
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;

 private:
  bool* flag_;
  CondVar* cv_;
};

struct PreRead;  // engine_write.cc

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& opts, std::unique_ptr<Device> backing,
             std::unique_ptr<Device> cache, std::unique_ptr<journal::Journal> journal,
             const format::Superblock& sb)
      : opts_(opts),
        backing_(std::move(backing)),
        cache_(std::move(cache)),
        journal_(std::move(journal)),
        sb_(sb),
        nr_segments_(sb.nr_segments),
        block_crcs_(format::HasBlockCrcs(sb)),
        map_(sb.nr_segments, block_crcs_),
        log_(sb, cache_.get(), {opts.nr_ram_buffers, opts.sync_every_segments}, RandomU64()) {
    tun_ = opts.tunables;
  }

  ~EngineImpl() override { (void)Close(); }

  // Replays (or starts) the log that `scan` read (nullptr: a freshly
  // formatted cache); called once before the engine is shared.
  Status Start(const log::CacheMeta& meta, const log::LogScan* scan, bool journal_replayed) EXCLUDES(mu_);
  // After Start, when the caller accepted a synced loss: writes back every
  // block that survived, seals the last segment and restarts the log above
  // every chunk seq the cache holds (a clean record), so that the chunks
  // left behind the damage are never replayed or taken as a witness again.
  Status RestartLogAfterLoss(const log::SyncedLoss& loss) EXCLUDES(mu_);
  // The backing is about to be written outside writeback units.
  Status ForgetBackingPoint() EXCLUDES(mu_) {
    Lock lk(mu_);
    cv_.wait(lk, [&]() REQUIRES(mu_) { return !wb_running_; });
    carry_.set_backing_point(format::FlushPoint{});
    if (!journal_) return Status::OK();
    Claim claim(&wb_running_, &cv_);  // the journal is writeback's: keep writeback out meanwhile
    lk.unlock();
    Status st = journal_->Forget();
    lk.lock();
    return st;
  }

  uint64_t Size() const override { return sb_.backing_size; }
  Status Read(uint64_t off, void* buf, size_t len) override EXCLUDES(mu_);
  Status Write(uint64_t off, const void* buf, size_t len) override EXCLUDES(mu_);
  Status Flush() override EXCLUDES(mu_);
  Status WritebackAll() override EXCLUDES(mu_);
  Status Close() override EXCLUDES(mu_);
  Status CloseClean() override EXCLUDES(mu_) {
    {
      Lock lk(mu_);
      if (closed_) return Status::Failed("the engine is closed");
      if (!AllAppliedLocked()) {
        return Status::Failed(std::to_string(map_.nr_dirty()) + " dirty blocks and " +
                              std::to_string(zeros_.pending()) +
                              " discards are not written back");
      }
      detach_ = true;
    }
    return Close();
  }
  EngineStats Stats() const override EXCLUDES(mu_);
  // After the rebuild (Open): from now on every placed write and every
  // discard is recorded in `ack` before it returns.
  void AttachAckLog(std::unique_ptr<log::AckLog> ack, uint64_t rebuilt) EXCLUDES(mu_) {
    Lock lk(mu_);
    ack_ = std::move(ack);
    st_.ack_log_rebuilt = rebuilt;
  }

 private:
  using Lock = MutexLock;

  uint32_t RingSlot(uint64_t segment_id) const {
    return static_cast<uint32_t>((segment_id - 1) % nr_segments_);
  }
  Status FailedStatus() const REQUIRES(mu_) { return Status::IOError("the cache failed earlier: " + error_, EIO); }
  // A cached block (at `cache_off`, image block `block`) does not match its
  // checksum: counted and logged once per block; the EIO to return.
  Status BadBlockLocked(uint64_t cache_off, uint64_t block) REQUIRES(mu_) {
    const std::string what = "the cached copy of image offset " + std::to_string(block * kBlockSize) +
                             " (cache offset " + std::to_string(cache_off) +
                             ") does not match its checksum";
    if (bad_blocks_.insert(cache_off).second) {
      st_.nr_checksum_errors++;
      Log(what + ": reads of it fail with EIO and writeback keeps it dirty; run wbfs check");
    }
    return Status::IOError(what, EIO);
  }

  // What a read of [off, off + len) into `out` takes from where: RAM
  // copies and zeros are filled in at once, the rest planned; pins the
  // segments the plan reads from the cache (Read unpins them).
  void PlanReadLocked(uint64_t off, size_t len, uint8_t* out, ReadPlan* plan) REQUIRES(mu_);
  Status WriteBlockLocked(uint64_t block, uint32_t lo, uint32_t hi, const uint8_t* src,
                          PreRead* pre, bool* retry) REQUIRES(mu_);
  // The ack log is full: cuts the open chunk and waits until the flusher
  // has written it (which trims the log). The caller looks again.
  Status AckRoomLocked() REQUIRES(mu_);
  // Records the block in cache slot `slot` (in the open chunk) as written
  // at `block`, tagged with the seq its chunk will get.
  void AckBlockLocked(uint64_t block, uint32_t slot) REQUIRES(mu_);
  // Puts a new version of `block` in the next slot of the open chunk.
  void PlaceLocked(uint64_t block, const uint8_t* data, uint8_t mask, bool dirty) REQUIRES(mu_);
  // Appends a chunk of extents (no data) after cutting the open chunk, and
  // returns once it is durable. A discard stays pending (reads as zeros)
  // until the writeback unit covering it punches the backing.
  Status AppendExtentsLocked(const format::Extent& x) REQUIRES(mu_);
  void AddPendingDiscardLocked(SegmentBook& s, uint64_t start, uint64_t count, uint32_t pos) REQUIRES(mu_);
  // The discard of [start, start + count) reached the backing.
  void DiscardAppliedLocked(uint64_t start, uint64_t count) REQUIRES(mu_);
  bool AllAppliedLocked() const REQUIRES(mu_) { return map_.nr_dirty() == 0 && zeros_.pending() == 0; }
  // Wall-clock ms of the oldest change not on the backing (cut or still in
  // the open chunk); 0: none.
  uint64_t OldestUnappliedMsLocked() const REQUIRES(mu_);
  // Write-around: data goes to the backing; cached copies are dropped
  // (durably, first).
  Status WriteAround(uint64_t off, const uint8_t* src, size_t len) EXCLUDES(mu_);
  // Moves filled read-cache cells into the log as clean blocks.
  void InjectStagedLocked(ReadStager::Clock::duration min_age) REQUIRES(mu_);
  Status Discard(uint64_t off, uint64_t len) override EXCLUDES(mu_);
  bool write_around() const { return opts_.tunables.write_around_mode != 0; }
  Status EnsureRoomLocked() REQUIRES(mu_);
  // `seal`: the chunk is the segment's last (see SealCurrentLocked).
  void CutChunkLocked(bool seal = false) REQUIRES(mu_);
  // Ends the segment being filled: its open chunk, or an empty marker chunk
  // when nothing is open, is cut with kChunkSeal, and the next write starts
  // a new segment. Writeback that takes the current segment seals it, so
  // that the segment counts as written back (last_writeback_id reaches
  // last_flushed_id, and the record's tail can move past it): otherwise
  // the log would still hold its dirty flags after drop_caches.
  void SealCurrentLocked() REQUIRES(mu_);
  // `changes`: the chunk holds dirty blocks or a discard (for dirty age).
  uint64_t QueueChunkLocked(uint16_t nr_blocks, uint16_t nr_extents, bool changes, bool seal = false) REQUIRES(mu_);
  Status AcquireSegmentLocked() REQUIRES(mu_);
  Status WaitFlushedLocked(uint64_t seq) REQUIRES(mu_);
  // Writes back sealed segments up to `upto` (a batch at a time), and with
  // `current` also the flushed blocks of the current segment.
  Status WritebackLocked(uint64_t upto, bool current, uint64_t batch) REQUIRES(mu_);
  // dm-writeboost's adaptive batch: it shrinks as the log fills, so that a
  // writer waiting for room never waits for a long batch.
  uint64_t BatchLocked() const REQUIRES(mu_) {
    uint64_t used = log_.last_seg_id() - last_writeback_id_;
    uint64_t free = used >= nr_segments_ ? 0 : nr_segments_ - used;
    return std::min<uint64_t>(static_cast<uint64_t>(tun_.nr_max_batched_writeback), free + 1);
  }
  // The background thread: once a second it samples the backing's busy
  // time; it runs sync_data_interval and update_sb_record_interval, stages
  // read misses, and writes back when policy::Decide says so.
  void BackgroundMain() EXCLUDES(mu_);
  using BgClock = std::chrono::steady_clock;
  struct BackgroundClocks {
    BgClock::time_point last_sample, last_sync, last_record;
    uint64_t busy_prev = 0;  // the backing's BusyMillis at last_sample
  };
  // Sets util_ once a second.
  void SampleBackingLocked(BgClock::time_point now, BackgroundClocks* c) REQUIRES(mu_);
  // sync_data_interval: cuts the open chunk and syncs the cache. True when due.
  bool PeriodicSyncLocked(BgClock::time_point now, BgClock::time_point* last) REQUIRES(mu_);
  // update_sb_record_interval: records the log's tail. True when due.
  bool RecordRefreshLocked(BgClock::time_point now, BgClock::time_point* last) REQUIRES(mu_);
  policy::Inputs PolicyInputsLocked() const REQUIRES(mu_);
  Status SetTunable(const std::string& key, int64_t value) override EXCLUDES(mu_);
  void ClearStats() override EXCLUDES(mu_);
  void StartDropCaches() override EXCLUDES(mu_);
  Status WritebackOldest(uint64_t n) override EXCLUDES(mu_) {
    Lock lk(mu_);
    return WritebackLocked(log_.last_sealed_id(), false, n);
  }
  Status WriteRecordLocked(bool clean) REQUIRES(mu_);
  // Syncs the cache so that every chunk up to `seq` (already flushed) is
  // durable.
  Status SyncTo(uint64_t seq) EXCLUDES(mu_);
  void SetFailedLocked(const Status& st) REQUIRES(mu_);
  void Log(const std::string& msg) {
    if (opts_.log) opts_.log(msg);
  }
  void FlusherMain() EXCLUDES(mu_);
  void PrefillMain() EXCLUDES(mu_);
  void FlushFrontLocked() REQUIRES(mu_);
  // Without threads (opts_.threads false) the caller writes what it cut.
  void PumpLocked() REQUIRES(mu_);
  Status WritebackUrgent(uint64_t needed) REQUIRES(mu_);

  const EngineOptions opts_;
  const std::unique_ptr<Device> backing_;
  const std::unique_ptr<Device> cache_;
  const std::unique_ptr<journal::Journal> journal_;  // null: writeback without a journal
  const format::Superblock sb_;
  const uint64_t nr_segments_;
  const bool block_crcs_;  // version 3: every cached block has a checksum

  mutable Mutex mu_;
  CondVar cv_;  // any progress: flushes, syncs, unpins, writeback
  Mutex sync_mu_ ACQUIRED_BEFORE(mu_);

  CacheMap map_ GUARDED_BY(mu_);  // slot words, checksums, the index, per-segment books
  std::set<uint64_t> bad_blocks_ GUARDED_BY(mu_);  // cache offsets found failing their crc (logged once each)
  // The segment ring, the open chunk, the chunks waiting for their write,
  // the seqs and the record.
  log::LogWriter log_ GUARDED_BY(mu_);

  bool acquiring_ GUARDED_BY(mu_) = false;
  bool wb_running_ GUARDED_BY(mu_) = false;
  bool recording_ GUARDED_BY(mu_) = false;  // a thread is in WriteRecordLocked: one record write at a time
  bool flushing_ GUARDED_BY(mu_) = false;  // a thread is in FlushFrontLocked (the flusher or a Flush caller)
  wb::Carry carry_ GUARDED_BY(mu_);  // redo, failure, retry back-off, the backing's flush point
  // The writeback outage (see WritebackUrgent): MonotonicMs() of its first
  // and its latest failure, and that failure.
  uint64_t wb_failing_since_ms_ GUARDED_BY(mu_) = 0;
  uint64_t wb_last_failure_ms_ GUARDED_BY(mu_) = 0;
  Status wb_last_failure_ GUARDED_BY(mu_);
  std::atomic<bool> read_failing_{false};

  uint64_t last_writeback_id_ GUARDED_BY(mu_) = 0;

  std::thread flusher_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread bg_;             // BackgroundMain
  std::thread prefill_;        // PrefillMain
  int64_t prefill_slot_ GUARDED_BY(mu_) = -1;  // the ring slot PrefillMain is writing: not to be acquired
  bool bg_stop_ GUARDED_BY(mu_) = false;
  std::atomic<bool> abort_wb_{false};  // unmount: stop a writeback batch early
  Tunables tun_ GUARDED_BY(mu_);               // the tunables in force (online ones change)
  bool force_drop_ GUARDED_BY(mu_) = false;    // drop_caches in progress
  bool detach_ GUARDED_BY(mu_) = false;        // CloseClean: the record skips the whole log
  // Background writeback: set below a quarter of the log free, cleared at
  // half free (BackgroundMain's water marks).
  bool low_room_ GUARDED_BY(mu_) = false;
  ZeroMap zeros_ GUARDED_BY(mu_);  // what pending discards make read as zeros
  uint64_t open_chunk_ms_ GUARDED_BY(mu_) = 0;  // first dirty write into the open chunk; 0: none
  uint64_t around_gen_ GUARDED_BY(mu_) = 0;     // write-around writes and punches so far
  uint64_t around_synced_ GUARDED_BY(mu_) = 0;  // of those, made durable before a staging
  ReadStager stager_ GUARDED_BY(mu_);          // read misses waiting to be staged
  uint64_t cur_batch_ GUARDED_BY(mu_) = 0;
  int64_t util_ GUARDED_BY(mu_) = -1;          // backing utilisation %, last second
  bool closed_ GUARDED_BY(mu_) = false;
  bool failed_ GUARDED_BY(mu_) = false;
  std::string error_ GUARDED_BY(mu_);

  EngineStats st_ GUARDED_BY(mu_);
  // The ack log (EngineOptions::ack_log); null: none, or not yet (the
  // rebuild at open runs without). Its records are tagged with the seq of
  // the chunk that holds their block (the open chunk's: log_.next_seq());
  // FlushFrontLocked trims up to each chunk it wrote.
  std::unique_ptr<log::AckLog> ack_ GUARDED_BY(mu_);
};

}  // namespace wbfs::engine_detail

#endif  // WBFS_ENGINE_ENGINE_IMPL_H_
