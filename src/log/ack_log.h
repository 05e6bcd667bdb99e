// AckLog: the acknowledged writes that are not yet on the cache device,
// kept in memory that outlives the process (a supervisor's memfd, mapped
// MAP_SHARED), so that the next process can apply them again.
//
// It knows nothing of the engine: a record is an offset, a length, the
// 4 KiB block written there (none for a discard) with a mask of which of
// its 512-byte sectors hold data (a cached block may hold only some: the
// others are wherever they were before), and a tag, the caller's
// name for what makes the record redundant (the engine's chunk seq: once
// chunk k is written to the cache, records tagged <= k may go). Tags must
// not decrease from one Append to the next.
//
// Region layout (shared memory of one host, never a file: the two words
// that are stored atomically, head and each slot's seq, are native 64-bit
// words; every other field is little-endian through util/coding.h):
//
//   [0, 4096)           header: magic u64, version u32, reserved u32,
//                       nonce u64 (the cache's identity), nr_slots u64,
//                       head u64 (seq of the oldest live record),
//                       crc u32 over bytes [0, 32)
//   [4096, data_off)    nr_slots slot headers of 64 bytes:
//                       seq u64, kind u32, crc u32, offset u64, length u64,
//                       tag u64, mask u32, zeros
//   [data_off, end)     nr_slots data blocks of 4096 bytes (data_off is
//                       4096-aligned)
//
// Record seq s (from 1) lives in slot s % nr_slots. The records from head
// up to the first slot that is not valid are the live ones; a slot is
// valid for seq s when its seq field is s and its crc (over s, kind,
// offset, length, tag, mask, the log's nonce, then the data) matches.
//
// Crash rules. The process may die between any two stores:
//   - Append writes the data, then the other header fields, then the crc,
//     and the seq field last (a release store). Until that store the slot
//     still holds an older seq (or 0), which the scan does not accept, so
//     a record is either whole or absent; a block torn inside, or a slot
//     written over in any other way, fails the crc.
//   - Append never writes over a live record (the caller keeps
//     LiveCount() < capacity()): slot s % n then holds seq s - n < head.
//   - head moves forward in one aligned 64-bit store (Trim, Reset): every
//     record is either still live or gone, never half trimmed.
//   - Format stores the magic last: a region without it is not a log.
// Not thread-safe: one writer (the engine calls it with its lock held).
#ifndef WBFS_LOG_ACK_LOG_H_
#define WBFS_LOG_ACK_LOG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "wbfs/status.h"

namespace wbfs::log {

struct AckRecord {
  enum Kind : uint32_t { kWrite = 1, kDiscard = 2 };
  Kind kind = kWrite;
  uint64_t seq = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t tag = 0;
  uint32_t mask = 0;          // kWrite: bit i set: sector i (512 bytes) of data holds data
  std::vector<uint8_t> data;  // kWrite: the kAckBlockSize bytes at offset
};

constexpr size_t kAckBlockSize = 4096;

class AckLog {
 public:
  static constexpr uint64_t kMagic = 0x314b434153464257ull;  // "WBFSACK1"
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kHeaderBytes = 4096;
  static constexpr size_t kSlotHeaderBytes = 64;

  // Bytes of a region of `nr_slots` slots, and the slots a region holds.
  static size_t BytesFor(uint64_t nr_slots);
  static uint64_t SlotsFor(size_t bytes);

  // `base` (4096-aligned) must stay mapped for the AckLog's life; nothing
  // is read or written before Attach.
  AckLog(void* base, size_t size) : base_(static_cast<uint8_t*>(base)), size_(size) {}
  AckLog(const AckLog&) = delete;
  AckLog& operator=(const AckLog&) = delete;

  // Reads the header. A region without the magic (all zeros at first use)
  // is no log yet: OK with formatted() false. A bad header is Corruption.
  Status Attach();
  bool formatted() const { return formatted_; }
  uint64_t nonce() const { return nonce_; }
  uint64_t capacity() const { return nr_slots_; }

  // Makes the region an empty log of SlotsFor(size) slots for the cache
  // `nonce` (InvalidArgument when not even one slot fits).
  Status Format(uint64_t nonce);
  // The live records, oldest first; the next Append follows the last.
  // REQUIRES: formatted().
  void Scan(std::vector<AckRecord>* out);
  // Empties the log (one store of head), then clears every slot's seq so
  // that nothing written before can be taken for a later record.
  // REQUIRES: Scan was called (it found where the log ends).
  void Reset();

  uint64_t LiveCount() const { return tail_ - head_; }
  bool Full() const { return LiveCount() >= nr_slots_; }
  // The tag of the oldest live record. REQUIRES: LiveCount() > 0.
  uint64_t OldestTag() const;

  // Test hook: called before each step of an Append (0..7: a sector of the
  // data, 8: the header fields, 9: the crc, 10: the seq); false stops the
  // Append there, as a death would.
  using StepHook = std::function<bool(int step)>;
  static constexpr int kAppendSteps = 11;

  // Adds a record and returns its seq (0: stopped by `hook`). `data` is
  // kAckBlockSize bytes for kWrite, nullptr for kDiscard.
  // REQUIRES: formatted(), !Full(), tag >= the previous record's.
  uint64_t Append(AckRecord::Kind kind, uint64_t offset, uint64_t length, uint32_t mask,
                  uint64_t tag, const uint8_t* data, const StepHook* hook = nullptr);
  // Drops the records tagged <= `tag` (from the oldest on).
  void Trim(uint64_t tag);

 private:
  uint8_t* SlotHeader(uint64_t seq) const {
    return base_ + kHeaderBytes + (seq % nr_slots_) * kSlotHeaderBytes;
  }
  uint8_t* SlotData(uint64_t seq) const {
    return base_ + data_off_ + (seq % nr_slots_) * kAckBlockSize;
  }
  uint32_t RecordCrc(uint64_t seq, uint32_t kind, uint64_t offset, uint64_t length, uint32_t mask,
                     uint64_t tag, const uint8_t* data) const;
  bool Valid(uint64_t seq) const;
  void StoreHead(uint64_t head);

  uint8_t* const base_;
  const size_t size_;
  bool formatted_ = false;
  uint64_t nonce_ = 0;
  uint64_t nr_slots_ = 0;
  size_t data_off_ = 0;
  uint64_t head_ = 1;  // oldest live seq
  uint64_t tail_ = 1;  // next seq
};

}  // namespace wbfs::log

#endif  // WBFS_LOG_ACK_LOG_H_
