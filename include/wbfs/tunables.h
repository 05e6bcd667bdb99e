// The tunables of SPEC.md, in one table used by the config file, -o, the
// status output and (later) `wbfs message`.
#ifndef WBFS_TUNABLES_H_
#define WBFS_TUNABLES_H_

#include <array>
#include <cstdint>
#include <string>

#include "wbfs/status.h"

namespace wbfs {

struct Tunables {
  int64_t writeback_threshold = 50;
  int64_t nr_max_batched_writeback = 32;
  int64_t update_sb_record_interval = 0;
  int64_t sync_data_interval = 0;
  int64_t read_cache_threshold = 0;
  int64_t write_around_mode = 0;
  int64_t max_dirty_age = 0;
};

struct TunableDef {
  const char* key;
  int64_t min;
  int64_t max;
  int64_t def;
  bool online;  // may be changed on a mounted cache
  int64_t Tunables::*field;
  const char* help;
};

inline constexpr std::array<TunableDef, 7> kTunableDefs = {{
    {"writeback_threshold", 0, 100, 50, true, &Tunables::writeback_threshold,
     "background writeback runs while the backing device is busy less than this % of the time "
     "(and drains the segment being filled when the backing is idle); 0 = only when the log "
     "needs room or on drop_caches"},
    {"nr_max_batched_writeback", 1, 32, 32, true, &Tunables::nr_max_batched_writeback,
     "segments written back together, sorted by address"},
    {"update_sb_record_interval", 0, 3600, 0, true, &Tunables::update_sb_record_interval,
     "seconds between records of the last written-back segment; 0 = off"},
    {"sync_data_interval", 0, 3600, 0, true, &Tunables::sync_data_interval,
     "seconds between periodic flushes of buffered writes; 0 = off"},
    {"read_cache_threshold", 0, 127, 0, true, &Tunables::read_cache_threshold,
     "stage read misses unless part of a sequential run longer than this many 4 KiB blocks; 0 = "
     "off"},
    {"write_around_mode", 0, 1, 0, false, &Tunables::write_around_mode,
     "writes go straight to the backing file; the cache serves reads only"},
    {"max_dirty_age", 0, 86400, 0, true, &Tunables::max_dirty_age,
     "seconds a change may stay only on the cache before writeback is forced; 0 = off"},
}};

// The definition of `key`, or nullptr.
const TunableDef* FindTunable(const std::string& key);
// Range-checks and sets; InvalidArgument naming the key otherwise.
Status SetTunable(Tunables* t, const std::string& key, int64_t value);

}  // namespace wbfs

#endif  // WBFS_TUNABLES_H_
