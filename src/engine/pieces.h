// Pieces: a byte range of the image cut at 4 KiB block boundaries, the one
// walk that reads, writes and discards share.
//
//   for (Pieces p(off, len); !p.done(); p.Next()) use(p.block(), p.lo(), p.hi(), p.at());
#ifndef WBFS_ENGINE_PIECES_H_
#define WBFS_ENGINE_PIECES_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "wbfs/format.h"

namespace wbfs {

class Pieces {
 public:
  Pieces(uint64_t off, uint64_t len) : off_(off), pos_(off), end_(off + len) {}
  bool done() const { return pos_ >= end_; }
  uint64_t block() const { return pos_ / format::kBlockSize; }
  // The piece is bytes [lo, hi) of its block...
  uint32_t lo() const { return static_cast<uint32_t>(pos_ % format::kBlockSize); }
  uint32_t hi() const {
    return static_cast<uint32_t>(std::min<uint64_t>(format::kBlockSize, lo() + (end_ - pos_)));
  }
  // ...and starts `at` bytes into the range.
  size_t at() const { return static_cast<size_t>(pos_ - off_); }
  bool whole() const { return lo() == 0 && hi() == format::kBlockSize; }
  void Next() { pos_ += hi() - lo(); }

 private:
  uint64_t off_, pos_, end_;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_PIECES_H_
