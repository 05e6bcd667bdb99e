// BlockIndex: backing block -> cache slot, for every block the cache holds.
//
// Two flat arrays, about 16 bytes per cache block in all (dm-writeboost
// needs ~48): `SlotTable` is one packed 64-bit word per cache block slot
// (backing block, sector mask, valid, dirty), and the hash is open
// addressing with linear probing over 32-bit slot numbers; a bucket's key
// is read from the slot table. Not thread-safe: the engine's mutex guards it.
#ifndef WBFS_ENGINE_BLOCK_INDEX_H_
#define WBFS_ENGINE_BLOCK_INDEX_H_

#include <cassert>
#include <cstdint>
#include <vector>

namespace wbfs {

// One cache block slot, packed: bits 0-47 backing block, 48-55 sector mask,
// bit 56 valid (the index points here), bit 57 dirty, bit 58 logged (a
// write logged here is not on the backing yet; it stays set when a newer
// write supersedes the slot, because journaled writeback applies the log
// in order, superseded versions included).
struct SlotWord {
  static constexpr uint64_t kBlockMask = (uint64_t{1} << 48) - 1;
  static constexpr uint64_t kValid = uint64_t{1} << 56;
  static constexpr uint64_t kDirty = uint64_t{1} << 57;
  static constexpr uint64_t kLogged = uint64_t{1} << 58;

  static uint64_t Make(uint64_t block, uint8_t mask, bool dirty) {
    return (block & kBlockMask) | (uint64_t{mask} << 48) | kValid | (dirty ? kDirty | kLogged : 0);
  }
  static bool Logged(uint64_t w) { return (w & kLogged) != 0; }
  static uint64_t Block(uint64_t w) { return w & kBlockMask; }
  static uint8_t Mask(uint64_t w) { return static_cast<uint8_t>(w >> 48); }
  static bool Valid(uint64_t w) { return (w & kValid) != 0; }
  static bool Dirty(uint64_t w) { return (w & kDirty) != 0; }
  static uint64_t WithMask(uint64_t w, uint8_t mask) {
    return (w & ~(uint64_t{0xff} << 48)) | (uint64_t{mask} << 48);
  }
};

class BlockIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // `slots` must outlive the index; a key is looked up in slots[bucket].
  BlockIndex(uint32_t nr_slots, const std::vector<uint64_t>* slots) : slots_(slots) {
    uint64_t cap = 16;
    while (cap < uint64_t{nr_slots} * 2) cap <<= 1;
    buckets_.assign(cap, 0);
    mask_ = cap - 1;
  }

  // The slot holding `block`, or kNone.
  uint32_t Find(uint64_t block) const {
    for (uint64_t i = Hash(block);; i = (i + 1) & mask_) {
      uint32_t v = buckets_[i];
      if (v == 0) return kNone;
      if (SlotWord::Block((*slots_)[v - 1]) == block) return v - 1;
    }
  }

  // REQUIRES: `block` is not in the index; slots[slot] holds `block`.
  void Insert(uint64_t block, uint32_t slot) {
    uint64_t i = Hash(block);
    while (buckets_[i] != 0) i = (i + 1) & mask_;
    buckets_[i] = slot + 1;
    size_++;
  }

  // REQUIRES: slots[Find(block)] still holds `block`.
  void Erase(uint64_t block) {
    uint64_t i = Hash(block);
    for (;; i = (i + 1) & mask_) {
      uint32_t v = buckets_[i];
      assert(v != 0);
      if (SlotWord::Block((*slots_)[v - 1]) == block) break;
    }
    // Backward-shift deletion keeps every probe sequence unbroken.
    uint64_t hole = i;
    for (uint64_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      uint32_t v = buckets_[j];
      if (v == 0) break;
      uint64_t home = Hash(SlotWord::Block((*slots_)[v - 1]));
      // Move v into the hole unless its home lies cyclically in (hole, j].
      bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (!stays) {
        buckets_[hole] = v;
        hole = j;
      }
    }
    buckets_[hole] = 0;
    size_--;
  }

  uint64_t size() const { return size_; }

 private:
  uint64_t Hash(uint64_t block) const {
    uint64_t h = block * 0x9E3779B97F4A7C15ull;
    return (h ^ (h >> 29)) & mask_;
  }

  const std::vector<uint64_t>* slots_;
  std::vector<uint32_t> buckets_;
  uint64_t mask_ = 0;
  uint64_t size_ = 0;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_BLOCK_INDEX_H_
