// The wbfs engine: index, replay, read and write paths, writeback; the log
// itself is written by log::LogWriter (log/log_writer.h).
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
// and thread mains EXCLUDE it. The parts the engine holds (log_, zeros_,
// stager_, index_) have no lock of their own: each is a field GUARDED_BY(mu_),
// so every call into one holds mu_; the LogWriter's calls that do I/O take
// mu_ as an argument (REQUIRES it) and drop it around the I/O only. What the
// analysis cannot see is the pin protocol: a pinned segment's buffer is
// read without the lock.
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "engine/block_index.h"
#include "engine/cache_map.h"
#include "engine/pieces.h"
#include "engine/policy.h"
#include "engine/read_plan.h"
#include "engine/read_stager.h"
#include "engine/writeback.h"
#include "engine/writeback_unit.h"
#include "engine/zero_map.h"
#include "journal/journal.h"
#include "log/log_reader.h"
#include "log/log_writer.h"
#include "log/replay.h"
#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "util/crc32c.h"
#include "util/mutex.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

namespace wbfs {

std::string StatName(unsigned i) {
  std::string s = (i & kStatWrite) ? "write" : "read";
  s += (i & kStatHit) ? "_hit" : "_miss";
  s += (i & kStatBuffer) ? "_buffer" : "_cache";
  s += (i & kStatFull) ? "_full" : "_partial";
  return s;
}

namespace {

using format::kBlockSize;
using format::kBlocksPerSegment;
using format::kSectorSize;
using format::kSectorsPerBlock;

// A read's backing pieces separated by at most kReadGapMax bytes that come
// from elsewhere (the cache, RAM, zeros) are read as one span of at most
// kReadSpanMax (ReadExtents): on an HDD a seek costs ~5 ms, the time to
// read ~750 KB.
constexpr uint64_t kReadGapMax = 256 << 10;
constexpr uint64_t kReadSpanMax = 4 << 20;


uint64_t RandomU64() {
  uint64_t v = 0;
  while (getrandom(&v, sizeof(v), 0) != sizeof(v)) {
  }
  return v;
}

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

using wb::PendingDiscard;

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
};

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

// ---------------------------------------------------------------- read

Status EngineImpl::Read(uint64_t off, void* buf, size_t len) {
  if (off > Size() || len > Size() - off) return Status::OutOfRange("read beyond the image");
  ReadPlan plan;
  {
    Lock lk(mu_);
    PlanReadLocked(off, len, static_cast<uint8_t*>(buf), &plan);
  }
  Status result = ReadExtents(*cache_, *backing_, plan.ext, kReadGapMax, kReadSpanMax);
  std::vector<const ReadPlan::Verify*> bad;
  if (result.ok() && !plan.verify.empty()) result = VerifyBlocks(*cache_, plan.verify, &bad);
  // Read errors go to the caller; the log hears of each episode once.
  if (!result.ok() && !read_failing_.exchange(true)) {
    Log("read failed: " + result.message() + "; the read returns EIO");
  } else if (result.ok() && read_failing_.load(std::memory_order_relaxed) &&
             read_failing_.exchange(false)) {
    Log("reads work again");
  }
  if (!plan.pinned.empty() || !plan.staged.empty()) {
    Lock lk(mu_);
    for (const ReadPlan::Verify* v : bad) result = BadBlockLocked(v->cache_off, v->block);
    for (uint32_t slot : plan.pinned) map_.BookOf(slot).pins--;
    cv_.notify_all();
    for (const ReadPlan::Staged& x : plan.staged) {
      if (result.ok()) stager_.Fill(x.block, x.data);
      else stager_.Cancel(x.block);
    }
    if (!plan.staged.empty()) InjectStagedLocked(std::chrono::milliseconds(opts_.read_stage_delay_ms));
  }
  return result;
}

void EngineImpl::PlanReadLocked(uint64_t off, size_t len, uint8_t* out, ReadPlan* plan) {
  const int64_t threshold = tun_.read_cache_threshold;
  const bool stage = threshold > 0 && !failed_ && !closed_ &&
                     stager_.Track(off / kBlockSize, (off + len + kBlockSize - 1) / kBlockSize, threshold);
  for (Pieces p(off, len); !p.done(); p.Next()) {
    const uint64_t block = p.block();
    const uint32_t lo = p.lo(), hi = p.hi();
    uint8_t* dst = out + p.at();
    unsigned stat = p.whole() ? kStatFull : 0;
    const uint32_t slot = map_.Find(block);
    const bool zeroed = zeros_.Covers(block);  // a pending discard: not the backing's data
    if (slot == BlockIndex::kNone) {
      if (zeroed) std::memset(dst, 0, hi - lo);
      else plan->Add(dst, block * kBlockSize + lo, hi - lo, false);
      if (stage && (stat & kStatFull) && stager_.Reserve(block)) plan->staged.push_back({block, dst});
      st_.stat[stat]++;
      continue;
    }
    stat |= kStatHit;
    const uint8_t mask = map_.Mask(slot);
    const uint8_t* ram = log_.RamBlock(slot);
    if (log_.InCurrentSegment(slot)) stat |= kStatBuffer;
    bool pin = false;
    bool from_cache = false;  // some sectors come from the cache device
    // Walk the sectors, each from the cache (valid) or the backing.
    for (uint32_t b = lo; b < hi;) {
      const bool cached = mask & (1u << (b / kSectorSize));
      uint32_t e = b;
      while (e < hi && ((mask >> (e / kSectorSize)) & 1u) == cached) {
        e = std::min(hi, (e / kSectorSize + 1) * kSectorSize);
      }
      if (!cached) {
        if (zeroed) std::memset(dst + (b - lo), 0, e - b);
        else plan->Add(dst + (b - lo), block * kBlockSize + b, e - b, false);
      } else if (ram != nullptr) {
        std::memcpy(dst + (b - lo), ram + b, e - b);
      } else if (!block_crcs_) {
        plan->Add(dst + (b - lo), log_.CacheOffset(slot) + b, e - b, true);
        pin = true;
      } else {
        from_cache = true;  // whole block, below
      }
      b = e;
    }
    if (from_cache) {
      pin = true;
      const bool whole = lo == 0 && hi == kBlockSize && mask == format::kFullMask;
      plan->verify.push_back({dst, log_.CacheOffset(slot), block, map_.crc(slot), !whole, lo, hi, mask});
      if (whole) plan->Add(dst, log_.CacheOffset(slot), kBlockSize, true);
    }
    if (pin) {
      map_.BookOf(slot).pins++;
      plan->pinned.push_back(slot);
    }
    st_.stat[stat]++;
  }
}

void EngineImpl::InjectStagedLocked(ReadStager::Clock::duration min_age) {
  if (stager_.empty() || failed_ || closed_) return;
  const std::vector<uint64_t> ready = stager_.Injectable(tun_.read_cache_threshold, min_age);
  if (ready.empty()) return;
  // Write-around: a staged read may have seen a write that went around the
  // cache and is not durable on the backing yet. Its clean copy must not
  // become durable in the log first, or a crash would leave the cache
  // disagreeing with the backing (found by the simulation).
  if (write_around() && around_gen_ != around_synced_) {
    const uint64_t gen = around_gen_;
    mu_.unlock();
    Status st = backing_->Sync();
    mu_.lock();
    if (!st.ok()) return;  // not now; the cells wait
    around_synced_ = std::max(around_synced_, gen);
  }
  for (uint64_t block : ready) {
    if (!EnsureRoomLocked().ok()) return;  // may drop the lock: look again
    const uint8_t* data = stager_.Data(block);
    if (data == nullptr) continue;  // cancelled meanwhile
    if (map_.Find(block) == BlockIndex::kNone) {
      PlaceLocked(block, data, format::kFullMask, false);
      st_.nr_staged_blocks++;
    }
    stager_.Remove(block);
  }
}

// ---------------------------------------------------------------- write

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
    if (open_chunk_ms_ == 0) open_chunk_ms_ = WallClockMs();
    st_.stat[stat | kStatBuffer]++;
    return Status::OK();
  }
  if (slot != BlockIndex::kNone && log_.InCurrentSegment(slot)) stat |= kStatBuffer;
  st_.stat[stat]++;
  PlaceLocked(block, data, mask, true);
  return Status::OK();
}

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
  for (;;) {
    WBFS_RETURN_IF_ERROR(EnsureRoomLocked());
    if (log_.chunk_n() > 0) {
      CutChunkLocked();  // earlier writes go first, with their own flags
      PumpLocked();
      continue;
    }
    break;
  }
  // From here on nothing needs a new segment.
  map_.InvalidateRange(x.start, x.count);
  const bool discard = x.kind == format::kExtentDiscard;
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
  map_.Place(log_.Append(data), block, mask, dirty);
  if (dirty && open_chunk_ms_ == 0) open_chunk_ms_ = WallClockMs();
}

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

// ---------------------------------------------------------------- writeback

// The log is full: a writer needs the slot of segment `needed`. It waits
// anyway, so it gets a full batch of the oldest sealed segments, not just
// `needed`: one backing sync per batch, not per segment (one-segment units
// made streaming through a full cache pay a backing sync and ~127 seeks
// every 512 KiB). A unit the background thread has under way may free the
// slot first: then there is nothing to do. The background thread keeps the
// shrinking batch, so that a writer never waits long behind it.
Status EngineImpl::WritebackUrgent(uint64_t needed) {
  st_.nr_writeback_waits++;
  cv_.wait(mu_, [&]() REQUIRES(mu_) { return !wb_running_; });
  if (needed <= last_writeback_id_) return Status::OK();
  return WritebackLocked(log_.last_sealed_id(), false,
                         static_cast<uint64_t>(tun_.nr_max_batched_writeback));
}

Status EngineImpl::WritebackLocked(uint64_t upto, bool current, uint64_t batch) {
  cv_.wait(mu_, [&]() REQUIRES(mu_) { return !wb_running_; });
  // Held from here, not just around the I/O: waiting for the unit's chunks
  // to flush drops the lock, and a second caller must not build the same
  // unit meanwhile. Every return holds the lock.
  Claim claim(&wb_running_, &cv_);
  // A journaled unit whose apply failed is applied again before the next
  // one (Journal::Write): the next unit must then cover at least as much,
  // or it would take the backing back to an earlier point for some blocks
  // only.
  carry_.Cover(&upto, &batch, &current);
  // The unit: sealed segments after last_writeback_id_, then maybe the
  // current one (its cut chunks).
  std::vector<uint64_t> ids;
  cur_batch_ = batch;
  for (uint64_t id = last_writeback_id_ + 1; id <= upto && ids.size() < batch; id++) {
    const log::SegmentLog& s = log_.seg(RingSlot(id));
    if (s.id != id) break;
    if (!s.sealed && !(current && static_cast<int64_t>(RingSlot(id)) == log_.cur())) break;
    ids.push_back(id);
  }
  if (ids.empty()) return Status::OK();
  if (current && log_.cur() >= 0 && log_.seg(static_cast<uint32_t>(log_.cur())).id == ids.back()) {
    SealCurrentLocked();
    PumpLocked();
  }
  // Wait until everything in the unit is on the cache device.
  for (;;) {
    if (failed_) return FailedStatus();
    bool flushed = true;
    for (uint64_t id : ids) flushed = flushed && log_.seg(RingSlot(id)).unflushed == 0;
    if (flushed) break;
    cv_.wait(mu_);
  }
  std::vector<wb::SegmentView> views;
  for (uint64_t id : ids) {
    const uint32_t ring = RingSlot(id);
    const log::SegmentLog& s = log_.seg(ring);
    const SegmentBook& b = map_.book(ring);
    views.push_back({id, ring, b.applied, s.fill, s.sealed, s.last_chunk_seq, s.last_ms, &b.discards});
  }
  wb::Plan plan = wb::BuildPlan(views, map_.slots(), map_.crcs(), sb_.nonce, journal_ != nullptr);
  for (const wb::Range& r : plan.ranges) map_.book(r.ring).pins++;
  mu_.unlock();

  // The unit must be durable in the cache before the backing changes: a
  // crash must not leave a replayed older (clean) copy over newer backing
  // data.
  wb::Outcome done;
  done.st = SyncTo(plan.point.chunk_seq);
  if (done.st.ok()) {
    wb::RunOptions ro;
    ro.verify = block_crcs_;
    ro.accept_loss = opts_.accept_loss;
    ro.fill.max_gap = write_around() ? 0 : opts_.writeback_fill_gap;
    ro.fill.max_window = opts_.writeback_fill_window;
    done = wb::Run(*cache_, *backing_, journal_.get(), sb_, &plan, ro, &abort_wb_);
  }
  const Status& st = done.st;

  mu_.lock();
  for (const wb::Item& it : done.bad) {
    (void)BadBlockLocked(log_.CacheOffset(it.slot), it.block);
    if (opts_.accept_loss && st.ok() && SlotWord::Valid(map_.word(it.slot))) {
      Log("accept_loss: writeback left image offset " + std::to_string(it.block * kBlockSize) +
          " out; it reads as the backing's older copy");
      map_.Invalidate(it.slot);
    }
  }
  for (const wb::Range& r : plan.ranges) map_.book(r.ring).pins--;
  cv_.notify_all();
  if (!st.ok()) {
    // The changes stay unapplied in the cache; the next writeback retries
    // them (a journaled unit left pending: the next one covers it).
    const bool redo = journal_ && journal_->pending();
    if (carry_.Failed(st, redo, ids.back(), ids.size(), !log_.seg(RingSlot(ids.back())).sealed || current)) {
      Log("writeback failed: " + st.message() + "; the dirty blocks stay in the cache and "
          "writeback is retried");
    }
    if (st.code() == Status::Code::kFailed) return st;  // stopped for unmount
    return st.WithContext("writeback");
  }
  if (carry_.Succeeded(plan.point)) Log("writeback works again");
  st_.backing_bytes_written += done.applied.bytes_written;
  st_.backing_fill_bytes += done.applied.bytes_filled;
  if (!done.empty) st_.nr_writeback_units++;
  for (const wb::Item& it : plan.taken) map_.Applied(it.slot);
  for (size_t k = 0; k < ids.size(); k++) {
    SegmentBook& s = map_.book(RingSlot(ids[k]));
    s.applied = plan.ends[k];
    if (s.applied == log_.seg(RingSlot(ids[k])).fill) s.unapplied_ms = 0;
    // Discards logged meanwhile sit after plan.ends[k] (positions only grow).
    size_t n = 0;
    for (const PendingDiscard& d : s.discards) {
      if (d.pos < plan.ends[k]) continue;
      s.discards[n++] = d;
    }
    s.discards.resize(n);
  }
  for (const wb::Punch& p : plan.punches) DiscardAppliedLocked(p.start, p.count);
  for (uint64_t id : ids) {
    const log::SegmentLog& s = log_.seg(RingSlot(id));
    if (s.sealed && map_.book(RingSlot(id)).applied == s.fill && id == last_writeback_id_ + 1) last_writeback_id_ = id;
  }
  // drop_caches ends with the unit that leaves nothing unapplied, in the
  // same hold of the lock: whoever sees no dirty block (drop_caches' CLI
  // waits so) must not see the drop write back a later change as well.
  if (force_drop_ && AllAppliedLocked()) force_drop_ = false;
  return Status::OK();
}

Status EngineImpl::WritebackAll() {
  Lock lk(mu_);
  while (!AllAppliedLocked()) {
    if (failed_) return FailedStatus();
    uint64_t dirty = map_.nr_dirty(), discards = zeros_.pending(), lw = last_writeback_id_;
    WBFS_RETURN_IF_ERROR(WritebackLocked(log_.last_seg_id(), true,
                                         static_cast<uint64_t>(tun_.nr_max_batched_writeback)));
    if (map_.nr_dirty() == dirty && zeros_.pending() == discards && last_writeback_id_ == lw) {
      return Status::Failed("writeback made no progress with " + std::to_string(dirty) +
                            " dirty blocks left");
    }
  }
  return Status::OK();
}

Status EngineImpl::RestartLogAfterLoss(const log::SyncedLoss& loss) {
  const uint64_t survivors = Stats().nr_dirty_cache_blocks;
  WBFS_RETURN_IF_ERROR(WritebackAll());
  Lock lk(mu_);
  SealCurrentLocked();  // the damaged chunk's slot is never continued
  WBFS_RETURN_IF_ERROR(WaitFlushedLocked(log_.last_cut_seq()));
  if (!AllAppliedLocked()) return Status::Failed("writing back what survived the loss did not finish");
  // Everything the log holds is on the backing: the record's tail moves
  // past it, and the next chunk's seq jumps above every seq on the cache.
  last_writeback_id_ = log_.last_seg_id();
  log_.SettleSeqs(loss.max_seq + 1);
  st_.dropped_chunks += loss.lost_chunks;
  WBFS_RETURN_IF_ERROR(WriteRecordLocked(true));
  Log("accept_loss: " + log::DescribeSyncedLoss(loss) + "; the image was rolled back to flush point " +
      log::RollbackPointText(loss) + ", " +
      std::to_string(survivors) + " dirty blocks that survived were written back, and the log " +
      "restarts at chunk seq " + std::to_string(log_.next_seq()));
  return Status::OK();
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
  s.failed = failed_;
  s.error = error_;
  return s;
}

// ---------------------------------------------------------------- background

// The background thread: once a second it samples the backing's busy time;
// it writes back when drop_caches asks, when the backing is less busy than
// writeback_threshold, or (threshold > 0) when less than a quarter of the
// log is free, whatever the load, so that writers seldom wait for room.
// It also runs sync_data_interval and update_sb_record_interval.
void EngineImpl::BackgroundMain() {
  Lock lk(mu_);
  BackgroundClocks clocks;
  clocks.last_sample = clocks.last_sync = clocks.last_record = BgClock::now();
  clocks.busy_prev = backing_->BusyMillis();
  // Every wait ends at once when Close() asks the thread to stop (a plain
  // timed wait slept through that notify after a failed unit, and every
  // close of a failing engine took a second).
  const auto stop = [&]() REQUIRES(mu_) { return bg_stop_; };
  while (!bg_stop_) {
    const BgClock::time_point now = BgClock::now();
    SampleBackingLocked(now, &clocks);
    if (failed_) {
      cv_.wait_for(lk, std::chrono::seconds(1), stop);
      continue;
    }
    if (PeriodicSyncLocked(now, &clocks.last_sync)) continue;
    if (RecordRefreshLocked(now, &clocks.last_record)) continue;
    InjectStagedLocked(std::chrono::milliseconds(opts_.read_stage_delay_ms));
    if (force_drop_ && AllAppliedLocked()) force_drop_ = false;
    const policy::Decision d = policy::Decide(PolicyInputsLocked(), &low_room_);
    if (d.want && !wb_running_ && carry_.RetryDue(MonotonicMs())) {
      Status st = d.whole_log ? WritebackLocked(log_.last_seg_id(), true, d.batch)
                              : WritebackLocked(log_.last_sealed_id(), false, d.batch);
      if (!st.ok()) {
        // Retry later, backing off: the backing may be full until someone
        // frees space. (A success resets it, in WritebackLocked.)
        carry_.BackOff(MonotonicMs());
      }
      continue;
    }
    if (d.want && !wb_running_) {  // backing off: wait for the retry (or a new drop_caches)
      const uint64_t left = carry_.RetryWaitMs(MonotonicMs());
      cv_.wait_for(lk, std::chrono::milliseconds(std::min<uint64_t>(200, left)), stop);
      continue;
    }
    cv_.wait_for(lk, std::chrono::milliseconds(d.want ? 10 : 200), stop);
  }
}

void EngineImpl::SampleBackingLocked(BgClock::time_point now, BackgroundClocks* c) {
  if (now - c->last_sample < std::chrono::seconds(1)) return;
  mu_.unlock();
  const uint64_t busy = backing_->BusyMillis();
  mu_.lock();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - c->last_sample).count();
  util_ = std::min<int64_t>(100, static_cast<int64_t>(busy - c->busy_prev) * 100 / std::max<int64_t>(1, ms));
  c->busy_prev = busy;
  c->last_sample = now;
}

bool EngineImpl::PeriodicSyncLocked(BgClock::time_point now, BgClock::time_point* last) {
  if (tun_.sync_data_interval <= 0 || now - *last < std::chrono::seconds(tun_.sync_data_interval)) return false;
  *last = now;
  if (log_.chunk_n() > 0) CutChunkLocked();
  const uint64_t target = log_.last_cut_seq();
  if (log_.durable_seq() < target && WaitFlushedLocked(target).ok()) {
    mu_.unlock();
    (void)SyncTo(target);
    mu_.lock();
  }
  return true;
}

bool EngineImpl::RecordRefreshLocked(BgClock::time_point now, BgClock::time_point* last) {
  if (tun_.update_sb_record_interval <= 0 ||
      now - *last < std::chrono::seconds(tun_.update_sb_record_interval)) {
    return false;
  }
  *last = now;
  if (log_.record_tail_seg() != last_writeback_id_ + 1) (void)WriteRecordLocked(false);
  return true;
}

policy::Inputs EngineImpl::PolicyInputsLocked() const {
  policy::Inputs in;
  in.drop_caches = force_drop_;
  in.threshold = tun_.writeback_threshold;
  in.utilization = util_;
  in.nr_segments = nr_segments_;
  in.used = log_.last_seg_id() - last_writeback_id_;
  in.sealed_waiting = log_.last_sealed_id() > last_writeback_id_;
  in.batch = BatchLocked();
  in.oldest_ms = OldestUnappliedMsLocked();
  in.now_ms = WallClockMs();
  in.idle_drain_ms = opts_.idle_drain_ms;
  in.max_dirty_age_s = tun_.max_dirty_age;
  return in;
}

Status EngineImpl::SetTunable(const std::string& key, int64_t value) {
  const TunableDef* d = FindTunable(key);
  if (d == nullptr) return Status::InvalidArgument("unknown tunable '" + key + "'");
  if (!d->online) {
    return Status::InvalidArgument(key + " cannot be changed on a mounted cache; remount with -o " +
                                   key + "=" + std::to_string(value));
  }
  Lock lk(mu_);
  WBFS_RETURN_IF_ERROR(wbfs::SetTunable(&tun_, key, value));
  if (key == "read_cache_threshold" && value == 0) stager_.Clear();
  cv_.notify_all();
  return Status::OK();
}

uint64_t EngineImpl::OldestUnappliedMsLocked() const {
  // Times grow along the log: the first segment with a change not on the
  // backing has the oldest.
  for (uint64_t id = last_writeback_id_ + 1; id <= log_.last_seg_id(); id++) {
    const SegmentBook& b = map_.book(RingSlot(id));
    if (log_.seg(RingSlot(id)).id == id && b.unapplied_ms != 0) return b.unapplied_ms;
  }
  return open_chunk_ms_;
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

// ---------------------------------------------------------------- open

}  // namespace

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
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace wbfs
