// Writeback: units of the log applied to the backing in order
// (WritebackLocked: pick the segments, build the unit with wb::BuildPlan,
// run its I/O with wb::Run outside the lock, book the result), the
// writer's urgent unit, the drain at unmount and after an accepted loss;
// and the background thread's loop (named steps; the decision is
// policy::Decide).
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "engine/engine_impl.h"
#include "util/clock.h"

namespace wbfs::engine_detail {

// ---------------------------------------------------------------- writeback

// The log is full: a writer needs the slot of segment `needed`. It waits
// anyway, so it gets the oldest sealed segments in one unit of up to
// policy::kPressureUnits times nr_max_batched_writeback, not just `needed`:
// one backing sync per unit, and
// the unit as dense as the log can make it, so that the writeback windows
// join its scattered blocks into large sequential I/O instead of a seek
// per block (one-segment units made streaming through a full cache pay a
// backing sync and ~127 seeks every 512 KiB). The unit's data is read from
// the cache as it is needed (wb::CacheData), so its size costs no memory.
// A unit the background thread has under way may free the slot first: then
// there is nothing to do.
// A unit that fails with an I/O error is tried again until writeback has
// been failing for EngineOptions::room_retry_ms; then the writer gets the
// error. The time counts from the outage's first failure, not from this
// writer's arrival, and once it is up a writer arriving within kRecentMs
// of the last failure gets that failure without trying again: writers
// queued behind a dead backing fail one after another at once, not one
// attempt (on RBD, a 10 s op timeout) apart. A failure more than
// room_retry_ms after the one before starts a new outage (nobody tried in
// between: an old failure says nothing about now).
Status EngineImpl::WritebackUrgent(uint64_t needed) {
  constexpr uint64_t kRecentMs = 1000;
  st_.nr_writeback_waits++;
  uint64_t pause = 250;
  for (;;) {
    cv_.wait(mu_, [&]() REQUIRES(mu_) { return !wb_running_; });
    if (needed <= last_writeback_id_) return Status::OK();
    if (opts_.threads && carry_.failing() && !wb_last_failure_.ok()) {
      const uint64_t now = MonotonicMs();
      if (now - wb_failing_since_ms_ >= opts_.room_retry_ms && now - wb_last_failure_ms_ < kRecentMs) {
        return wb_last_failure_;
      }
    }
    Status st = WritebackLocked(log_.last_sealed_id(), false,
                                static_cast<uint64_t>(tun_.nr_max_batched_writeback) * policy::kPressureUnits);
    if (st.ok() || st.code() != Status::Code::kIOError || !opts_.threads || !carry_.failing()) return st;
    const uint64_t waited = MonotonicMs() - wb_failing_since_ms_;
    if (waited >= opts_.room_retry_ms) return st;
    const auto nap = std::chrono::milliseconds(std::min<uint64_t>(pause, opts_.room_retry_ms - waited));
    // Woken early when room was freed meanwhile (the background thread, a
    // drop_caches) or the engine is closing.
    if (cv_.wait_for(mu_, nap, [&]() REQUIRES(mu_) {
          return closed_ || failed_ || stop_ || needed <= last_writeback_id_;
        })) {
      if (needed <= last_writeback_id_) return Status::OK();
      return st;
    }
    pause = std::min<uint64_t>(pause * 2, 4000);
  }
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
  // A journal that cannot grow (a block device) bounds the unit: its entry
  // must fit, or the unit would fail again at every try. The estimate
  // counts every block the segments hold after what is applied.
  if (journal_ && ids.size() > 1) {
    const uint64_t cap = journal_->Capacity();
    uint64_t blocks = 0;
    size_t keep = 0;
    for (uint64_t id : ids) {
      const uint32_t r = RingSlot(id);
      blocks += log_.seg(r).fill - std::min(log_.seg(r).fill, map_.book(r).applied);
      if (keep > 0 && journal::Journal::EntryBytes(blocks) > cap) break;
      keep++;
    }
    ids.resize(keep);
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
    const uint64_t now = MonotonicMs();
    const bool new_outage = !carry_.failing() || now - wb_last_failure_ms_ > opts_.room_retry_ms;
    if (st.code() != Status::Code::kFailed) {
      if (new_outage) wb_failing_since_ms_ = now;
      wb_last_failure_ms_ = now;
      wb_last_failure_ = st.WithContext("writeback");
    }
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
  in.batch_cap = static_cast<uint64_t>(tun_.nr_max_batched_writeback);
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

}  // namespace wbfs::engine_detail
