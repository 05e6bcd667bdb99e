// The writeback journal: makes each writeback unit reach the backing
// atomically, so that the backing alone is always the image as it was at
// some flush point of the log (see format.h for the layout).
//
// A unit is journaled (written and synced to the journal file), then
// applied to the backing (punches, then sorted writes, then a sync), then
// retired (the state records the unit's flush point). A crash anywhere
// leaves either the previous flush point on the backing (the entry was
// torn: nothing was applied) or a durable entry that Recover() applies
// again. Applying is idempotent. The journal never lives on the cache: it
// must survive the cache's loss.
#ifndef WBFS_JOURNAL_JOURNAL_H_
#define WBFS_JOURNAL_JOURNAL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "wbfs/device.h"
#include "wbfs/format.h"
#include "wbfs/status.h"

namespace wbfs::journal {

// The bytes of a unit's runs, back to back in run order, read in pieces:
// a unit's data need not fit in memory (a unit of a whole full log holds
// hundreds of MiB; the engine reads it from the cache, recovery from the
// journal, a piece at a time).
class UnitData {
 public:
  virtual ~UnitData() = default;
  // Reads `len` bytes from offset `at` of the runs' data.
  virtual Status Read(uint64_t at, uint8_t* dst, size_t len) = 0;
};

// Data already in memory.
class MemoryData final : public UnitData {
 public:
  explicit MemoryData(const uint8_t* p) : p_(p) {}
  Status Read(uint64_t at, uint8_t* dst, size_t len) override;

 private:
  const uint8_t* p_;
};

// One writeback unit as it reaches the backing.
struct Unit {
  format::FlushPoint point;               // the image the backing shows after it
  std::vector<format::ByteRange> punches;  // applied first
  std::vector<format::ByteRange> runs;     // then these, sorted by offset
  UnitData* data = nullptr;                // the runs' contents, in order
  uint64_t data_len = 0;
};

// How ApplyUnit writes runs that lie close together. A disk pays far more
// per I/O than per byte (an HDD's seek costs ~5 ms, as much as ~750 KiB of
// transfer), so runs at most max_gap apart are joined into one *window*:
// the window is read from the backing in one read, the runs are laid over
// it, and it is written in one write. The gaps are rewritten with the
// bytes they hold, so applying stays idempotent, and a torn write of a gap
// changes nothing. A window never spans a punch of the unit (that would
// write zeros back as data), nor a hole of the backing (a sparse file:
// the gap's zeros would allocate it), and is at most max_window bytes, which bounds
// the RAM one apply needs however large or sparse the unit (the runs' data
// is read from the unit's UnitData window by window). The read and the write
// of a window are not overlapped: on one spindle they would only seek
// against each other. A backing whose QueueDepth() is above 1 (RBD) gets
// no windows: its runs go out as separate writes, many at once.
struct FillPolicy {
  uint64_t max_gap = 0;  // 0: every run is its own write
  uint64_t max_window = 8 << 20;
};

// What one ApplyUnit did to the backing.
struct ApplyStats {
  uint64_t bytes_written = 0;  // all of it, the gaps included
  uint64_t bytes_filled = 0;   // gaps rewritten with their own bytes
  uint64_t writes = 0;         // write calls
};

// Punches, writes, syncs. Stops early (kFailed) when *abort becomes true.
// The one applier: the engine (with or without a journal) and recovery.
// `stats` (optional) is added to.
Status ApplyUnit(Device& backing, const Unit& u, const std::atomic<bool>* abort,
                 const FillPolicy& fill = {}, ApplyStats* stats = nullptr);

struct RecoveryReport {
  bool replayed = false;        // an entry was applied again
  bool torn_entry = false;      // an entry newer than the state did not validate (dropped)
  uint64_t entry_seq = 0;       // of the replayed entry
  uint64_t bytes = 0;           // data bytes it wrote
  format::JournalState state;   // after recovery
};

class Journal {
 public:
  // Reads the state of an existing journal, or initialises a blank one
  // (empty or all zero). Refuses, without writing, anything else that does
  // not validate, and a journal made for a backing of another size.
  static Result<std::unique_ptr<Journal>> Open(std::unique_ptr<Device> dev, uint64_t backing_size);

  // Applies the entry left by a crash between its sync and its retirement,
  // if any, so that the backing alone is the image at the state's flush
  // point. Call before anything else touches the backing.
  Result<RecoveryReport> Recover(Device& backing);

  // Journals, applies and retires `u`. After a failure in the apply step
  // the entry stays pending: the next call (or Recover) applies it first.
  // *abort stops it only while the entry is being written (then there is
  // no entry); once the entry is durable the apply is finished.
  Status Write(Device& backing, const Unit& u, const std::atomic<bool>* abort,
               const FillPolicy& fill = {}, ApplyStats* stats = nullptr);

  // Records that the backing no longer matches any flush point this
  // journal knows (it was written without the journal).
  Status Forget();

  // The most data bytes an entry may hold (a journal on a block device is
  // as large as the device; a file grows).
  uint64_t Capacity() const;
  // Data plus header bytes an entry of `blocks` whole blocks needs at most
  // (every block its own run).
  static uint64_t EntryBytes(uint64_t blocks);

  const format::JournalState& state() const { return state_; }
  // An entry is durable but not known applied (its apply failed): the next
  // Write() applies it first.
  bool pending() const { return pending_; }
  // Safe to call while another thread is in Write().
  uint64_t bytes_written() const { return bytes_written_.load(std::memory_order_relaxed); }
  std::string Name() const { return dev_->Name(); }

 private:
  Journal(std::unique_ptr<Device> dev, uint64_t backing_size)
      : dev_(std::move(dev)), backing_size_(backing_size) {}
  Status WriteState(const format::JournalState& s);

  std::unique_ptr<Device> dev_;
  const uint64_t backing_size_;
  format::JournalState state_;
  uint64_t next_entry_ = 1;
  bool pending_ = false;  // an entry is durable but not known applied
  std::atomic<uint64_t> bytes_written_{0};
};

// The default journal path for a backing: next to it.
std::string DefaultPath(const std::string& backing_path);

}  // namespace wbfs::journal

#endif  // WBFS_JOURNAL_JOURNAL_H_
