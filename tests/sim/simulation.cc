// wbfs-sim: deterministic crash simulation of the engine.
//
// For each seed: random geometry and options (read caching on a third of
// the seeds, write-around mode on a quarter), a backing with random
// content, then rounds of a random workload (writes of any size and
// offset, overwrites, discards, flushes, reads checked against the
// expected image, full writeback, clean unmount/remount) on simulated
// devices. Each round ends in a power cut at a random device operation —
// inside a chunk write, a writeback, a record update, a sync — after which
// each device keeps any subset of its unsynced writes, torn at 512-byte
// boundaries. The engine is then recovered from what survived, and:
//   - recovery must succeed;
//   - every sector must hold its value at the last completed flush or a
//     value written to it since (so no flushed write is lost, nothing
//     stale or torn inside a sector comes back);
//   - now and then, a clean unmount and remount must give the same image;
//   - (write-back) the recovered image is the image as of some prefix of
//     the log: the base image plus the first k 4 KiB pieces written or
//     discarded since, in order (the log is a chain; a crash cuts it).
// With a journal (two seeds in three), a third of the crash rounds also
// destroy the cache entirely: the journal alone is recovered onto the
// backing, which must then be the image as of some prefix of the log (not
// a mix of two), and a new cache is formatted over it.
// The small cache makes the log wrap every round or two.
//
//   wbfs-sim [--seeds N] [--first SEED] [--crashes K]
// Prints "simulation: P crash points, N seeds, V violations" and, for a
// violation, the seed and round that replay it exactly. Exit 1 on any.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/crash_model.h"
#include "journal/journal.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

void FillRandom(std::mt19937_64& g, uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = g();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; i++) p[i] = static_cast<uint8_t>(g());
}

// WBFS_SIM_TRACE=1 prints every operation of the workload.
const bool kTrace = std::getenv("WBFS_SIM_TRACE") != nullptr;
// With WBFS_SIM_SECTOR=N too, a violation names the operation whose
// version of sector N the recovered image holds.
const int64_t kTraceSector = std::getenv("WBFS_SIM_SECTOR") ? std::atoll(std::getenv("WBFS_SIM_SECTOR")) : -1;

struct Violation {
  std::string what;
};

// What the engine's log holds since `base`: 4 KiB-or-smaller pieces in the
// order the engine logs them (a write block by block; a discard's partial
// ends, then its whole blocks as one extent).
class PrefixModel {
 public:
  struct Piece {
    uint64_t off;
    uint64_t len;
    std::vector<uint8_t> data;  // empty: zeros
  };
  void Reset(const std::vector<uint8_t>& base) {
    base_ = base;
    pieces_.clear();
  }
  void Write(uint64_t off, const uint8_t* p, size_t len) {
    for (uint64_t a = off; a < off + len;) {
      uint64_t b = std::min<uint64_t>(off + len, (a / 4096 + 1) * 4096);
      pieces_.push_back({a, b - a, std::vector<uint8_t>(p + (a - off), p + (b - off))});
      a = b;
    }
  }
  void Discard(uint64_t off, uint64_t len) {
    const uint64_t fb0 = (off + 4095) / 4096, fb1 = (off + len) / 4096;
    std::vector<uint8_t> z(len, 0);
    if (fb0 >= fb1) return Write(off, z.data(), len);
    Write(off, z.data(), fb0 * 4096 - off);
    Write(fb1 * 4096, z.data(), off + len - fb1 * 4096);
    pieces_.push_back({fb0 * 4096, (fb1 - fb0) * 4096, {}});
  }
  // The largest k such that base + pieces[0, k) == got, or -1.
  int64_t Match(const std::vector<uint8_t>& got) const {
    std::vector<uint8_t> cur = base_;
    int64_t diff = 0;
    for (size_t i = 0; i < cur.size(); i++) diff += cur[i] != got[i];
    int64_t best = diff == 0 ? 0 : -1;
    for (size_t k = 0; k < pieces_.size(); k++) {
      const Piece& p = pieces_[k];
      for (uint64_t i = 0; i < p.len; i++) {
        uint8_t v = p.data.empty() ? 0 : p.data[i];
        uint8_t& c = cur[p.off + i];
        diff += (v != got[p.off + i]) - (c != got[p.off + i]);
        c = v;
      }
      if (diff == 0) best = static_cast<int64_t>(k + 1);
    }
    return best;
  }
  // The crash cut the log after k pieces: the rest never happened.
  void Truncate(int64_t k) { pieces_.resize(static_cast<size_t>(k)); }
  size_t size() const { return pieces_.size(); }

 private:
  std::vector<uint8_t> base_;
  std::vector<Piece> pieces_;
};

class SeedRun {
 public:
  explicit SeedRun(uint64_t seed) : seed_(seed), rng_(seed) {
    const size_t backing = (1 + rng_() % 3) << 20;
    const size_t cache = format::kMinCacheSize + (rng_() % 3) * format::kSegmentSize;
    power_ = std::make_shared<PowerPlan>();
    backing_ = std::make_shared<MemDisk>(backing, "backing");
    cache_ = std::make_shared<MemDisk>(cache, "cache");
    journal_ = std::make_shared<MemDisk>(8 << 20, "journal");
    backing_->power = cache_->power = journal_->power = power_;
    FillRandom(rng_, backing_->data.data(), backing_->data.size());
    backing_->durable = backing_->data;
    image_ = backing_->data;
    opts_.nr_ram_buffers = 2 + static_cast<uint32_t>(rng_() % 3);
    opts_.sync_every_segments = 1 + static_cast<uint32_t>(rng_() % 8);
    opts_.tunables.nr_max_batched_writeback = 1 + static_cast<int64_t>(rng_() % 32);
    opts_.threads = false;  // deterministic: a seed replays exactly
    if (kTrace) std::printf("seed %llu: backing %zu cache %zu\n", (unsigned long long)seed, backing, cache);
    opts_.read_stage_delay_ms = 0;
    if (rng_() % 3 == 0) opts_.tunables.read_cache_threshold = 1 + static_cast<int64_t>(rng_() % 8);
    if (rng_() % 4 == 0) opts_.tunables.write_around_mode = 1;
    use_journal_ = rng_() % 3 != 0;
    const uint64_t gaps[] = {0, 4096, 65536, 1 << 20};
    opts_.writeback_fill_gap = gaps[rng_() % 4];
    opts_.writeback_fill_window = rng_() % 2 ? (8 << 20) : (64 << 10);
    if (kTrace) {
      std::printf("read_cache_threshold %lld write_around %lld\n",
                  (long long)opts_.tunables.read_cache_threshold, (long long)opts_.tunables.write_around_mode);
    }
  }

  // Runs `rounds` crash rounds; returns the crash points done, or throws.
  int Run(int rounds) {
    Open("initial open");
    CrashModel model(image_);
    prefix_.Reset(image_);
    const bool prefix = !opts_.tunables.write_around_mode;  // write-around writes are not logged
    int crashes = 0;
    for (round_ = 0; round_ < rounds; round_++) {
      power_->Restore();
      power_->ops_left = static_cast<int64_t>(rng_() % 400);
      Workload(&model);
      // The power goes (if the plan has not cut it already).
      {
        std::lock_guard<std::mutex> l(power_->mu);
        power_->cut = true;
      }
      engine_.reset();
      cache_->Crash(rng_);
      backing_->Crash(rng_);
      journal_->Crash(rng_);
      power_->Restore();
      crashes++;
      if (use_journal_ && prefix && rng_() % 3 == 0) {
        LoseCache(&model);
        continue;
      }
      Open("recovery");
      std::vector<uint8_t> got(image_.size());
      Expect(engine_->Read(0, got.data(), got.size()), "reading the recovered image");
      int64_t bad = model.Check(got);
      if (bad >= 0 && bad == kTraceSector) {
        std::vector<uint8_t> sec(got.begin() + bad * 512, got.begin() + (bad + 1) * 512);
        for (const auto& [op, v] : history_) {
          if (v == sec) std::printf("  sector %lld holds its version before op %d\n", (long long)bad, op);
        }
        bool zero = std::all_of(sec.begin(), sec.end(), [](uint8_t x) { return x == 0; });
        std::printf("  (all zero: %d)\n", zero);
      }
      history_.clear();
      if (bad >= 0) {
        throw Violation{"sector " + std::to_string(bad) +
                        " holds a value no flushed or later write put there"};
      }
      if (prefix) {
        int64_t k = prefix_.Match(got);
        if (k < 0) throw Violation{"the recovered image is not the image at any prefix of the log"};
        prefix_.Truncate(k);
      }
      image_ = got;
      model.Flushed(got);  // the recovered image is durable: the new baseline
      if (round_ % 8 == 7) Remount(&model);
    }
    engine_.reset();
    return crashes;
  }

  uint64_t seed() const { return seed_; }
  uint64_t lost_caches() const { return lost_caches_; }
  int round() const { return round_; }

 private:
  void Expect(const Status& st, const std::string& what) {
    if (!st.ok()) throw Violation{what + " failed: " + st.ToString()};
  }
  std::unique_ptr<Device> JournalDev() { return use_journal_ ? Dev(journal_) : nullptr; }
  void Open(const std::string& what) {
    auto r = Engine::Open(opts_, Dev(backing_), Dev(cache_), JournalDev());
    if (!r.ok()) throw Violation{what + " failed: " + r.status().ToString()};
    engine_ = std::move(r.value());
  }
  // The cache is gone: the journal alone makes the backing consistent, and
  // it must be the image at some prefix of the log.
  void LoseCache(CrashModel* model) {
    cache_ = std::make_shared<MemDisk>(cache_->data.size(), "cache");
    cache_->power = power_;
    {
      auto j = journal::Journal::Open(Dev(journal_), backing_->data.size());
      if (!j.ok()) throw Violation{"opening the journal failed: " + j.status().ToString()};
      auto rep = j.value()->Recover(*Dev(backing_));
      if (!rep.ok()) throw Violation{"journal recovery failed: " + rep.status().ToString()};
    }
    const std::vector<uint8_t> got = backing_->data;
    int64_t k = prefix_.Match(got);
    if (kTrace) std::printf("cache lost: backing = prefix %lld of %zu\n", (long long)k, prefix_.size());
    if (k < 0) throw Violation{"after losing the cache, the backing is not the image at any prefix of the log"};
    lost_caches_++;
    image_ = got;
    prefix_.Reset(got);
    model->Flushed(got);
    Open("open over a new cache");
    std::vector<uint8_t> now(image_.size());
    Expect(engine_->Read(0, now.data(), now.size()), "reading the image over a new cache");
    if (now != image_) throw Violation{"the image over a new cache is not the recovered backing"};
  }

  void Remount(CrashModel* model) {
    Expect(engine_->Close(), "clean close");
    engine_.reset();
    Open("remount");
    std::vector<uint8_t> got(image_.size());
    Expect(engine_->Read(0, got.data(), got.size()), "read after remount");
    if (got != image_) throw Violation{"a clean remount changed the image"};
    model->Flushed(image_);
  }

  // Trace mode: the whole image must read back right after every operation.
  void CheckWhole(int op) {
    if (!kTrace || power_->IsCut() || !engine_) return;
    std::vector<uint8_t> got(image_.size());
    if (!engine_->Read(0, got.data(), got.size()).ok()) return;
    for (size_t k = 0; k < got.size(); k++) {
      if (got[k] != image_[k]) {
        std::printf("  image wrong after op %d at byte %zu\n", op, k);
        throw Violation{"image diverged"};
      }
    }
  }

  // Random operations until the power is cut or 300 operations are done.
  void Workload(CrashModel* model) {
    std::vector<uint8_t> buf;
    for (int op = 0; op < 300 && !power_->IsCut(); op++) {
      CheckWhole(op);
      if (kTrace) std::printf("op %d: ", op);
      if (kTraceSector >= 0) {
        history_.emplace_back(op, std::vector<uint8_t>(image_.begin() + kTraceSector * 512,
                                                       image_.begin() + (kTraceSector + 1) * 512));
      }
      unsigned r = static_cast<unsigned>(rng_() % 100);
      if (r < 72) {
        size_t len;
        uint64_t off;
        if (rng_() % 2) {  // aligned 4 KiB blocks
          len = 4096 * (1 + rng_() % (rng_() % 8 == 0 ? 64 : 4));
          off = (rng_() % (image_.size() / 4096)) * 4096;
        } else {
          len = 1 + rng_() % (rng_() % 8 == 0 ? 100000 : 9000);
          off = rng_() % image_.size();
        }
        len = std::min<size_t>(len, image_.size() - off);
        buf.resize(len);
        FillRandom(rng_, buf.data(), len);
        Status st = engine_->Write(off, buf.data(), len);
        if (kTrace) std::printf("write %llu +%zu: %s\n", (unsigned long long)off, len, st.ToString().c_str());
        std::memcpy(image_.data() + off, buf.data(), len);
        model->Wrote(image_, off, len);  // a failed write may have landed too
        prefix_.Write(off, buf.data(), len);
        if (!st.ok()) return;
      } else if (r < 76) {
        uint64_t off = rng_() % image_.size();
        size_t len = std::min<size_t>(1 + rng_() % 200000, image_.size() - off);
        Status st = engine_->Discard(off, len);
        if (kTrace) std::printf("discard %llu +%zu: %s\n", (unsigned long long)off, len, st.ToString().c_str());
        std::memset(image_.data() + off, 0, len);
        model->Wrote(image_, off, len);
        prefix_.Discard(off, len);
        if (!st.ok()) return;
      } else if (r < 84) {
        Status fs = engine_->Flush();
        if (kTrace) std::printf("flush: %s\n", fs.ToString().c_str());
        if (!fs.ok()) return;
        model->Flushed(image_);
      } else if (r < 94) {
        uint64_t off = rng_() % image_.size();
        size_t len = std::min<size_t>(1 + rng_() % 70000, image_.size() - off);
        buf.resize(len);
        if (kTrace) std::printf("read %llu +%zu\n", (unsigned long long)off, len);
        if (!engine_->Read(off, buf.data(), len).ok()) return;
        if (std::memcmp(buf.data(), image_.data() + off, len) != 0) {
          size_t k = 0;
          while (buf[k] == image_[off + k]) k++;
          throw Violation{"a read of " + std::to_string(len) + " bytes at " + std::to_string(off) +
                          " returned other data than was written, first at byte " +
                          std::to_string(off + k)};
        }
      } else if (r < 97) {
        if (kTrace) std::printf("writeback all\n");
        if (!engine_->WritebackAll().ok()) return;
        prefix_.Reset(image_);  // the backing (and so every later prefix) starts here
      } else {
        Status st = engine_->Close();
        if (kTrace) std::printf("remount: %s\n", st.ToString().c_str());
        engine_.reset();
        if (!st.ok()) return;  // the cut hit the close: recover below
        model->Flushed(image_);
        auto o = Engine::Open(opts_, Dev(backing_), Dev(cache_), JournalDev());
        if (!o.ok()) {
          if (power_->IsCut()) return;  // the cut hit the replay: recover below
          throw Violation{"remount in the workload failed: " + o.status().ToString()};
        }
        engine_ = std::move(o.value());
      }
    }
  }

  const uint64_t seed_;
  std::mt19937_64 rng_;
  std::shared_ptr<PowerPlan> power_;
  std::shared_ptr<MemDisk> backing_, cache_, journal_;
  bool use_journal_ = false;
  PrefixModel prefix_;
  EngineOptions opts_;
  std::unique_ptr<Engine> engine_;
  std::vector<uint8_t> image_;  // what the image must read as now
  std::vector<std::pair<int, std::vector<uint8_t>>> history_;  // trace: kTraceSector by op
  int round_ = 0;
  uint64_t lost_caches_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t seeds = 10, first = 1;
  int crashes = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--seeds") seeds = std::stoull(argv[i + 1]);
    else if (k == "--first") first = std::stoull(argv[i + 1]);
    else if (k == "--crashes") crashes = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: wbfs-sim [--seeds N] [--first SEED] [--crashes K]\n");
      return 2;
    }
  }
  uint64_t points = 0, violations = 0, lost = 0;
  for (uint64_t s = first; s < first + seeds; s++) {
    SeedRun run(s);
    try {
      points += static_cast<uint64_t>(run.Run(crashes));
      lost += run.lost_caches();
    } catch (const Violation& v) {
      violations++;
      std::printf("VIOLATION seed %llu round %d: %s\n  replay: wbfs-sim --first %llu --seeds 1 "
                  "--crashes %d\n",
                  static_cast<unsigned long long>(s), run.round(), v.what.c_str(),
                  static_cast<unsigned long long>(s), crashes);
      points += static_cast<uint64_t>(run.round());
    }
  }
  std::printf("simulation: %llu crash points (%llu with the cache lost), %llu seeds, %llu violations\n",
              static_cast<unsigned long long>(points), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(seeds),
              static_cast<unsigned long long>(violations));
  return violations == 0 ? 0 : 1;
}
