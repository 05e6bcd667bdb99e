// CacheMap: what the cache holds, block by block. For every cache block
// slot its SlotWord (image block, sector mask, valid, dirty, logged) and,
// on a version 3 cache, its checksum once flushed; the index from image
// block to the slot holding its newest copy; and per ring segment the
// bookkeeping the log itself does not keep (SegmentBook: dirty count,
// pins, how much of it is on the backing, pending discards).
//
// The one place that keeps these in step: a block placed in a new slot
// leaves its older copy invalid, the dirty counts (total and per segment)
// follow every change of a dirty flag, and a segment whose slot is reused
// forgets its old occupant. Which slot a new block goes to is the log's
// business (LogWriter::Append); the map only records it.
//
// Not thread-safe: the engine holds it GUARDED_BY its mutex. Readers of a
// cache block outside the lock pin its segment (SegmentBook::pins), and a
// segment is not reused while pinned (the engine's rule, not the map's).
#ifndef WBFS_ENGINE_CACHE_MAP_H_
#define WBFS_ENGINE_CACHE_MAP_H_

#include <cstdint>
#include <vector>

#include "engine/block_index.h"
#include "engine/writeback_unit.h"
#include "wbfs/format.h"

namespace wbfs {

// The cache's bookkeeping of one ring segment; what the log knows of it
// (occupant, fill, buffer, chunks) is the LogWriter's log::SegmentLog.
struct SegmentBook {
  uint32_t nr_dirty = 0;      // valid dirty blocks
  uint32_t pins = 0;          // readers and writeback inside this segment
  uint32_t applied = 0;       // blocks [0, applied) are on the backing
  uint64_t unapplied_ms = 0;  // cut time of its oldest change not on the backing; 0: none
  std::vector<wb::PendingDiscard> discards;  // after `applied`, oldest first
};

class CacheMap {
 public:
  static constexpr uint32_t kNone = BlockIndex::kNone;

  // `block_crcs`: keep a checksum per slot (a version 3 cache).
  CacheMap(uint64_t nr_segments, bool block_crcs);
  CacheMap(const CacheMap&) = delete;
  CacheMap& operator=(const CacheMap&) = delete;

  // The slot holding the newest copy of `block`, or kNone.
  uint32_t Find(uint64_t block) const { return index_.Find(block); }
  uint64_t word(uint32_t slot) const { return slots_[slot]; }
  uint8_t Mask(uint32_t slot) const { return SlotWord::Mask(slots_[slot]); }
  // The checksum of the flushed copy in `slot`; 0 without block crcs.
  uint32_t crc(uint32_t slot) const { return block_crcs_ ? crcs_[slot] : 0; }
  bool block_crcs() const { return block_crcs_; }

  // A new copy of `block` in `slot` (a slot the log just handed out, or
  // one replay found): any older copy becomes invalid.
  void Place(uint32_t slot, uint64_t block, uint8_t mask, bool dirty);
  // `slot` (still in the open chunk) is overwritten in place: dirty now.
  void Rewrite(uint32_t slot, uint64_t block, uint8_t mask);
  // The copy in `slot` is no longer the block's (dirty or not).
  void Invalidate(uint32_t slot);
  // The valid slots caching blocks [start, start + count).
  std::vector<uint32_t> SlotsInRange(uint64_t start, uint64_t count) const;
  // Drops every cached copy of blocks [start, start + count).
  void InvalidateRange(uint64_t start, uint64_t count);
  // Writeback put the version in `slot` on the backing: not dirty, and
  // (the journal's rule) no longer a logged change. A slot invalidated
  // meanwhile keeps its newer copy dirty elsewhere.
  void Applied(uint32_t slot);
  // Ring segment `ring` gets a new occupant: what the old one still
  // caches is dropped and its book starts afresh.
  void Evict(uint32_t ring);

  void SetCrc(uint32_t slot, uint32_t crc) {
    if (block_crcs_) crcs_[slot] = crc;
  }
  void SetCrcs(uint32_t first_slot, const uint32_t* crcs, uint32_t n);

  SegmentBook& book(uint32_t ring) { return books_[ring]; }
  const SegmentBook& book(uint32_t ring) const { return books_[ring]; }
  SegmentBook& BookOf(uint32_t slot) { return books_[slot / format::kBlocksPerSegment]; }

  uint64_t nr_dirty() const { return nr_dirty_; }
  uint64_t nr_cached() const { return index_.size(); }
  uint32_t nr_slots() const { return static_cast<uint32_t>(slots_.size()); }
  // For writeback's unit building (wb::BuildPlan).
  const std::vector<uint64_t>& slots() const { return slots_; }
  const std::vector<uint32_t>& crcs() const { return crcs_; }

 private:
  const bool block_crcs_;
  std::vector<SegmentBook> books_;
  std::vector<uint64_t> slots_;  // SlotWord per cache block
  std::vector<uint32_t> crcs_;   // per cache block (block_crcs_), else empty
  BlockIndex index_;
  uint64_t nr_dirty_ = 0;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_CACHE_MAP_H_
