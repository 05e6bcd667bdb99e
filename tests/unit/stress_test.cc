// A threaded stress test (issue 14): writers, fsyncs, discards, reads,
// background writeback, the superblock record refreshed every second,
// drop_caches and WritebackOldest, all at once over a small cache whose log
// wraps, every read checked against a model. The crash simulation runs the
// engine without threads; this test is what covers them (scripts/tsan runs
// it under ThreadSanitizer).
//
// The model. Every 512-byte sector of the image has one owner thread (the
// image is cut into 64 KiB stripes dealt round-robin to the owners), so
// the changes to a sector are totally ordered: each owner numbers its
// operations 1, 2, ... and remembers, per sector, the operations that
// touched it (a ring of the newest kRing: seq and whether it left zeros)
// and the newest one that has returned (done). A written sector holds a
// stamp: its block, its sector and the seq of the write, so any sector
// read says which version it is. A read of [a, b) notes `done` of each
// sector before it begins and the ring after it ends: every sector must
// hold one of the versions from the newest one that had returned before
// the read began to the newest one started (put in the ring) when it
// ended, as seen just after it ended. Writes and discards are whole blocks
// or runs of sectors (the engine's granularity for partial blocks); reads
// are any bytes.
//
// The edges the model adds between threads: an owner puts an op in the
// ring (release) before it calls the engine and marks it done (release)
// after; a reader loads `done` (acquire) before its read, an edge from the
// writes that returned before the read began (which the engine's contract
// orders anyway), and the ring only once its read has returned. So between
// calls that overlap, every edge TSan sees is the engine's own (or the test
// disks' mutex, which each device call takes).
//
// WBFS_STRESS_SECONDS sets how long the threads run (default 4;
// scripts/tsan sets its own).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
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

constexpr uint64_t kSector = 512;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kSectorsPerBlock = kBlock / kSector;
constexpr uint64_t kStripeBlocks = 16;
constexpr uint64_t kImageSize = 6 << 20;  // 1536 blocks, 96 stripes
constexpr uint64_t kNrSectors = kImageSize / kSector;
constexpr uint64_t kCacheSegments = 8;    // 1016 blocks: the log wraps, writers wait
constexpr uint32_t kRing = 32;

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The content of sector `sec` (of the image) as written by op `seq`.
void Stamp(uint64_t sec, uint64_t seq, uint8_t* out) {
  uint64_t w[kSector / 8];
  w[0] = sec / kSectorsPerBlock;  // block
  w[1] = sec % kSectorsPerBlock;  // sector in the block
  w[2] = seq;
  w[3] = ~sec;
  uint64_t x = Mix(sec * 0x100000001b3ull ^ seq);
  for (size_t i = 4; i < kSector / 8; i++) w[i] = x = Mix(x);
  std::memcpy(out, w, kSector);
}

// One op in a sector's history: seq << 1 | (it left zeros).
constexpr uint64_t Entry(uint64_t seq, bool zero) { return seq << 1 | (zero ? 1 : 0); }

struct SectorModel {
  std::atomic<uint64_t> done{0};  // seq of the newest op that returned
  std::atomic<uint32_t> n{1};     // ops put in the ring (entry 0: the blank image, seq 0)
  std::atomic<uint64_t> ring[kRing];
  SectorModel() {
    ring[0].store(Entry(0, true), std::memory_order_relaxed);
    for (uint32_t i = 1; i < kRing; i++) ring[i].store(0, std::memory_order_relaxed);
  }
};

struct Errors {
  std::mutex mu;
  std::vector<std::string> list;
  std::atomic<uint64_t> count{0};
  void Add(const std::string& s) {
    count.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> l(mu);
    if (list.size() < 20) list.push_back(s);
  }
};

// The rig's byte model is unused: `sectors` is the model here.
struct Stress : EngineRig {
  Stress() : EngineRig(kImageSize, format::kSegmentsOffset + kCacheSegments * format::kSegmentSize) {}
  std::unique_ptr<SectorModel[]> sectors{new SectorModel[kNrSectors]};
  unsigned nr_owners = 0;
  std::atomic<bool> stop{false};
  Errors err;
  // Counters (relaxed: statistics only).
  std::atomic<uint64_t> writes{0}, partial_writes{0}, discards{0}, flushes{0}, reads{0},
      sectors_checked{0}, sectors_unchecked{0}, drops{0}, writebacks{0}, stats_calls{0};

  unsigned OwnerOf(uint64_t sec) const {
    return static_cast<unsigned>((sec / kSectorsPerBlock / kStripeBlocks) % nr_owners);
  }

  // Puts op `seq` into the history of sectors [s0, s1) (before the call).
  void Begin(uint64_t s0, uint64_t s1, uint64_t seq, bool zero) {
    for (uint64_t s = s0; s < s1; s++) {
      SectorModel& m = sectors[s];
      const uint32_t i = m.n.load(std::memory_order_relaxed);  // only the owner stores n
      m.ring[i % kRing].store(Entry(seq, zero), std::memory_order_release);
      m.n.store(i + 1, std::memory_order_release);
    }
  }
  void End(uint64_t s0, uint64_t s1, uint64_t seq) {
    for (uint64_t s = s0; s < s1; s++) sectors[s].done.store(seq, std::memory_order_release);
  }

  // Checks the bytes [a, b) of sector `sec` (a, b relative to the sector)
  // read as `got`, given `lo` = its done before the read began.
  void CheckSector(uint64_t sec, uint64_t lo, const uint8_t* got, uint64_t a, uint64_t b,
                   const char* what) {
    SectorModel& m = sectors[sec];
    const uint32_t n1 = m.n.load(std::memory_order_acquire);
    const uint32_t first = n1 > kRing ? n1 - kRing : 0;
    uint64_t ent[kRing];
    for (uint32_t i = first; i < n1; i++) ent[i - first] = m.ring[i % kRing].load(std::memory_order_acquire);
    const uint32_t n2 = m.n.load(std::memory_order_acquire);
    // Entries the owner may have overwritten while they were copied.
    const uint32_t valid = std::max(first, n2 >= kRing ? n2 - kRing + 1 : 0);
    uint32_t from = n1;
    for (uint32_t i = valid; i < n1; i++) {
      if ((ent[i - first] >> 1) == lo) {
        from = i;
        break;
      }
    }
    if (from == n1) {  // the ring moved on past `lo` (a slow read): no verdict
      sectors_unchecked.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    sectors_checked.fetch_add(1, std::memory_order_relaxed);
    uint8_t want[kSector];
    for (uint32_t i = from; i < n1; i++) {
      const uint64_t en = ent[i - first];
      if (en & 1) {
        std::memset(want, 0, kSector);
      } else {
        Stamp(sec, en >> 1, want);
      }
      if (std::memcmp(want + a, got, b - a) == 0) return;
    }
    // What is it then?
    std::ostringstream o;
    o << what << ": image sector " << sec << " (block " << sec / kSectorsPerBlock << " sector "
      << sec % kSectorsPerBlock << ", owner " << OwnerOf(sec) << ") bytes [" << a << ", " << b
      << ") match no version in the window: allowed";
    for (uint32_t i = from; i < n1; i++) {
      o << " " << (ent[i - first] >> 1) << ((ent[i - first] & 1) ? "(zeros)" : "");
    }
    o << "; read ";
    bool zeros = true;
    for (uint64_t k = 0; k < b - a; k++) zeros = zeros && got[k] == 0;
    if (zeros) {
      o << "zeros";
    } else if (a == 0 && b - a >= 24) {
      uint64_t w[3];
      std::memcpy(w, got, sizeof(w));
      o << "a stamp of block " << w[0] << " sector " << w[1] << " seq " << w[2];
    } else {
      o << "other bytes";
    }
    err.Add(o.str());
  }

  // Reads [off, off + len) and checks it.
  void ReadAndCheck(uint64_t off, uint64_t len, const char* what) {
    const uint64_t s0 = off / kSector, s1 = (off + len + kSector - 1) / kSector;
    std::vector<uint64_t> lo(s1 - s0);
    for (uint64_t s = s0; s < s1; s++) lo[s - s0] = sectors[s].done.load(std::memory_order_acquire);
    std::vector<uint8_t> buf(len);
    Status st = e->Read(off, buf.data(), len);
    if (!st.ok()) {
      err.Add(std::string(what) + ": Read(" + std::to_string(off) + ", " + std::to_string(len) +
              ") failed: " + st.ToString());
      return;
    }
    for (uint64_t s = s0; s < s1; s++) {
      const uint64_t a = std::max(off, s * kSector), b = std::min(off + len, (s + 1) * kSector);
      CheckSector(s, lo[s - s0], buf.data() + (a - off), a - s * kSector, b - s * kSector, what);
    }
  }

  // An owner: writes (whole blocks, sector-partial), discards and
  // flushes on its own stripes. `discard_pct`: how many of its ops discard.
  void Owner(unsigned w, unsigned discard_pct, uint64_t seed) {
    std::mt19937_64 g(seed);
    std::vector<uint64_t> stripes;
    for (uint64_t st = 0; st < kImageSize / (kStripeBlocks * kBlock); st++) {
      if (st % nr_owners == w) stripes.push_back(st);
    }
    uint64_t seq = 0;
    std::vector<uint8_t> buf;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t stripe = stripes[g() % stripes.size()];
      const uint64_t first_sec = stripe * kStripeBlocks * kSectorsPerBlock;
      const uint64_t end_sec = first_sec + kStripeBlocks * kSectorsPerBlock;
      const unsigned r = static_cast<unsigned>(g() % 100);
      uint64_t s0, s1;
      if (r < discard_pct) {
        // Mostly whole blocks; sometimes sector-aligned partial blocks.
        if (g() % 4 == 0) {
          s0 = first_sec + g() % (end_sec - first_sec);
          s1 = std::min(end_sec, s0 + 1 + g() % 24);
        } else {
          const uint64_t b0 = g() % kStripeBlocks;
          s0 = first_sec + b0 * kSectorsPerBlock;
          s1 = std::min(end_sec, s0 + (1 + g() % 8) * kSectorsPerBlock);
        }
        seq++;
        Begin(s0, s1, seq, true);
        Status st = e->Discard(s0 * kSector, (s1 - s0) * kSector);
        if (!st.ok()) err.Add("Discard failed: " + st.ToString());
        End(s0, s1, seq);
        discards.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (r < discard_pct + 4) {
        Status st = e->Flush();
        if (!st.ok()) err.Add("owner Flush failed: " + st.ToString());
        flushes.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const bool partial = r >= 75;
      if (partial) {  // 1..23 sectors at any sector of the stripe
        s0 = first_sec + g() % (end_sec - first_sec);
        s1 = std::min(end_sec, s0 + 1 + g() % 23);
      } else if (r < discard_pct + 8) {  // the whole stripe: 64 KiB
        s0 = first_sec;
        s1 = end_sec;
      } else {  // 1..8 whole blocks
        const uint64_t b0 = g() % kStripeBlocks;
        s0 = first_sec + b0 * kSectorsPerBlock;
        s1 = std::min(end_sec, s0 + (1 + g() % 8) * kSectorsPerBlock);
      }
      seq++;
      buf.resize((s1 - s0) * kSector);
      for (uint64_t s = s0; s < s1; s++) Stamp(s, seq, buf.data() + (s - s0) * kSector);
      Begin(s0, s1, seq, false);
      Status st = e->Write(s0 * kSector, buf.data(), buf.size());
      if (!st.ok()) err.Add("Write failed: " + st.ToString());
      End(s0, s1, seq);
      (partial ? partial_writes : writes).fetch_add(1, std::memory_order_relaxed);
    }
  }

  void Reader(uint64_t seed) {
    std::mt19937_64 g(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      const unsigned r = static_cast<unsigned>(g() % 10);
      uint64_t off, len;
      if (r < 6) {  // 1..16 whole blocks
        len = (1 + g() % 16) * kBlock;
        off = (g() % ((kImageSize - len) / kBlock + 1)) * kBlock;
      } else if (r < 9) {  // sectors
        len = (1 + g() % 40) * kSector;
        off = (g() % ((kImageSize - len) / kSector + 1)) * kSector;
      } else {  // any bytes
        len = 1 + g() % 20000;
        off = g() % (kImageSize - len + 1);
      }
      ReadAndCheck(off, len, "concurrent read");
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // fsync callers. Every flush that finds new data cuts a chunk (a 4 KiB
  // header each), so flushing much more often fills the log with headers
  // and writers mostly wait for room.
  void Flusher(uint64_t seed) {
    std::mt19937_64 g(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      Status st = e->Flush();
      if (!st.ok()) err.Add("Flush failed: " + st.ToString());
      flushes.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(1000 + g() % 4000));
    }
  }

  // drop_caches, WritebackOldest and an online tunable, now and then.
  void Maintainer(uint64_t seed) {
    std::mt19937_64 g(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + g() % 150));
      switch (g() % 4) {
        case 0:
          e->StartDropCaches();
          drops.fetch_add(1, std::memory_order_relaxed);
          break;
        case 1:
        case 2: {
          Status st = e->WritebackOldest(1 + g() % 4);
          if (!st.ok()) err.Add("WritebackOldest failed: " + st.ToString());
          writebacks.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        default: {
          Status st = e->SetTunable("nr_max_batched_writeback", static_cast<int64_t>(1 + g() % 32));
          if (!st.ok()) err.Add("SetTunable failed: " + st.ToString());
        }
      }
    }
  }

  void Watcher() {
    while (!stop.load(std::memory_order_relaxed)) {
      EngineStats s = e->Stats();
      stats_calls.fetch_add(1, std::memory_order_relaxed);
      if (s.failed) err.Add("engine failed: " + s.error);
      if (s.writeback_failing) err.Add("writeback failing: " + s.writeback_error);
      if (s.last_writeback_id > s.current_id || s.last_flushed_id > s.current_id ||
          s.nr_dirty_cache_blocks > s.nr_cached_blocks || s.nr_cached_blocks > s.nr_cache_blocks) {
        err.Add("inconsistent stats: current " + std::to_string(s.current_id) + " flushed " +
                std::to_string(s.last_flushed_id) + " written back " + std::to_string(s.last_writeback_id) +
                " dirty " + std::to_string(s.nr_dirty_cache_blocks) + " cached " +
                std::to_string(s.nr_cached_blocks) + " of " + std::to_string(s.nr_cache_blocks));
      }
      if (err.count.load(std::memory_order_relaxed) > 0) stop = true;  // stop at the first error
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  // The image the model ends with (every op has returned).
  std::vector<uint8_t> FinalImage() {
    std::vector<uint8_t> img(kImageSize, 0);
    for (uint64_t s = 0; s < kNrSectors; s++) {
      const uint32_t n = sectors[s].n.load(std::memory_order_acquire);
      const uint64_t en = sectors[s].ring[(n - 1) % kRing].load(std::memory_order_acquire);
      if (!(en & 1)) Stamp(s, en >> 1, img.data() + s * kSector);
    }
    return img;
  }

  void ReportErrors(const std::string& phase) {
    std::lock_guard<std::mutex> l(err.mu);
    for (const std::string& line : err.list) MESSAGE(phase << ": " << line);
    CHECK_MESSAGE(err.count.load() == 0, phase << ": " << err.count.load() << " errors");
  }

  std::string Counters() const {
    std::ostringstream o;
    o << writes.load() << " writes, " << partial_writes.load() << " partial writes, " << discards.load()
      << " discards, " << flushes.load() << " flushes, " << reads.load() << " reads ("
      << sectors_checked.load() << " sectors checked, " << sectors_unchecked.load()
      << " past the model's ring), " << drops.load() << " drop_caches, " << writebacks.load()
      << " WritebackOldest, " << stats_calls.load() << " Stats";
    return o.str();
  }
};

double StressSeconds() {
  const char* v = std::getenv("WBFS_STRESS_SECONDS");
  if (v == nullptr || *v == '\0') return 4.0;
  const double s = std::atof(v);
  return s > 0 ? s : 4.0;
}

// The first sector where `got` differs from `want`, described; "" if none.
std::string FirstDifference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  size_t nr = 0;
  std::string first;
  for (uint64_t s = 0; s < kNrSectors; s++) {
    if (std::memcmp(got.data() + s * kSector, want.data() + s * kSector, kSector) == 0) continue;
    if (nr++ == 0) {
      uint64_t w[3];
      std::memcpy(w, got.data() + s * kSector, sizeof(w));
      first = "image sector " + std::to_string(s) + " (block " + std::to_string(s / kSectorsPerBlock) +
              ") holds block " + std::to_string(w[0]) + " sector " + std::to_string(w[1]) + " seq " +
              std::to_string(w[2]);
    }
  }
  return nr == 0 ? "" : std::to_string(nr) + " sectors differ, the first: " + first;
}

}  // namespace

TEST_CASE("stress: threads, background writeback, record refresh and drop_caches against a model") {
  const double seconds = StressSeconds();
  Stress t;
  t.opts.threads = true;
  t.opts.background = true;
  t.opts.nr_ram_buffers = 3;
  t.opts.tunables.writeback_threshold = 100;  // background writeback all the time
  t.opts.tunables.update_sb_record_interval = 1;
  t.opts.tunables.sync_data_interval = 1;
  t.opts.tunables.max_dirty_age = 1;
  t.opts.idle_drain_ms = 100;
  t.Open();
  const unsigned kWriters = 4, kDiscarders = 2, kReaders = 3, kFlushers = 2;
  t.nr_owners = kWriters + kDiscarders;
  std::vector<std::thread> th;
  for (unsigned w = 0; w < kWriters; w++) th.emplace_back([&t, w] { t.Owner(w, 6, 100 + w); });
  for (unsigned w = kWriters; w < t.nr_owners; w++) th.emplace_back([&t, w] { t.Owner(w, 45, 100 + w); });
  for (unsigned i = 0; i < kReaders; i++) th.emplace_back([&t, i] { t.Reader(200 + i); });
  for (unsigned i = 0; i < kFlushers; i++) th.emplace_back([&t, i] { t.Flusher(400 + i); });
  th.emplace_back([&t] { t.Maintainer(300); });
  th.emplace_back([&t] { t.Watcher(); });
  const auto t0 = std::chrono::steady_clock::now();
  while (!t.stop.load() && std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  t.stop = true;
  // An engine call that never returns (a lost wakeup, a pin never
  // dropped) hangs its thread: say so and abort rather than hang.
  std::atomic<bool> joined{false};
  std::thread watchdog([&] {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!joined.load() && std::chrono::steady_clock::now() < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (joined.load()) return;
    std::fprintf(stderr, "stress: threads still inside engine calls 60 s after the stop (a hang): %s\n",
                 t.Counters().c_str());
    {
      std::lock_guard<std::mutex> l(t.err.mu);
      for (const std::string& x : t.err.list) std::fprintf(stderr, "stress: %s\n", x.c_str());
    }
    std::abort();
  });
  for (auto& x : th) x.join();
  joined = true;
  watchdog.join();
  const double ran = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EngineStats s = t.e->Stats();
  MESSAGE("stress: " << ran << " s: " << t.Counters() << "; segments " << s.current_id << " over a ring of "
                     << s.nr_segments << ", " << s.nr_writeback_units << " writeback units, "
                     << s.nr_writeback_waits << " waits for room, " << s.nr_cache_syncs << " cache syncs");
  t.ReportErrors("while running");
  CHECK(s.current_id > s.nr_segments);  // the log wrapped
  CHECK(t.sectors_checked.load() > 0);

  // Every sector as the model ends, through the same engine, then after a
  // reopen of the same disks.
  const std::vector<uint8_t> want = t.FinalImage();
  std::vector<uint8_t> img(kImageSize);
  REQUIRE(t.e->Read(0, img.data(), img.size()).ok());
  CHECK_MESSAGE(img == want, "before close: " << FirstDifference(img, want));
  REQUIRE(t.e->Flush().ok());
  t.Close();
  t.Open();
  std::fill(img.begin(), img.end(), 0);
  REQUIRE(t.e->Read(0, img.data(), img.size()).ok());
  CHECK_MESSAGE(img == want, "after reopen: " << FirstDifference(img, want));
  REQUIRE(t.e->WritebackAll().ok());
  CHECK(t.e->Stats().nr_dirty_cache_blocks == 0);
  REQUIRE(t.e->CloseClean().ok());
  t.e.reset();
  {
    std::lock_guard<std::mutex> l(t.backing->mu);
    img = t.backing->data;
  }
  CHECK_MESSAGE(img == want, "the backing alone: " << FirstDifference(img, want));
}
