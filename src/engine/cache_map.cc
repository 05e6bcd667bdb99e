#include "engine/cache_map.h"

#include <algorithm>

namespace wbfs {

CacheMap::CacheMap(uint64_t nr_segments, bool block_crcs)
    : block_crcs_(block_crcs),
      books_(nr_segments),
      slots_(nr_segments * format::kBlocksPerSegment, 0),
      crcs_(block_crcs ? slots_.size() : 0, 0),
      index_(static_cast<uint32_t>(slots_.size()), &slots_) {}

void CacheMap::Place(uint32_t slot, uint64_t block, uint8_t mask, bool dirty) {
  const uint32_t old = index_.Find(block);
  if (old != kNone) Invalidate(old);
  slots_[slot] = SlotWord::Make(block, mask, dirty);
  index_.Insert(block, slot);
  if (dirty) {
    BookOf(slot).nr_dirty++;
    nr_dirty_++;
  }
}

void CacheMap::Rewrite(uint32_t slot, uint64_t block, uint8_t mask) {
  if (!SlotWord::Dirty(slots_[slot])) {
    BookOf(slot).nr_dirty++;
    nr_dirty_++;
  }
  slots_[slot] = SlotWord::Make(block, mask, true);
}

void CacheMap::Invalidate(uint32_t slot) {
  const uint64_t w = slots_[slot];
  index_.Erase(SlotWord::Block(w));
  if (SlotWord::Dirty(w)) {
    BookOf(slot).nr_dirty--;
    nr_dirty_--;
  }
  // kLogged stays: a superseded version is still a change the journaled
  // writeback applies in log order.
  slots_[slot] = w & ~(SlotWord::kValid | SlotWord::kDirty);
}

// A range of a few blocks is looked up block by block; a huge one (a 4 GiB
// discard) by one pass over the slot table, whichever is shorter.
std::vector<uint32_t> CacheMap::SlotsInRange(uint64_t start, uint64_t count) const {
  std::vector<uint32_t> out;
  if (count < index_.size() * 2) {
    for (uint64_t b = start; b < start + count; b++) {
      const uint32_t slot = index_.Find(b);
      if (slot != kNone) out.push_back(slot);
    }
    return out;
  }
  for (uint32_t slot = 0; slot < nr_slots(); slot++) {
    const uint64_t w = slots_[slot];
    if (SlotWord::Valid(w) && SlotWord::Block(w) - start < count) out.push_back(slot);
  }
  return out;
}

void CacheMap::InvalidateRange(uint64_t start, uint64_t count) {
  for (uint32_t slot : SlotsInRange(start, count)) Invalidate(slot);
}

void CacheMap::Applied(uint32_t slot) {
  const uint64_t w = slots_[slot];
  if (SlotWord::Valid(w) && SlotWord::Dirty(w)) {
    BookOf(slot).nr_dirty--;
    nr_dirty_--;
  }
  slots_[slot] = w & ~(SlotWord::kDirty | SlotWord::kLogged);
}

void CacheMap::Evict(uint32_t ring) {
  const uint32_t first = ring * format::kBlocksPerSegment;
  for (uint32_t slot = first; slot < first + format::kBlocksPerSegment; slot++) {
    if (SlotWord::Valid(slots_[slot])) Invalidate(slot);
    slots_[slot] = 0;
  }
  books_[ring] = SegmentBook();
}

void CacheMap::SetCrcs(uint32_t first_slot, const uint32_t* crcs, uint32_t n) {
  if (block_crcs_) std::copy(crcs, crcs + n, crcs_.begin() + first_slot);
}

}  // namespace wbfs
