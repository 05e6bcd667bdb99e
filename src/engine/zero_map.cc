#include "engine/zero_map.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace wbfs {

void ZeroMap::Applied(uint64_t start, uint64_t count,
                      const std::vector<std::pair<uint64_t, uint64_t>>& still) {
  pending_--;
  const uint64_t end = start + count;
  Uncover(start, end);
  for (auto [a, b] : still) {
    a = std::max(a, start);
    b = std::min(b, end);
    if (a < b) Cover(a, b);
  }
}

void ZeroMap::Cover(uint64_t start, uint64_t end) {
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second >= start) --it;
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_[start] = end;
}

void ZeroMap::Uncover(uint64_t start, uint64_t end) {
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) --it;
  std::vector<std::pair<uint64_t, uint64_t>> keep;
  while (it != ranges_.end() && it->first < end) {
    if (it->first < start) keep.push_back({it->first, start});
    if (it->second > end) keep.push_back({end, it->second});
    it = ranges_.erase(it);
  }
  for (const auto& [a, b] : keep) ranges_[a] = b;
}

}  // namespace wbfs
