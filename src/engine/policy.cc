#include "engine/policy.h"

#include <algorithm>

namespace wbfs::policy {

Decision Decide(const Inputs& in, bool* low_room) {
  Decision d;
  d.batch = in.batch;
  if (in.drop_caches) {
    d.want = d.whole_log = true;
  } else if (in.threshold > 0 && in.sealed_waiting) {
    const uint64_t free = in.nr_segments - std::min(in.used, in.nr_segments);
    if (free * 4 < in.nr_segments) *low_room = true;
    else if (free * 2 >= in.nr_segments) *low_room = false;
    d.want = in.utilization < in.threshold || *low_room;
    // Under the water mark one unit takes the log down to half free,
    // however many segments that is (nr_max_batched_writeback bounds units
    // only while the log has room): a unit of a few segments of scattered
    // blocks costs the backing a seek per block, one of many segments is
    // dense enough for the writeback windows to join its runs into large
    // sequential I/O. And no further than half, so that under load
    // foreground I/O keeps the backing the rest of the time.
    if (*low_room) {
      d.batch = std::max<uint64_t>(1, in.used - std::min(in.used, in.nr_segments / 2));
      d.batch = std::min(d.batch, in.batch_cap * kPressureUnits);
    }
  } else if (in.threshold > 0 && in.utilization < in.threshold) {
    // Nothing sealed waits and the backing is idle: the changes in the
    // segment being filled go too once the oldest is idle_drain_ms old (a
    // little batching), so an idle system keeps nothing dirty for long.
    d.want = d.whole_log = in.oldest_ms != 0 && in.now_ms >= in.oldest_ms + in.idle_drain_ms;
  }
  // max_dirty_age: nothing stays only on the cache for longer.
  if (in.max_dirty_age_s > 0 && in.oldest_ms != 0 &&
      in.now_ms >= in.oldest_ms + static_cast<uint64_t>(in.max_dirty_age_s) * 1000) {
    d.want = d.whole_log = true;
  }
  if (d.whole_log) d.batch = in.batch;  // the cap is the water mark's only
  return d;
}

}  // namespace wbfs::policy
