// The replay fold: what the log, read by ScanLog, leaves in the cache.
// Chunks apply in log order; a chunk's extents drop the cached copies of
// their ranges (a discard is also a change the backing has not seen), and
// each data entry becomes the newest copy of its block. A chunk at or
// below `applied_seq` (the journal's flush point: the backing holds it)
// leaves nothing dirty and no pending discard.
//
// Two ways in, one set of rules:
//  - ReplayCursor: the fold as a sequence of steps, for a caller that keeps
//    its own index (the engine: no second map of every block at mount);
//  - Replay(): the fold's result as a value (check, the fuzzer, tests).
#ifndef WBFS_LOG_REPLAY_H_
#define WBFS_LOG_REPLAY_H_

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "log/log_reader.h"
#include "wbfs/format.h"

namespace wbfs::log {

struct ReplayStep {
  enum Kind : uint8_t {
    kChunkBegin,  // chunk, applied
    kDrop,        // extent, pending_discard: the cache holds nothing for the range any more
    kBlock,       // entry, index, dirty: the newest copy of entry.block
    kChunkEnd,    // chunk, applied, changes
  };
  Kind kind = kChunkBegin;
  const ChunkInfo* chunk = nullptr;  // every step: the chunk it belongs to
  size_t chunk_index = 0;            // into LogScan::chunks
  bool applied = false;              // the backing holds this chunk already
  format::Extent extent;             // kDrop (never a kExtentPunched marker: those are skipped)
  bool pending_discard = false;      // kDrop: a discard the backing has not seen yet
  format::ChunkEntry entry;          // kBlock
  uint32_t index = 0;                // kBlock: entry index in the chunk; its data is at block
                                     // chunk->offset + 1 + index of the segment
  bool dirty = false;                // kBlock: not on the backing yet
  bool changes = false;              // kChunkEnd: the chunk left a dirty block or a pending discard
};

class ReplayCursor {
 public:
  ReplayCursor(const LogScan& scan, uint64_t applied_seq) : scan_(scan), applied_seq_(applied_seq) {}
  // The next step, in log order; false after the last chunk's kChunkEnd.
  bool Next(ReplayStep* step);

 private:
  const LogScan& scan_;
  const uint64_t applied_seq_;
  size_t chunk_ = 0;
  uint32_t item_ = 0;  // next extent, then next entry, of chunk_
  bool open_ = false;  // chunk_'s kChunkBegin was returned
  bool changes_ = false;
};

// Where the newest copy of a block is.
struct LiveBlock {
  size_t chunk = 0;     // into LogScan::chunks
  uint32_t index = 0;   // entry index in that chunk
  bool dirty = false;
};

struct PendingDiscard {
  size_t chunk = 0;  // the chunk that carries it
  uint64_t start = 0;
  uint64_t count = 0;
};

struct ReplayState {
  std::unordered_map<uint64_t, LiveBlock> blocks;  // backing block -> its newest copy
  std::vector<PendingDiscard> discards;            // in log order
  uint64_t nr_dirty = 0;                           // blocks with dirty copies
  uint64_t nr_cached() const { return blocks.size(); }
};

ReplayState Replay(const LogScan& scan, uint64_t applied_seq = 0);

}  // namespace wbfs::log

#endif  // WBFS_LOG_REPLAY_H_
