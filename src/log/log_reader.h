// The one reader of the wbfs on-disk log. Mount (replay), check, dump and
// offline writeback all read the cache through these two calls.
#ifndef WBFS_LOG_LOG_READER_H_
#define WBFS_LOG_LOG_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "wbfs/device.h"
#include "wbfs/format.h"
#include "wbfs/status.h"

namespace wbfs::log {

struct CacheMeta {
  bool blank = false;  // the first 4 KiB are zero: a cache to be formatted
  format::Superblock sb;
  format::Record record;  // the valid record with the highest seq
  int record_slot = -1;
};

// Reads the superblock and both records. A blank cache is not an error.
// Corruption when the superblock or both records do not decode.
Status ReadCacheMeta(Device& cache, CacheMeta* meta);

struct ChunkInfo {
  uint64_t seq = 0;
  uint64_t segment_id = 0;
  uint32_t offset = 0;  // block of the header inside the segment
  uint16_t nr_blocks = 0;
  uint16_t flags = 0;
  uint16_t nr_extents = 0;
  uint32_t header_crc = 0;
  uint32_t data_crc = 0;
  uint64_t durable_seq = 0;
  uint64_t epoch = 0;
  uint64_t time_ms = 0;  // when it was cut (0: unknown)
  size_t first_entry = 0;   // index into LogScan::entries
  size_t first_extent = 0;  // index into LogScan::extents
  bool data_checked = false;
};

struct LogScan {
  std::vector<ChunkInfo> chunks;  // the valid log, oldest first
  std::vector<format::ChunkEntry> entries;
  std::vector<format::Extent> extents;
  // Chunks up to this seq were synced before a later chunk was written;
  // replay trusts their data without reading it.
  uint64_t trusted_seq = 0;
  format::Position end{1, 0};  // where the next chunk goes
  uint64_t next_seq = 1;
  uint32_t last_crc = 0;
  // Why the log ends there, and at which cache byte offset (for check).
  std::string end_reason;
  uint64_t end_offset = 0;
  // Chunks whose headers continued the chain but that were dropped because
  // an earlier chunk's data failed its checksum (a torn write).
  uint64_t dropped_chunks = 0;
  // verify_all only: a chunk at or below trusted_seq failed its data
  // checksum: corruption of synced data, not a torn tail.
  bool corrupt = false;
  uint64_t corrupt_offset = 0;
};

struct ScanOptions {
  bool verify_all_data = false;  // check reads every chunk's data
  // Readers that fetch the first block of the segments ahead in parallel
  // (a full segment is one chunk, so that is where the next headers are;
  // one 4 KiB read at a time made resuming a full 8 GiB cache take 1.3 s).
  // 0: every header is read when the chain reaches it, in order (tests
  // that count or fail reads rely on that order).
  unsigned prefetch_threads = 0;
};

// Follows the chunk chain from the record's tail. Stops quietly at the
// first header that does not continue the chain, and at the first chunk
// after trusted_seq whose data does not match its checksum.
Status ScanLog(Device& cache, const CacheMeta& meta, const ScanOptions& opts, LogScan* out);

// A log whose chain ends although a later chunk of this cache records the
// chunk at the end as synced: data that was durable cannot be read any more
// (a damaged header or data in the middle of the log), not a torn tail.
// Replaying only the chain would silently roll the image back, so mount,
// offline writeback and check all look for it, through this one call.
struct SyncedLoss {
  bool found = false;
  uint64_t end_seq = 0;         // the first chunk seq the chain is missing
  uint64_t end_offset = 0;      // cache byte offset where the chain ends
  uint64_t witness_seq = 0;     // a later chunk that records end_seq as synced
  uint64_t witness_offset = 0;  // its cache byte offset
  // Readable chunks at or after end_seq that replay leaves out, and the
  // data blocks they carry (the damaged chunk itself may not be counted).
  uint64_t lost_chunks = 0;
  uint64_t lost_blocks = 0;
  // The highest chunk seq of this cache found in any slot: a log restarted
  // after accepting the loss continues above it, so that no old chunk is
  // ever read as a witness again.
  uint64_t max_seq = 0;
  // When the last chunk that survives was cut (0: unknown or none): the
  // flush point the image rolls back to.
  uint64_t survivor_ms = 0;
};

// Reads the first header of every segment slot outside the chain (in
// parallel with `threads` > 0) and walks the slots that can hold chunks
// newer than the chain's end. Never writes.
Status FindSyncedLoss(Device& cache, const CacheMeta& meta, const LogScan& scan, unsigned threads,
                      SyncedLoss* out);

// One sentence for a SyncedLoss that was found: what is lost, where.
std::string DescribeSyncedLoss(const SyncedLoss& loss);
// The flush point accepting it rolls the image back to: "chunk seq N (cut
// 2026-12-02 12:31:14)".
std::string RollbackPointText(const SyncedLoss& loss);

}  // namespace wbfs::log

#endif  // WBFS_LOG_LOG_READER_H_
