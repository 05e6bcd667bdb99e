#include <doctest/doctest.h>

#include <map>
#include <random>

#include "engine/block_index.h"

using namespace wbfs;

TEST_CASE("block index agrees with std::map under random insert/erase") {
  const uint32_t n = 2000;
  std::vector<uint64_t> slots(n, 0);
  BlockIndex idx(n, &slots);
  std::map<uint64_t, uint32_t> model;
  std::vector<uint32_t> free_slots;
  for (uint32_t i = 0; i < n; i++) free_slots.push_back(i);
  std::mt19937_64 rng(42);
  for (int step = 0; step < 200000; step++) {
    uint64_t block = rng() % 5000;  // many collisions in a small key space
    auto it = model.find(block);
    uint32_t found = idx.Find(block);
    if (it == model.end()) {
      REQUIRE(found == BlockIndex::kNone);
      if (free_slots.empty()) continue;
      uint32_t s = free_slots.back();
      free_slots.pop_back();
      slots[s] = SlotWord::Make(block, 0xff, true);
      idx.Insert(block, s);
      model[block] = s;
    } else {
      REQUIRE(found == it->second);
      if (rng() % 2) {
        idx.Erase(block);
        slots[it->second] = 0;
        free_slots.push_back(it->second);
        model.erase(it);
      }
    }
  }
  CHECK(idx.size() == model.size());
  for (auto& [b, s] : model) CHECK(idx.Find(b) == s);
}

TEST_CASE("slot word packing") {
  uint64_t w = SlotWord::Make((uint64_t{1} << 47) + 5, 0x0f, true);
  CHECK(SlotWord::Block(w) == (uint64_t{1} << 47) + 5);
  CHECK(SlotWord::Mask(w) == 0x0f);
  CHECK(SlotWord::Valid(w));
  CHECK(SlotWord::Dirty(w));
  w = SlotWord::WithMask(w, 0xf0);
  CHECK(SlotWord::Mask(w) == 0xf0);
  CHECK(SlotWord::Block(w) == (uint64_t{1} << 47) + 5);
}
