// CacheMap (src/engine/cache_map.h) against a brute-force model: random
// placements, in-place rewrites, invalidations, range drops, writeback and
// segment reuse, with the index, the slot words and every dirty count
// checked after each step.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "engine/cache_map.h"

namespace wbfs {
namespace {

using format::kBlocksPerSegment;

struct Copy {
  uint32_t slot;
  uint8_t mask;
  bool dirty;
};

// The model: image block -> its newest copy; everything else follows.
struct Model {
  std::map<uint64_t, Copy> newest;
  void Place(uint32_t slot, uint64_t block, uint8_t mask, bool dirty) { newest[block] = {slot, mask, dirty}; }
  void DropSlot(uint32_t slot) {
    for (auto it = newest.begin(); it != newest.end(); ++it) {
      if (it->second.slot == slot) {
        newest.erase(it);
        return;
      }
    }
  }
};

void CheckAgainst(const CacheMap& m, const Model& model, uint64_t nr_blocks, uint64_t nr_segments) {
  uint64_t dirty = 0;
  std::vector<uint32_t> per_seg(nr_segments, 0);
  for (uint64_t b = 0; b < nr_blocks; b++) {
    auto it = model.newest.find(b);
    if (it == model.newest.end()) {
      REQUIRE(m.Find(b) == CacheMap::kNone);
      continue;
    }
    const Copy& c = it->second;
    REQUIRE(m.Find(b) == c.slot);
    const uint64_t w = m.word(c.slot);
    REQUIRE(SlotWord::Valid(w));
    REQUIRE(SlotWord::Block(w) == b);
    REQUIRE(m.Mask(c.slot) == c.mask);
    REQUIRE(SlotWord::Dirty(w) == c.dirty);
    if (c.dirty) {
      dirty++;
      per_seg[c.slot / kBlocksPerSegment]++;
    }
  }
  REQUIRE(m.nr_dirty() == dirty);
  REQUIRE(m.nr_cached() == model.newest.size());
  for (uint32_t r = 0; r < nr_segments; r++) REQUIRE(m.book(r).nr_dirty == per_seg[r]);
  // No slot outside the model claims to be valid.
  std::set<uint32_t> valid;
  for (const auto& [b, c] : model.newest) valid.insert(c.slot);
  for (uint32_t s = 0; s < m.nr_slots(); s++) REQUIRE(SlotWord::Valid(m.word(s)) == (valid.count(s) == 1));
}

TEST_CASE("cache map: every step keeps the index, the slot words and the dirty counts in step") {
  constexpr uint64_t kSegs = 4, kImageBlocks = 300;
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; round++) {
    CacheMap m(kSegs, true);
    Model model;
    uint32_t ring = 0, pos = 0;  // where the "log" appends
    std::set<uint32_t> open;     // slots of the open chunk (rewritable in place)
    for (int step = 0; step < 3000; step++) {
      const uint64_t block = rng() % kImageBlocks;
      const int op = static_cast<int>(rng() % 10);
      if (op < 5) {  // a new copy at the log's next slot
        if (pos == kBlocksPerSegment) {
          ring = (ring + 1) % kSegs;
          pos = 0;
          open.clear();
          m.Evict(ring);
          for (uint32_t s = ring * kBlocksPerSegment; s < (ring + 1) * kBlocksPerSegment; s++) model.DropSlot(s);
          REQUIRE(m.book(ring).nr_dirty == 0);
        }
        const uint32_t slot = ring * kBlocksPerSegment + pos++;
        const uint8_t mask = static_cast<uint8_t>(rng() | 1);
        const bool dirty = rng() % 3 != 0;
        m.Place(slot, block, mask, dirty);
        model.Place(slot, block, mask, dirty);
        open.insert(slot);
        if (rng() % 4 == 0) open.clear();  // the chunk is cut
      } else if (op == 5) {  // a rewrite in the open chunk
        const uint32_t slot = m.Find(block);
        if (slot == CacheMap::kNone || open.count(slot) == 0) continue;
        const uint8_t mask = static_cast<uint8_t>(m.Mask(slot) | (rng() & 0xff));
        m.Rewrite(slot, block, mask);
        model.Place(slot, block, mask, true);
      } else if (op == 6) {
        const uint32_t slot = m.Find(block);
        if (slot == CacheMap::kNone) continue;
        m.Invalidate(slot);
        model.newest.erase(block);
      } else if (op == 7) {  // a discard: small ranges and, now and then, the whole image
        const uint64_t count = rng() % 8 == 0 ? kImageBlocks * 4 : rng() % 20;
        const std::vector<uint32_t> got = m.SlotsInRange(block, count);
        std::set<uint32_t> want;
        for (const auto& [b, c] : model.newest) {
          if (b >= block && b - block < count) want.insert(c.slot);
        }
        REQUIRE(std::set<uint32_t>(got.begin(), got.end()) == want);
        REQUIRE(got.size() == want.size());
        m.InvalidateRange(block, count);
        for (uint64_t b = block; b < block + count; b++) model.newest.erase(b);
      } else {  // writeback applied some slot's version (maybe superseded)
        const uint32_t slot = static_cast<uint32_t>(rng() % m.nr_slots());
        m.Applied(slot);
        REQUIRE_FALSE(SlotWord::Logged(m.word(slot)));
        for (auto& [b, c] : model.newest) {
          if (c.slot == slot) c.dirty = false;
        }
      }
      CheckAgainst(m, model, kImageBlocks, kSegs);
    }
  }
}

TEST_CASE("cache map: a superseded version stays a logged change until writeback applies it") {
  CacheMap m(4, false);
  m.Place(1, 50, format::kFullMask, true);
  m.Place(2, 50, format::kFullMask, true);  // a newer copy
  CHECK(m.Find(50) == 2);
  CHECK_FALSE(SlotWord::Valid(m.word(1)));
  CHECK(SlotWord::Logged(m.word(1)));  // the journaled unit still applies it, in log order
  CHECK(m.nr_dirty() == 1);
  m.Applied(1);  // the old version reached the backing: the newer one stays dirty
  CHECK(m.nr_dirty() == 1);
  CHECK(SlotWord::Dirty(m.word(2)));
  CHECK(m.crc(2) == 0);  // no block checksums on this cache
}

}  // namespace
}  // namespace wbfs
