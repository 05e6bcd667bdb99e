// Writeback: order, merging, waiting writers, the superblock record.
#include <doctest/doctest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

// A backing holding a pattern (the image before any write); writeback only
// when the test calls for it.
struct WbRig : EngineRig {
  WbRig(size_t backing_size, size_t cache_size) : EngineRig(backing_size, cache_size) {
    rng.seed(11);
    SetBacking([](size_t i) { return uint8_t(i * 31 + 7); });
    opts.background = false;
  }
};

// Polls `cond` (every 100 us, for up to 20 s): whether it came true.
template <typename F>
bool WaitFor(F cond) {
  for (int i = 0; i < 200000; i++) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return false;
}

// Whether thread `tid` of this process is asleep in the kernel (state S:
// here, a futex wait) on `n` polls in a row, 100 us apart: parked, not
// passing through a briefly contended lock.
bool ParkedFor(pid_t tid, int n) {
  for (int i = 0; i < n; i++) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t p = stat.rfind(')');  // the name may hold spaces and parentheses
    if (p == std::string::npos || p + 2 >= stat.size() || stat[p + 2] != 'S') return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

}  // namespace

TEST_CASE("writeback of any batch size leaves the backing equal to the image") {
  // Overlapping, partial and rewritten blocks over many segments; written
  // back oldest first in batches of 1..32 segments, comparing the backing
  // with a reference model of what each prefix of the log must produce.
  for (uint64_t batch : {1, 2, 5, 32}) {
    WbRig r(2 << 20, 16 << 20);
    r.Open();
    std::mt19937_64 g(batch);
    for (int i = 0; i < 3000; i++) {
      uint64_t block = g() % 400;
      if (g() % 3 == 0) r.Write(block * 4096 + (g() % 8) * 512, 512 * (1 + g() % 3));  // partial
      else r.Write(block * 4096, 4096 * (1 + g() % 3));
      if (g() % 50 == 0) REQUIRE(r.e->Flush().ok());
    }
    REQUIRE(r.e->Flush().ok());
    // Sealed segments go back in order; the backing is never newer than
    // the image nor has anything the image does not.
    for (int k = 0; k < 200 && r.e->Stats().last_writeback_id + 1 < r.e->Stats().current_id; k++) {
      REQUIRE(r.e->WritebackOldest(batch).ok());
      std::vector<uint8_t> img(r.model.size());
      REQUIRE(r.e->Read(0, img.data(), img.size()).ok());
      CHECK(img == r.model);  // reads are unaffected by writeback
    }
    REQUIRE(r.e->WritebackAll().ok());
    CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);
    REQUIRE(r.e->Close().ok());
    CHECK(r.backing->data == r.model);
  }
}

TEST_CASE("a block rewritten after it was sealed is skipped by the older segment's writeback") {
  WbRig r(1 << 20, 8 << 20);
  r.Open();
  const std::vector<uint8_t> original(r.model.begin(), r.model.begin() + 4096);
  r.Write(0, 4096);  // v1, segment 1
  for (int i = 1; i < 127; i++) r.Write(uint64_t(i) * 4096 + 65536, 4096);  // fill segment 1
  r.Write(0, 4096);  // v2, segment 2
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->WritebackOldest(1).ok());
  CHECK(r.e->Stats().last_writeback_id == 1);
  // v1 was superseded: segment 1's writeback must not put it on the backing.
  CHECK(std::memcmp(r.backing->data.data(), original.data(), 4096) == 0);
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(std::memcmp(r.backing->data.data(), r.model.data(), 4096) == 0);
}

TEST_CASE("a batch merges adjacent dirty sectors across segments into single writes") {
  WbRig r(4 << 20, 16 << 20);
  r.Open();
  // Blocks 0..253 over two segments, written in an order that puts
  // neighbours in different segments.
  for (int i = 0; i < 254; i += 2) r.Write(uint64_t(i) * 4096, 4096);
  for (int i = 1; i < 254; i += 2) r.Write(uint64_t(i) * 4096, 4096);
  REQUIRE(r.e->Flush().ok());
  uint64_t writes = r.backing->writes;
  REQUIRE(r.e->WritebackAll().ok());
  // 254 blocks = 1016 KiB: one run, cut at the 1 MiB run limit at most once.
  CHECK(r.backing->writes - writes == 1);
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("writers waiting on a full log resume once writeback frees space") {
  WbRig r(8 << 20, format::kMinCacheSize);
  r.opts.nr_ram_buffers = 2;
  r.Open();
  for (int i = 0; i < 4 * 126; i++) r.Write(uint64_t(i) * 4096, 4096);  // fill the log
  r.backing->Pause();  // the HDD stalls: writeback cannot finish
  std::atomic<bool> done{false};
  std::thread writer([&] {
    std::vector<uint8_t> b(4096 * 300, 0x42);
    CHECK(r.e->Write(6 << 20, b.data(), b.size()).ok());
    done = true;
  });
  for (int i = 0; i < 200 && r.backing->WaitingWrites() == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(r.backing->WaitingWrites() > 0);  // writeback is stuck on the backing
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_FALSE(done.load());  // so the writer waits, without an error
  r.backing->Resume();
  writer.join();
  CHECK(done.load());
  CHECK(r.e->Stats().nr_writeback_waits > 0);
  std::memset(r.model.data() + (6 << 20), 0x42, 4096 * 300);
  std::vector<uint8_t> img(r.model.size());
  REQUIRE(r.e->Read(0, img.data(), img.size()).ok());
  CHECK(img == r.model);
}

TEST_CASE("the superblock record is honoured at replay: written-back segments are skipped") {
  WbRig r(4 << 20, 16 << 20);
  r.opts.background = true;
  r.opts.tunables.update_sb_record_interval = 1;
  r.opts.tunables.writeback_threshold = 0;  // only the record refresh runs
  r.Open();
  for (int i = 0; i < 5 * 127 + 10; i++) r.Write(uint64_t(i % 900) * 4096, 4096);
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->WritebackOldest(3).ok());
  CHECK(r.e->Stats().last_writeback_id == 3);
  const uint64_t dirty = r.e->Stats().nr_dirty_cache_blocks;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // the record is updated
  // A crash: nothing after this point reaches the disks.
  r.ProcessCrash();
  r.opts.background = false;
  r.Open();
  EngineStats s = r.e->Stats();
  CHECK(s.last_writeback_id == 3);
  CHECK(s.replayed_chunks == 3);  // segments 4, 5 and the flushed part of 6
  CHECK(s.nr_dirty_cache_blocks == dirty);
  std::vector<uint8_t> img(r.model.size());
  REQUIRE(r.e->Read(0, img.data(), img.size()).ok());
  CHECK(img == r.model);
}

TEST_CASE("tunables change online, out-of-range and mount-only ones are refused") {
  WbRig r(1 << 20, 8 << 20);
  r.Open();
  CHECK(r.e->SetTunable("writeback_threshold", 70).ok());
  CHECK(r.e->Stats().tunables.writeback_threshold == 70);
  Status st = r.e->SetTunable("nr_max_batched_writeback", 33);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  CHECK(st.message().find("nr_max_batched_writeback") != std::string::npos);
  CHECK(r.e->SetTunable("write_around_mode", 1).message().find("cannot be changed") != std::string::npos);
  CHECK(!r.e->SetTunable("bogus", 1).ok());
  r.Write(0, 4096);
  CHECK(r.e->Stats().stat[kStatWrite | kStatFull] == 1);
  r.e->ClearStats();
  for (uint64_t v : r.e->Stats().stat) CHECK(v == 0);
}

TEST_CASE("drop_caches writes everything back in the background, RAM buffer included") {
  WbRig r(4 << 20, 16 << 20);
  r.opts.background = true;
  r.opts.tunables.writeback_threshold = 0;  // nothing but drop_caches writes back
  r.Open();
  for (int i = 0; i < 300; i++) r.Write(uint64_t(i) * 4096 * 3, 4096);  // no flush
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 300);
  r.e->StartDropCaches();
  for (int i = 0; i < 500 && r.e->Stats().nr_dirty_cache_blocks > 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);
  CHECK(r.backing->data == r.model);
}

TEST_CASE("background writeback keeps room in the log when writeback_threshold > 0") {
  WbRig r(16 << 20, 8 << 20);
  r.opts.background = true;
  r.opts.tunables.writeback_threshold = 100;
  r.Open();
  std::mt19937_64 g(3);
  for (int i = 0; i < 20000; i++) r.Write((g() % 4096) * 4096, 4096);
  EngineStats s = r.e->Stats();
  CHECK(s.current_id > 10 * s.nr_segments);  // the log wrapped many times
  // Waiting for room is rare: far fewer waits than segments filled.
  CHECK(s.nr_writeback_waits * 4 < s.current_id);
  MESSAGE("waits " << s.nr_writeback_waits << " over " << s.current_id << " segments");
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("a writer waiting on a full log gets one unit of the sealed segments (up to 8 x nr_max_batched_writeback), not one segment") {
  WbRig r(32 << 20, format::kSegmentsOffset + 40 * format::kSegmentSize);
  r.opts.background = false;
  r.Open();
  // 40 segments of 127 blocks: the log is full, the 40th being filled.
  for (int i = 0; i < 40 * 127; i++) r.Write(uint64_t(i) * 4096, 4096);
  EngineStats s = r.e->Stats();
  REQUIRE(s.last_writeback_id == 0);
  REQUIRE(s.nr_writeback_waits == 0);
  r.Write(uint64_t(40 * 127) * 4096, 4096);  // needs segment 41: slot of segment 1
  s = r.e->Stats();
  CHECK(s.nr_writeback_waits == 1);
  CHECK(s.nr_writeback_units == 1);
  CHECK(s.last_writeback_id == 40);  // the whole sealed log here (below 256), not just segment 1 (nor 32 of them)
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("a journal that cannot grow bounds a waiting writer's unit to what its entry can hold") {
  // A 4 MiB journal disk (fixed size, as a block device) holds about 7
  // segments of data: the whole sealed log (40 segments, 20 MiB) would
  // never fit, and writeback would fail at every try.
  WbRig r(32 << 20, format::kSegmentsOffset + 40 * format::kSegmentSize);
  r.AddJournal(4 << 20);
  r.Open();
  for (int i = 0; i < 40 * 127 + 1; i++) r.Write(uint64_t(i) * 4096, 4096);
  EngineStats s = r.e->Stats();
  CHECK(s.nr_writeback_waits == 1);
  CHECK(s.nr_writeback_units == 1);
  CHECK(s.last_writeback_id >= 5);
  CHECK(s.last_writeback_id < 10);
  CHECK_FALSE(s.writeback_failing);
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}

TEST_CASE("two writebacks at once do not build the same unit twice") {
  // Both cut the open chunk and wait for it to reach the cache; the second
  // must wait for the first unit, not write the same blocks back again.
  // The disks' writes are gates the test opens, so that the order is fixed
  // and no sleep decides it: A's chunk is held at the cache's gate (A waits
  // for its flush); B starts and parks; the cache's gate opens and A's unit
  // is held at the backing's gate, where a B that built the unit too would
  // arrive as well; B is seen parked again, and the backing's gate opens.
  WbRig r(2 << 20, 8 << 20);
  r.Open();
  r.Write(0, 64 * 4096);  // contiguous: one run, no gap filling
  r.cache->Pause();
  r.backing->Pause();
  std::thread a([&] { CHECK(r.e->WritebackAll().ok()); });
  // The flusher writes A's chunk only once A released the engine's lock to
  // wait for it: from then on A is parked in its unit.
  REQUIRE(WaitFor([&] { return r.cache->WaitingWrites() > 0; }));
  std::atomic<pid_t> b_tid{0};
  std::thread b([&] {
    b_tid = static_cast<pid_t>(syscall(SYS_gettid));
    CHECK(r.e->WritebackAll().ok());
  });
  REQUIRE(WaitFor([&] { return b_tid.load() != 0; }));
  // B parked too (nothing holds the engine's lock now: A and the flusher
  // wait, so a B that sleeps waits on the engine's condition variable).
  REQUIRE(WaitFor([&] { return ParkedFor(b_tid.load(), 20); }));
  CHECK(r.cache->WaitingWrites() == 1);  // A's chunk, still at the gate
  r.cache->Resume();
  // A's unit reaches the backing and stops there, holding no lock. B is
  // woken by the flush; it parks again, either waiting for A's unit (right)
  // or at the backing's gate with the same unit (the bug: nothing else
  // would stop it on the way).
  REQUIRE(WaitFor([&] { return r.backing->WaitingWrites() > 0; }));
  REQUIRE(WaitFor([&] { return ParkedFor(b_tid.load(), 20); }));
  CHECK(r.backing->WaitingWrites() == 1);  // A's unit alone
  r.backing->Resume();
  a.join();
  b.join();
  CHECK(r.e->Stats().backing_bytes_written == 64 * 4096);
  CHECK(r.e->Stats().nr_writeback_units == 1);
}

TEST_CASE("background writeback under load: water marks at a quarter and half of the log free") {
  WbRig r(32 << 20, format::kSegmentsOffset + 40 * format::kSegmentSize);
  r.backing->always_busy = true;  // utilization 100 %: above any threshold
  r.opts.background = true;
  r.opts.tunables.writeback_threshold = 50;
  r.opts.tunables.max_dirty_age = 0;
  r.Open();
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));  // the first utilization sample
  auto used = [&] {
    EngineStats s = r.e->Stats();
    return s.current_id - s.last_writeback_id;
  };
  // 25 of 40 segments used: the backing is busy and room is plenty.
  uint64_t block = 0;
  for (; block < 25 * 127; block++) r.Write(block * 4096, 4096);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(r.e->Stats().last_writeback_id == 0);
  // 31 used, 9 free (< a quarter): writeback runs until half is free.
  for (; block < 31 * 127; block++) r.Write(block * 4096, 4096);
  for (int i = 0; i < 300 && used() > 20; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  MESSAGE("segments used after the low-room stretch: " << used());
  CHECK(used() <= 20);
  CHECK(used() >= 10);  // and then it stops: the backing is busy
  REQUIRE(r.e->WritebackAll().ok());
  REQUIRE(r.e->Close().ok());
  CHECK(r.backing->data == r.model);
}
