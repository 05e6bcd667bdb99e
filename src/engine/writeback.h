// Writeback's I/O and its memory between units. What a unit takes is
// decided by writeback_unit.h (pure functions); the engine picks the
// segments, pins them and keeps the slot words. This file does the rest:
//
// - wb::Run: one unit's I/O, with no lock held: the unit's blocks read from
//   the cache and checked against their checksums, then applied to the
//   backing (through the journal, or directly), their bytes read from the
//   cache again as the journal and the apply need them (CacheData): a unit
//   takes memory for its bookkeeping and a few pieces of 8 MiB, not for its
//   data, so a unit may span the whole log.
// - wb::Carry: what one unit leaves to the next: the journaled unit to
//   apply again after a failed apply, what the backing shows, the failure
//   being reported, and the background retry's back-off.
#ifndef WBFS_ENGINE_WRITEBACK_H_
#define WBFS_ENGINE_WRITEBACK_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/writeback_unit.h"
#include "journal/journal.h"
#include "wbfs/device.h"
#include "wbfs/format.h"
#include "wbfs/status.h"

namespace wbfs::wb {

// Units whose data is at most this many bytes are read from the cache once
// and kept in memory (the usual units of nr_max_batched_writeback segments);
// larger ones (under pressure) are read as the journal and the apply need
// them, which reads the cache up to three times but bounds the memory.
constexpr size_t kMemoryUnit = 64 << 20;

struct RunOptions {
  bool verify = false;       // the cache has per-block checksums: check what is read
  bool accept_loss = false;  // a block failing its checksum is left out instead of stopping the unit
  journal::FillPolicy fill;
  size_t memory_unit = kMemoryUnit;  // see kMemoryUnit
};

// What Run did.
struct Outcome {
  Status st;
  std::vector<Item> bad;  // blocks that failed their checksum (left out with accept_loss)
  journal::ApplyStats applied;
  bool empty = false;  // the unit had nothing to write or punch
};

// A unit's data as Pack laid it out, read from the cache: neighbouring
// pieces that lie next to each other in the cache are read in one call.
// With `mem` (the unit's ranges read into memory at item.data offsets, see
// Plan) it is copied from there instead.
class CacheData final : public journal::UnitData {
 public:
  CacheData(Device& cache, const format::Superblock& sb, const std::vector<Piece>& pieces,
            const Plan* plan = nullptr, const uint8_t* mem = nullptr);
  Status Read(uint64_t at, uint8_t* dst, size_t len) override;

 private:
  uint64_t CacheOffset(const Piece& p) const;

  Device& cache_;
  const format::Superblock& sb_;
  const std::vector<Piece>& pieces_;
  const uint8_t* mem_;
  std::vector<int64_t> ring_base_;  // with mem_: where position 0 of a ring slot would lie in it
};


// The unit's I/O. The caller made its chunks durable on the cache and
// pinned the segments it reads; `journal` may be null (writeback without a
// journal). Stops early (kFailed) when *abort becomes true.
Outcome Run(Device& cache, Device& backing, journal::Journal* journal, const format::Superblock& sb,
            Plan* plan, const RunOptions& o, const std::atomic<bool>* abort);

// The longest wait between background retries of a failing writeback.
constexpr uint64_t kMaxRetryMs = 8000;

class Carry {
 public:
  // A journaled unit whose apply failed is applied again before the next
  // one (Journal::Write): the next unit must cover at least as much, or it
  // would take the backing back to an earlier point for some blocks only.
  // Widens a unit's bounds to cover it.
  void Cover(uint64_t* upto, uint64_t* batch, bool* current) const;

  // The unit (segments up to `upto`, `count` of them, `current`: the
  // segment being filled included) failed. `redo`: the journal holds it
  // pending. Returns true on the first failure of a run (to be logged).
  bool Failed(const Status& st, bool redo, uint64_t upto, uint64_t count, bool current);
  // The unit was applied; the backing shows `point`. Returns true when
  // writeback was failing until now (to be logged).
  bool Succeeded(const format::FlushPoint& point);
  // A unit stopped for unmount: the redo state is kept as it was.

  bool failing() const { return failing_; }
  const std::string& error() const { return error_; }
  const format::FlushPoint& backing_point() const { return point_; }
  void set_backing_point(const format::FlushPoint& p) { point_ = p; }

  // Background retries of a failing writeback back off (1 s doubling to
  // kMaxRetryMs): a backing out of space is not hammered with a unit per
  // second. Times are MonotonicMs().
  void BackOff(uint64_t now_ms);
  bool RetryDue(uint64_t now_ms) const { return now_ms >= retry_at_ms_; }
  uint64_t RetryWaitMs(uint64_t now_ms) const { return retry_at_ms_ - std::min(now_ms, retry_at_ms_); }
  void RetryNow() { retry_at_ms_ = 0; }

 private:
  // The journaled unit whose apply failed (ids up to redo_upto_,
  // redo_count_ segments, the current one included): the next unit covers it.
  uint64_t redo_upto_ = 0;
  uint64_t redo_count_ = 0;
  bool redo_current_ = false;
  bool failing_ = false;  // the last writeback failed (logged once)
  std::string error_;     // why, while failing_ (status: writeback_error)
  uint64_t retry_ms_ = 0;
  uint64_t retry_at_ms_ = 0;  // 0: now
  format::FlushPoint point_;  // what the backing shows (after the last unit)
};

}  // namespace wbfs::wb

#endif  // WBFS_ENGINE_WRITEBACK_H_
