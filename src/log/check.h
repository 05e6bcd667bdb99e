// Offline inspection of a cache: what `wbfs check`, `wbfs format` and
// `wbfs dump` report. Built on the one log reader (log_reader.h); never
// writes.
#ifndef WBFS_LOG_CHECK_H_
#define WBFS_LOG_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "log/log_reader.h"
#include "wbfs/device.h"
#include "wbfs/status.h"

namespace wbfs::log {

struct CheckedSegment {
  uint64_t id = 0;
  uint64_t offset = 0;    // byte offset of its slot in the cache
  uint64_t bytes = 0;     // bytes of valid chunks written in it
  uint32_t chunks = 0;
  bool valid = true;      // every chunk's header and data check out
};

struct Problem {
  uint64_t offset = 0;    // byte offset in the cache
  std::string what;
  bool corrupt = false;   // false: a torn newest write (the normal end of a log after a crash)
  Damage kind = Damage::kBadSuperblock;
};

struct CheckReport {
  bool blank = false;         // zeroed superblock: the next mount formats
  bool consistent = true;
  CacheMeta meta;
  int valid_records = 0;
  std::vector<CheckedSegment> segments;
  std::vector<Problem> problems;
  uint64_t first_seq = 0, last_seq = 0;  // the valid log range (chunk seqs)
  uint64_t first_segment = 0, last_segment = 0;
  uint64_t nr_chunks = 0;
  uint64_t nr_dirty_cache_blocks = 0;
  uint64_t dirty_bytes = 0;  // the same in bytes
  uint64_t nr_cached_blocks = 0;
  // Discards in the log not yet applied to the backing: dirty state too
  // (the image reads zeros there, the backing may not).
  uint64_t nr_pending_discards = 0;
  WalkStop end = WalkStop::kNone;  // why the log ends
  std::string end_reason;          // the same, for a human
};

// Reads the whole log, every chunk's data included, and looks for synced
// chunks that cannot be read any more. A Status error means the cache
// could not be read at all (an I/O error), not that it is inconsistent.
Status CheckCache(Device& cache, CheckReport* report);

}  // namespace wbfs::log

#endif  // WBFS_LOG_CHECK_H_
