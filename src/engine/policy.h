// The background writeback policy as a pure decision: given what the
// background thread sampled (the log's fill, the backing's utilisation, the
// age of the oldest change), whether to write back now, how far and how
// much. The engine's background thread (BackgroundMain) only gathers the
// inputs and carries the decision out; tests/unit/policy_test.cc tests it.
#ifndef WBFS_ENGINE_POLICY_H_
#define WBFS_ENGINE_POLICY_H_

#include <cstdint>

namespace wbfs::policy {

struct Inputs {
  bool drop_caches = false;      // a drop_caches is in progress
  int64_t threshold = 0;         // writeback_threshold (%); 0: no background writeback
  int64_t utilization = -1;      // the backing's, % over the last second (-1: not sampled yet)
  uint64_t nr_segments = 0;      // of the log
  uint64_t used = 0;             // segments not written back (the one being filled included)
  bool sealed_waiting = false;   // a sealed segment is not written back
  uint64_t batch = 1;            // the adaptive batch (segments)
  uint64_t batch_cap = 32;       // nr_max_batched_writeback
  uint64_t oldest_ms = 0;        // wall clock of the oldest change only on the cache; 0: none
  uint64_t now_ms = 0;
  uint64_t idle_drain_ms = 0;
  int64_t max_dirty_age_s = 0;   // 0: off
};

// Units under pressure take at most this many times nr_max_batched_writeback
// segments: dense enough for the windows to join scattered blocks on an
// HDD, while a waiting writer's stall stays bounded (a unit of a whole
// 768 MiB log on a fast backing stalled random writers for seconds: the
// windows rewrite the gaps of the whole image, which a fast disk does not
// need).
constexpr uint64_t kPressureUnits = 8;

struct Decision {
  bool want = false;
  // Up to the newest chunk, the segment being filled included (else the
  // sealed segments only).
  bool whole_log = false;
  uint64_t batch = 0;
};

// `low_room`: the water mark state, kept between calls: set below a quarter
// of the log free, cleared at half free, so that writeback under pressure
// runs in long stretches well before writers wait for room; meanwhile a
// unit takes the log down to half free at once (a dense unit).
Decision Decide(const Inputs& in, bool* low_room);

}  // namespace wbfs::policy

#endif  // WBFS_ENGINE_POLICY_H_
