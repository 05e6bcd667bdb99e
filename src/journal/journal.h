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

// One writeback unit as it reaches the backing.
struct Unit {
  format::FlushPoint point;               // the image the backing shows after it
  std::vector<format::ByteRange> punches;  // applied first
  std::vector<format::ByteRange> runs;     // then these, sorted by offset
  const uint8_t* data = nullptr;           // the runs' contents, in order
  uint64_t data_len = 0;
};

// Punches, writes, syncs. Stops early (kFailed) when *abort becomes true.
// The one applier: the engine (with or without a journal) and recovery.
Status ApplyUnit(Device& backing, const Unit& u, const std::atomic<bool>* abort);

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
  Status Write(Device& backing, const Unit& u, const std::atomic<bool>* abort);

  // Records that the backing no longer matches any flush point this
  // journal knows (it was written without the journal).
  Status Forget();

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
