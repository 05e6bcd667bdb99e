// The background writeback policy (src/engine/policy.h), decision by
// decision.
#include <doctest/doctest.h>

#include <initializer_list>

#include "engine/policy.h"

namespace wbfs::policy {
namespace {

Inputs Base() {
  Inputs in;
  in.threshold = 50;
  in.utilization = 0;
  in.nr_segments = 100;
  in.used = 10;
  in.sealed_waiting = true;
  in.batch = 32;
  in.now_ms = 1'000'000;
  in.idle_drain_ms = 1000;
  return in;
}

TEST_CASE("policy: an idle backing gets the sealed segments, a busy one only under the water mark") {
  bool low = false;
  Inputs in = Base();
  Decision d = Decide(in, &low);
  CHECK(d.want);
  CHECK_FALSE(d.whole_log);
  CHECK(d.batch == 32);

  in.utilization = 80;  // busy: foreground I/O first
  d = Decide(in, &low);
  CHECK_FALSE(d.want);

  in.used = 80;  // a fifth free: below the low water mark
  d = Decide(in, &low);
  CHECK(low);
  CHECK(d.want);
  CHECK(d.batch == 30);  // only down to half full while the backing is busy

  in.used = 60;  // 40 % free: still under way until half is free
  d = Decide(in, &low);
  CHECK(d.want);
  CHECK(d.batch == 10);

  in.used = 50;  // half free: the mark clears
  d = Decide(in, &low);
  CHECK_FALSE(low);
  CHECK_FALSE(d.want);
}

TEST_CASE("policy: under the water mark a unit takes the log down to half, up to 8 x nr_max_batched_writeback") {
  bool low = false;
  Inputs in = Base();
  in.nr_segments = 1000;
  in.used = 900;
  for (int64_t util : {0, 80}) {  // idle or busy backing
    in.utilization = util;
    const Decision d = Decide(in, &low);
    CHECK(low);
    CHECK(d.want);
    CHECK(d.batch == 256);  // one dense unit (at most 8 x 32), not units of 32 scattered segments
  }
  in.used = 600;
  CHECK(Decide(in, &low).batch == 100);  // down to half
  in.used = 300;  // room again: the mark clears, units are capped again
  in.utilization = 0;
  const Decision d = Decide(in, &low);
  CHECK_FALSE(low);
  CHECK(d.batch == 32);
}

TEST_CASE("policy: writeback_threshold 0 writes nothing back by itself") {
  bool low = false;
  Inputs in = Base();
  in.threshold = 0;
  in.used = 99;
  in.oldest_ms = 1;
  CHECK_FALSE(Decide(in, &low).want);
  in.drop_caches = true;  // but drop_caches does
  const Decision d = Decide(in, &low);
  CHECK(d.want);
  CHECK(d.whole_log);
}

TEST_CASE("policy: an idle system drains the segment being filled once its oldest change is old enough") {
  bool low = false;
  Inputs in = Base();
  in.sealed_waiting = false;
  in.oldest_ms = in.now_ms - 500;
  CHECK_FALSE(Decide(in, &low).want);  // a little batching first
  in.oldest_ms = in.now_ms - 1000;
  Decision d = Decide(in, &low);
  CHECK(d.want);
  CHECK(d.whole_log);
  in.utilization = 90;  // not while the backing is busy
  CHECK_FALSE(Decide(in, &low).want);
  in.oldest_ms = 0;  // nothing dirty
  in.utilization = 0;
  CHECK_FALSE(Decide(in, &low).want);
}

TEST_CASE("policy: max_dirty_age writes everything back, however busy the backing") {
  bool low = false;
  Inputs in = Base();
  in.utilization = 100;
  in.used = 80;  // also under the water mark, whose batch cap must not apply
  in.max_dirty_age_s = 30;
  in.oldest_ms = in.now_ms - 29'000;
  Decision d = Decide(in, &low);
  CHECK_FALSE(d.whole_log);
  in.oldest_ms = in.now_ms - 30'000;
  d = Decide(in, &low);
  CHECK(d.want);
  CHECK(d.whole_log);
  CHECK(d.batch == 32);
}

}  // namespace
}  // namespace wbfs::policy
