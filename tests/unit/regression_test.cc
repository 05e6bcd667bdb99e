// Regression tests for bugs the crash simulation found (see the README's
// "Bugs the simulation found"). Each replays the failing situation
// directly.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <vector>

#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// No threads: every device call in a fixed order.
struct Rig : EngineRig {
  Rig() : EngineRig(4 << 20, format::kMinCacheSize) { opts.threads = false; }
};

}  // namespace

TEST_CASE("regression: a discard needing a new segment when the log is full does not deadlock") {
  Rig r;
  r.Open();
  for (int i = 0; i < 4 * 127; i++) r.Fill(uint64_t(i) * 4096, 4096, 1);  // the log is full
  auto done = std::async(std::launch::async, [&] { return r.e->Discard(0, 64 * 4096); });
  REQUIRE(done.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  CHECK(done.get().ok());
  CHECK(r.At(0) == 0);
  CHECK(r.At(100 * 4096) == 1);
}

TEST_CASE("regression: a crash between a discard and its punch exposes no stale data") {
  Rig r;
  std::memset(r.backing->data.data(), 0xB0, r.backing->data.size());  // V0 on the backing
  r.backing->durable = r.backing->data;
  r.Open();
  r.Fill(0, 8 * 4096, 0xB1);  // V1, dirty in the cache
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->Discard(0, 8 * 4096).ok());  // durable; the backing is punched by writeback
  CHECK(r.e->Stats().pending_discards == 1);
  r.PowerCutLosingUnsynced();
  r.Open();
  CHECK(r.e->Stats().pending_discards == 1);
  for (uint64_t b = 0; b < 8; b++) CHECK_MESSAGE(r.At(b * 4096) == 0, "block " << b);  // never V0 or V1
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(r.e->Stats().pending_discards == 0);
  for (uint64_t b = 0; b < 8; b++) CHECK(r.backing->durable[b * 4096] == 0);
}

TEST_CASE("regression: a discard in write-around mode is not punched again over later writes") {
  Rig r;
  r.opts.tunables.write_around_mode = 1;
  r.Open();
  REQUIRE(r.e->Discard(0, 16 * 4096).ok());
  r.Fill(4 * 4096, 4096, 0xC1);  // into the discarded range, straight to the backing
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->Close().ok());
  r.Open();
  CHECK(r.At(4 * 4096) == 0xC1);
  CHECK(r.e->Stats().pending_discards == 0);
}

TEST_CASE("regression: a replayed discard is applied before the writes logged after it") {
  Rig r;
  std::memset(r.backing->data.data(), 0xB0, r.backing->data.size());
  r.backing->durable = r.backing->data;
  r.Open();
  REQUIRE(r.e->Discard(0, 16 * 4096).ok());
  r.PowerCutLosingUnsynced();
  r.Open();
  r.Fill(4 * 4096, 4096, 0xC2);
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->durable[4 * 4096] == 0xC2);
  CHECK(r.backing->durable[5 * 4096] == 0);
  r.Open();
  CHECK(r.At(4 * 4096) == 0xC2);
  CHECK(r.At(3 * 4096) == 0);
}

TEST_CASE("regression: a clean unmount in write-around mode makes the backing durable") {
  Rig r;
  r.opts.tunables.write_around_mode = 1;
  r.Open();
  r.Fill(8192, 4096, 0xD1);  // no fsync
  REQUIRE(r.e->Close().ok());
  r.PowerCutLosingUnsynced();
  r.Open();
  CHECK(r.At(8192) == 0xD1);
}

TEST_CASE("regression: write-around + read caching: a staged copy never outlives the write it read") {
  Rig r;
  r.opts.tunables.write_around_mode = 1;
  r.opts.tunables.read_cache_threshold = 8;
  r.opts.read_stage_delay_ms = 0;
  r.Open();
  r.Fill(5 * 4096, 4096, 0xE1);  // around the cache, not yet durable on the backing
  r.backing->fail_sync_after = 0;  // the backing cannot be synced now
  std::vector<uint8_t> b(4096);
  REQUIRE(r.e->Read(5 * 4096, b.data(), b.size()).ok());  // a miss: staged
  CHECK(b[0] == 0xE1);
  (void)r.e->Flush();  // the cache syncs; the backing's sync fails
  r.PowerCutLosingUnsynced();  // the write never reached the backing durably
  r.backing->ClearFaults();
  r.Open();
  REQUIRE(r.e->Read(5 * 4096, b.data(), b.size()).ok());
  // The image must be what the backing holds: no clean cached copy of a
  // write the backing lost.
  CHECK(b[0] == r.backing->durable[5 * 4096]);
}
