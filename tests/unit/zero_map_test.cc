// ZeroMap against a brute-force model: a count per block of the discards
// pending over it.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "engine/zero_map.h"

namespace wbfs {
namespace {

struct Pending {
  uint64_t start, count;
};

TEST_CASE("the zero overlay is the union of the pending discards, also as they are applied") {
  constexpr uint64_t kBlocks = 200;
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; round++) {
    ZeroMap map;
    std::vector<Pending> pending;
    uint64_t gen = map.generation();
    for (int step = 0; step < 100; step++) {
      if (pending.empty() || rng() % 3 != 0) {
        const uint64_t start = rng() % kBlocks, count = 1 + rng() % 20;
        pending.push_back({start, count});
        map.AddPending(start, count);
        CHECK(map.generation() > gen);  // a pre-read taken before is stale
        gen = map.generation();
      } else {
        // Applied in any order (writeback takes them segment by segment).
        const size_t i = rng() % pending.size();
        const Pending p = pending[i];
        pending.erase(pending.begin() + static_cast<long>(i));
        std::vector<std::pair<uint64_t, uint64_t>> still;
        for (const Pending& q : pending) still.push_back({q.start, q.start + q.count});
        map.Applied(p.start, p.count, still);
        CHECK(map.generation() == gen);  // nothing new reads as zeros
      }
      REQUIRE(map.pending() == pending.size());
      for (uint64_t b = 0; b < kBlocks + 25; b++) {
        bool want = false;
        for (const Pending& q : pending) want = want || (b >= q.start && b < q.start + q.count);
        REQUIRE_MESSAGE(map.Covers(b) == want, "block " << b << " round " << round << " step " << step);
      }
    }
  }
}

}  // namespace
}  // namespace wbfs
