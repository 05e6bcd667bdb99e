// ZeroMap: the zero overlay. Discards are logged changes like writes: from
// the moment one is logged until the writeback unit that covers it punches
// the backing, its range reads as zeros (where no newer write is cached).
// The map holds the union of those pending ranges and how many discards
// make it up; the engine keeps each discard itself in the log segment that
// holds it (it is written back with that segment).
//
// Not thread-safe: the engine's lock guards it.
#ifndef WBFS_ENGINE_ZERO_MAP_H_
#define WBFS_ENGINE_ZERO_MAP_H_

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace wbfs {

class ZeroMap {
 public:
  // A discard of blocks [start, start + count) was logged.
  void AddPending(uint64_t start, uint64_t count) {
    gen_++;
    pending_++;
    Cover(start, start + count);
  }
  // The discard of [start, start + count) reached the backing. `still`:
  // the discards still pending (other ones over the same blocks included),
  // as [start, end) ranges, from which the union is rebuilt over the range.
  void Applied(uint64_t start, uint64_t count, const std::vector<std::pair<uint64_t, uint64_t>>& still);
  // Does a pending discard cover `block`?
  bool Covers(uint64_t block) const {
    if (ranges_.empty()) return false;
    auto it = ranges_.upper_bound(block);
    if (it == ranges_.begin()) return false;
    --it;
    return block < it->second;
  }
  uint64_t pending() const { return pending_; }
  // Bumped whenever a range starts reading as zeros: a read of the backing
  // taken before (a partial write's pre-read) may be stale.
  uint64_t generation() const { return gen_; }

 private:
  // Merges [start, end) into the disjoint union.
  void Cover(uint64_t start, uint64_t end);
  // Cuts [start, end) out of it.
  void Uncover(uint64_t start, uint64_t end);

  std::map<uint64_t, uint64_t> ranges_;  // start -> end block, disjoint, not touching
  uint64_t pending_ = 0;
  uint64_t gen_ = 0;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_ZERO_MAP_H_
