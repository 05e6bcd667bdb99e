// Writeback units, as pure functions: what a unit takes from the log, its
// net effect on the backing, and the journal::Unit that carries it. The
// engine owns the state (segments, slot words, locks, I/O); these functions
// see only what they are given, so they are tested on their own
// (tests/unit/writeback_unit_test.cc).
//
// A unit is a run of whole segments of the log (the last one possibly the
// segment being filled, up to its cut chunks). Applied to the backing it
// leaves the image as it was when the unit's newest chunk was cut.
#ifndef WBFS_ENGINE_WRITEBACK_UNIT_H_
#define WBFS_ENGINE_WRITEBACK_UNIT_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "journal/journal.h"
#include "util/aligned_buffer.h"
#include "wbfs/format.h"

namespace wbfs::wb {

// A discard logged at block `pos` of its segment and not yet punched.
struct PendingDiscard {
  uint64_t start;
  uint64_t count;
  uint32_t pos;
};

// What a unit needs to know of one segment of the log.
struct SegmentView {
  uint64_t id = 0;
  uint32_t ring = 0;       // its ring slot: cache slots ring * 128 + pos
  uint32_t applied = 0;    // blocks [0, applied) are on the backing
  uint32_t fill = 0;       // blocks used by cut chunks
  bool sealed = false;
  uint64_t last_chunk_seq = 0;
  uint64_t last_ms = 0;
  const std::vector<PendingDiscard>* discards = nullptr;
};

// One cached block version the unit takes.
struct Item {
  uint64_t block;
  uint32_t slot;
  uint8_t mask;
  bool dropped;    // a later discard in the unit covers it, or accept_loss left it out
  uint64_t order;  // log order inside the unit: segment index << 8 | position
  size_t data;     // offset into the unit's read buffer
  uint32_t crc;    // what the block read from the cache must match (if checked)
};

// Cache blocks [from, to) of segment `id` (ring slot `ring`), read into the
// unit's buffer at `data`.
struct Range {
  uint32_t ring;
  uint64_t id;
  uint32_t from, to;
  size_t data;
};

struct Punch {
  uint64_t start, count, order;
};

struct Plan {
  std::vector<Item> taken;      // every version the unit applies, in log order
  std::vector<Item> net;        // per block its last version, by block; `dropped` set
  std::vector<Range> ranges;    // what to read from the cache (one per segment with items)
  std::vector<Punch> punches;   // discards, in log order
  std::vector<uint32_t> ends;   // per segment: its `fill` when taken (applied up to it)
  size_t total = 0;             // bytes of the read buffer
  format::FlushPoint point;     // the image the backing shows afterwards
};

// Builds the unit over `segs` (consecutive, oldest first) from the slot
// words and per-slot crcs (empty: none). `all_versions` (with a journal):
// every logged version, so that the unit is exactly a prefix of the log;
// otherwise only the valid dirty ones.
Plan BuildPlan(const std::vector<SegmentView>& segs, const std::vector<uint64_t>& slots,
               const std::vector<uint32_t>& crcs, uint64_t cache_nonce, bool all_versions);

// Where a stretch of a unit's data (the runs' bytes back to back) lies in
// the cache: bytes [at, at + len) of the data are bytes [from, from + len)
// of cache slot `slot`'s block.
struct Piece {
  uint64_t at;
  uint32_t slot;
  uint32_t from;
  uint32_t len;
};

// The net items not dropped whose crc does not match `crc_of(item)` (the
// checksum of their bytes as read); `leave_out`: they are marked dropped.
template <typename CrcOf>
std::vector<Item> CheckData(std::vector<Item*>& items, CrcOf crc_of, bool leave_out) {
  std::vector<Item> bad;
  for (Item* it : items) {
    if (it->dropped || crc_of(*it) == it->crc) continue;
    bad.push_back(*it);
    if (leave_out) it->dropped = true;
  }
  return bad;
}

// The journal::Unit for the plan: its punches, then the net items not
// dropped as runs sorted by address (adjacent sectors merged, runs of at
// most 1 MiB). Its data is not copied: `pieces` says where each stretch
// of it lies in the cache (unit.data is left for the caller to set).
journal::Unit Pack(const Plan& plan, std::vector<Piece>* pieces);

}  // namespace wbfs::wb

#endif  // WBFS_ENGINE_WRITEBACK_UNIT_H_
