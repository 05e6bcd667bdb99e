// ReadStager: read misses waiting to be staged into the cache
// (read_cache_threshold), dm-writeboost's read-cache cells.
//
// A read reserves a cell for each whole 4 KiB block it misses, before it
// reads the backing; after the read the cell is filled. Cells are injected
// into the log later, as clean blocks, unless they were cancelled first:
//   - a write (or discard) of the block cancels its cell, so a write that
//     races a staging read always wins;
//   - a sequential run longer than the threshold cancels its cells, both
//     as the run is read (one stream) and in a pass over the pending cells
//     sorted by address before injection (interleaved streams).
// Not thread-safe: the engine calls it with its mutex held.
#ifndef WBFS_ENGINE_READ_STAGER_H_
#define WBFS_ENGINE_READ_STAGER_H_

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "wbfs/format.h"

namespace wbfs {

class ReadStager {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxCells = 2048;  // 8 MiB, as dm-writeboost

  bool empty() const { return cells_.empty(); }
  size_t size() const { return cells_.size(); }

  // A read touches blocks [a, b). Returns false while the read belongs to
  // a run longer than `threshold` (nothing of it is to be staged).
  bool Track(uint64_t a, uint64_t b, int64_t threshold) {
    if (a == next_ && run_len_ > 0) {
      run_len_ += b - a;
    } else {
      run_++;
      run_len_ = b - a;
    }
    next_ = b;
    if (run_len_ > static_cast<uint64_t>(threshold)) {
      CancelRun(run_);
      return false;
    }
    return true;
  }

  // Reserves a cell for `block` (a whole-block miss); false if it has one
  // already or the stager is full.
  bool Reserve(uint64_t block) {
    if (cells_.size() >= kMaxCells || cells_.count(block)) return false;
    Cell& c = cells_[block];
    c.run = run_;
    c.when = Clock::now();
    return true;
  }

  // The read of `block` completed with `data` (4 KiB); ignored if the
  // cell was cancelled meanwhile.
  void Fill(uint64_t block, const uint8_t* data) {
    auto it = cells_.find(block);
    if (it == cells_.end()) return;
    it->second.data.reset(new uint8_t[format::kBlockSize]);
    std::memcpy(it->second.data.get(), data, format::kBlockSize);
  }

  void Cancel(uint64_t block) { cells_.erase(block); }
  void CancelRange(uint64_t start, uint64_t count) {
    for (auto it = cells_.lower_bound(start); it != cells_.end() && it->first - start < count;) {
      it = cells_.erase(it);
    }
  }
  void Clear() { cells_.clear(); }

  // Blocks ready to inject: filled cells at least `min_age` old (all filled
  // ones when the stager is half full), after cancelling every run of more
  // than `threshold` consecutive addresses among all cells. The age lets
  // interleaved sequential streams show up as runs before anything of
  // them is injected.
  std::vector<uint64_t> Injectable(int64_t threshold, Clock::duration min_age) {
    const uint64_t limit = static_cast<uint64_t>(threshold);
    for (auto it = cells_.begin(); it != cells_.end();) {
      auto end = it;
      uint64_t n = 0;
      uint64_t prev = it->first;
      while (end != cells_.end() && end->first == prev + (n == 0 ? 0 : 1)) {
        prev = end->first;
        ++end;
        n++;
      }
      if (n > limit) {
        it = cells_.erase(it, end);
      } else {
        it = end;
      }
    }
    std::vector<uint64_t> out;
    const Clock::time_point now = Clock::now();
    const bool pressed = cells_.size() >= kMaxCells / 2;
    for (const auto& [block, c] : cells_) {
      if (c.data && (pressed || now - c.when >= min_age)) out.push_back(block);
    }
    return out;
  }

  // The data of a filled cell, or nullptr (cancelled or not filled).
  const uint8_t* Data(uint64_t block) const {
    auto it = cells_.find(block);
    return it == cells_.end() ? nullptr : it->second.data.get();
  }
  void Remove(uint64_t block) { cells_.erase(block); }

 private:
  struct Cell {
    uint64_t run = 0;
    Clock::time_point when;
    std::unique_ptr<uint8_t[]> data;  // null until the read completes
  };
  void CancelRun(uint64_t run) {
    for (auto it = cells_.begin(); it != cells_.end();) {
      if (it->second.run == run) {
        it = cells_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::map<uint64_t, Cell> cells_;
  uint64_t run_ = 0;
  uint64_t run_len_ = 0;
  uint64_t next_ = UINT64_MAX;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_READ_STAGER_H_
