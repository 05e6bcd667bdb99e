// Engine tests over in-memory devices: no FUSE, no root.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "support/crash_model.h"
#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

constexpr size_t kMiB = 1 << 20;

using Rig = EngineRig;

}  // namespace

TEST_CASE("a blank cache is formatted and the image starts as the backing") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  for (size_t i = 0; i < r.model.size(); i++) r.backing->data[i] = r.model[i] = uint8_t(i * 7);
  r.Open();
  CHECK(r.e->Stats().formatted);
  CHECK(r.e->Size() == 4 * kMiB);
  r.CheckAll();
  r.Write(4096, 8192);
  r.CheckAll();
  r.Close();
  r.Open();
  CHECK_FALSE(r.e->Stats().formatted);
  r.CheckAll();
}

TEST_CASE("unaligned writes and reads agree with a byte model, across reopen") {
  Rig r(2 * kMiB, 8 * kMiB);
  for (size_t i = 0; i < r.model.size(); i++) r.backing->data[i] = r.model[i] = uint8_t(i % 251);
  r.Open();
  std::mt19937_64 g(7);
  for (int i = 0; i < 3000; i++) {
    uint64_t off = g() % (r.model.size() - 20000);
    size_t len = 1 + g() % (i % 10 == 0 ? 20000 : 700);
    r.Write(off, len);
    if (i % 97 == 0) REQUIRE(r.e->Flush().ok());
    if (i % 50 == 0) r.CheckRange(off > 5000 ? off - 5000 : 0, 30000);
  }
  r.CheckAll();
  r.Close();
  r.Open();
  r.CheckAll();
}

TEST_CASE("partial blocks: sectors merge with RAM, cache and backing") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  std::memset(r.backing->data.data(), 0xbb, r.backing->data.size());
  std::memset(r.model.data(), 0xbb, r.model.size());
  r.Open();
  // dm-writeboost's "write: cached data + write data (partial overwrite)":
  // sectors 1-3 cached, then sector 2 rewritten.
  r.Fill(512, 3 * 512, 0x11);
  CHECK(r.Stat("write_miss_cache_partial") == 1);
  REQUIRE(r.e->Flush().ok());
  // Push the block out of RAM: fill the rest of the segment and the next.
  for (int i = 0; i < 300; i++) r.Fill(uint64_t(100 + i) * 4096, 4096, 0x33);
  r.Fill(2 * 512, 512, 0x22);
  CHECK(r.Stat("write_hit_cache_partial") == 1);
  r.CheckRange(0, 4096);
  uint8_t buf[4096];
  REQUIRE(r.e->Read(0, buf, 4096).ok());
  CHECK(buf[0] == 0xbb);
  CHECK(buf[512] == 0x11);
  CHECK(buf[1024] == 0x22);
  CHECK(buf[1536] == 0x11);
  CHECK(buf[2048] == 0xbb);
  // A sub-sector write in the RAM buffer keeps the rest of its sector.
  r.Fill(4096 * 50 + 700, 10, 0x44);
  r.CheckRange(4096 * 50, 4096);
  r.Close();
  r.Open();
  r.CheckAll();
}

TEST_CASE("overwrites in the RAM buffer happen in place, on the cache they move") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  r.Open();
  r.Write(0, 4096);
  r.Write(0, 4096);
  CHECK(r.Stat("write_miss_cache_full") == 1);
  CHECK(r.Stat("write_hit_buffer_full") == 1);
  REQUIRE(r.e->Flush().ok());
  uint64_t chunks = r.e->Stats().nr_chunks_written;
  r.Write(0, 4096);  // the chunk was cut: a new slot, same segment
  CHECK(r.Stat("write_hit_buffer_full") == 2);
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 1);
  REQUIRE(r.e->Flush().ok());
  CHECK(r.e->Stats().nr_chunks_written == chunks + 1);
  uint8_t buf[4096];
  REQUIRE(r.e->Read(0, buf, 4096).ok());
  CHECK(r.Stat("read_hit_buffer_full") == 1);
  // Once its segment is no longer the one being filled, a hit is a cache hit.
  for (int i = 0; i < 200; i++) r.Write(uint64_t(10 + i) * 4096, 4096);
  r.Write(0, 4096);
  CHECK(r.Stat("write_hit_cache_full") == 1);
  REQUIRE(r.e->Read(4096 * 10, buf, 4096).ok());
  CHECK(r.Stat("read_hit_cache_full") == 1);
  r.CheckAll();
}

TEST_CASE("an fsync after one 4 KiB write costs at most 8 KiB of log") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  r.Open();
  for (int i = 0; i < 20; i++) {
    uint64_t before = r.e->Stats().cache_bytes_written;
    r.Write(uint64_t(i) * 4096 * 3, 4096);
    REQUIRE(r.e->Flush().ok());
    CHECK(r.e->Stats().cache_bytes_written - before <= 8192);
  }
  // An fsync with nothing new writes nothing.
  uint64_t before = r.e->Stats().cache_bytes_written;
  REQUIRE(r.e->Flush().ok());
  CHECK(r.e->Stats().cache_bytes_written == before);
  CHECK(r.e->Stats().current_id == 1);  // 20 flushes, one segment
  r.Close();
  r.Open();
  r.CheckAll();
}

TEST_CASE("the log wraps: oldest segments are written back first") {
  Rig r(16 * kMiB, format::kMinCacheSize);  // 4 segments, ~2 MiB of data
  r.opts.nr_ram_buffers = 2;
  r.Open();
  std::mt19937_64 g(3);
  for (int i = 0; i < 6000; i++) {
    uint64_t block = g() % (r.model.size() / 4096);
    r.Write(block * 4096, 4096);
    if (i % 500 == 0) REQUIRE(r.e->Flush().ok());
  }
  EngineStats s = r.e->Stats();
  CHECK(s.current_id > 4 * 10);
  CHECK(s.last_writeback_id + 4 >= s.current_id);
  CHECK(s.backing_bytes_written > 0);
  r.CheckAll();
  r.Close();
  r.Open();
  r.CheckAll();
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 0);
  r.Close();
  CHECK(r.backing->data == r.model);  // the backing alone is the image
}

TEST_CASE("writeback merges adjacent blocks and partial sectors") {
  Rig r(4 * kMiB, 8 * kMiB);
  r.Open();
  for (int i = 0; i < 64; i++) r.Write(uint64_t(64 - i) * 4096, 4096);  // reverse order
  r.Write(200 * 4096 + 512, 1024);  // a partial block: sectors 1-2 only
  uint64_t writes_before = r.backing->writes;
  REQUIRE(r.e->WritebackAll().ok());
  // 64 adjacent blocks in one write, the partial block in another.
  CHECK(r.backing->writes - writes_before == 2);
  CHECK(r.e->Stats().backing_bytes_written == 64 * 4096 + 1024);
  r.Close();
  CHECK(r.backing->data == r.model);
}

TEST_CASE("a process crash keeps every flushed write") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  r.Open();
  r.Write(0, 100000);
  REQUIRE(r.e->Flush().ok());
  std::vector<uint8_t> flushed = r.model;
  r.Write(200000, 5000);  // never flushed: may or may not survive
  r.ProcessCrash();  // the engine's last writes fail: a dead process
  r.model = flushed;
  r.Open();
  r.CheckRange(0, 100000);
}


TEST_CASE("power cuts: flushed writes survive, nothing stale comes back") {
  // Torn and partly persisted writes at every crash, several crashes in a
  // row on the same cache (the stale-lap hazard), log wrap included.
  int crash_points = 0;
  for (uint64_t seed = 1; seed <= 12; seed++) {
    Rig r(2 * kMiB, format::kMinCacheSize);
    r.opts.nr_ram_buffers = 2;
    r.opts.sync_every_segments = 1 + seed % 3;
    r.rng.seed(seed);
    std::mt19937_64 g(seed * 1000);
    CrashModel m(r.model);
    r.Open();
    for (int round = 0; round < 12; round++) {
      int ops = 1 + int(g() % 400);
      for (int i = 0; i < ops; i++) {
        uint64_t off = g() % (r.model.size() - 70000);
        size_t len = g() % 4 == 0 ? 1 + g() % 70000 : 4096 * (1 + g() % 4);
        if (g() % 2) off &= ~uint64_t(4095);
        r.Write(off, len);
        m.Wrote(r.model, off, len);
        if (g() % 25 == 0) {
          REQUIRE(r.e->Flush().ok());
          m.Flushed(r.model);
        }
      }
      r.PowerCut(g);
      crash_points++;
      r.Open();
      std::vector<uint8_t> got(r.model.size());
      REQUIRE(r.e->Read(0, got.data(), got.size()).ok());
      int64_t bad = m.Check(got);
      REQUIRE_MESSAGE(bad < 0, "seed " << seed << " round " << round << ": sector " << bad);
      r.model = got;
      m.Flushed(got);  // the recovered image is the new baseline
    }
    r.Close();
  }
  CHECK(crash_points == 144);
}

TEST_CASE("bad caches are refused and left untouched") {
  auto backing = std::make_shared<MemDisk>(4 * kMiB);
  SUBCASE("too small") {
    auto cache = std::make_shared<MemDisk>(format::kMinCacheSize - 4096);
    auto r = Engine::Open({}, Dev(backing), Dev(cache));
    CHECK(r.status().code() == Status::Code::kInvalidArgument);
    CHECK(r.status().message().find("at least") != std::string::npos);
    CHECK(cache->writes == 0);
  }
  SUBCASE("garbage") {
    auto cache = std::make_shared<MemDisk>(8 * kMiB);
    for (size_t i = 0; i < cache->data.size(); i++) cache->data[i] = uint8_t(i * 13 + 1);
    auto copy = cache->data;
    auto r = Engine::Open({}, Dev(backing), Dev(cache));
    CHECK(r.status().code() == Status::Code::kCorruption);
    CHECK(cache->writes == 0);
    CHECK(cache->data == copy);
  }
  SUBCASE("formatted for another backing size") {
    auto cache = std::make_shared<MemDisk>(8 * kMiB);
    {
      auto r = Engine::Open({}, Dev(backing), Dev(cache));
      REQUIRE(r.ok());
    }
    auto copy = cache->data;
    uint64_t w = cache->writes;
    auto other = std::make_shared<MemDisk>(8 * kMiB);
    auto r = Engine::Open({}, Dev(other), Dev(cache));
    CHECK(r.status().code() == Status::Code::kInvalidArgument);
    CHECK(r.status().message().find("formatted for a backing of 4194304 bytes") != std::string::npos);
    CHECK(cache->writes == w);
    CHECK(cache->data == copy);
  }
  SUBCASE("formatted for a backing with another identity, of the same size") {
    auto cache = std::make_shared<MemDisk>(8 * kMiB);
    backing->identity = "rbd:fsid=aa/pool=1/image=one";
    {
      auto r = Engine::Open({}, Dev(backing), Dev(cache));
      REQUIRE(r.ok());
    }
    auto copy = cache->data;
    const uint64_t w = cache->writes;
    auto other = std::make_shared<MemDisk>(4 * kMiB);
    other->identity = "rbd:fsid=aa/pool=1/image=two";
    auto r = Engine::Open({}, Dev(other), Dev(cache));
    CHECK(r.status().code() == Status::Code::kInvalidArgument);
    CHECK(r.status().message().find("formatted for the backing rbd:fsid=aa/pool=1/image=one") != std::string::npos);
    CHECK(r.status().message().find("image=two") != std::string::npos);
    // A device without an identity (a file) is refused too.
    auto plain = std::make_shared<MemDisk>(4 * kMiB);
    CHECK(Engine::Open({}, Dev(plain), Dev(cache)).status().code() == Status::Code::kInvalidArgument);
    CHECK(cache->writes == w);
    CHECK(cache->data == copy);
    // The same image opens it again.
    CHECK(Engine::Open({}, Dev(backing), Dev(cache)).ok());
  }
  SUBCASE("a cache that recorded no identity is checked by size only") {
    auto cache = std::make_shared<MemDisk>(8 * kMiB);
    {
      auto r = Engine::Open({}, Dev(backing), Dev(cache));
      REQUIRE(r.ok());
    }
    auto other = std::make_shared<MemDisk>(4 * kMiB);
    other->identity = "rbd:fsid=aa/pool=1/image=two";
    CHECK(Engine::Open({}, Dev(other), Dev(cache)).ok());
  }
  SUBCASE("backing not a multiple of 4 KiB") {
    auto odd = std::make_shared<MemDisk>(4 * kMiB + 512);
    auto cache = std::make_shared<MemDisk>(8 * kMiB);
    auto r = Engine::Open({}, Dev(odd), Dev(cache));
    CHECK(r.status().code() == Status::Code::kInvalidArgument);
    CHECK(cache->writes == 0);
  }
}

TEST_CASE("a failed cache write fails the flush, reads go on") {
  Rig r(4 * kMiB, format::kMinCacheSize);
  r.Open();
  r.Write(0, 8192);
  REQUIRE(r.e->Flush().ok());
  r.cache->fail_write_after = 0;
  r.Write(8192, 4096);
  CHECK(r.e->Flush().code() == Status::Code::kIOError);
  CHECK(r.e->Stats().failed);
  r.CheckRange(0, 12288);  // still served, from RAM and cache
  uint8_t buf[4096] = {};
  CHECK(!r.e->Write(0, buf, 4096).ok());
  CHECK(!r.e->Flush().ok());
}

TEST_CASE("concurrent writers and readers") {
  Rig r(8 * kMiB, format::kMinCacheSize);
  r.opts.nr_ram_buffers = 3;
  r.Open();
  const int kThreads = 4;
  std::vector<std::thread> ts;
  std::atomic<bool> bad{false};
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&, t] {
      std::mt19937_64 g(t);
      const uint64_t region = r.model.size() / kThreads;
      std::vector<uint8_t> mine(region, 0), buf(region);
      for (int i = 0; i < 800; i++) {
        uint64_t off = g() % (region - 10000);
        size_t len = 1 + g() % 9000;
        for (size_t k = 0; k < len; k++) buf[k] = uint8_t(g());
        if (!r.e->Write(t * region + off, buf.data(), len).ok()) bad = true;
        std::memcpy(mine.data() + off, buf.data(), len);
        if (i % 64 == 0 && !r.e->Flush().ok()) bad = true;
        if (i % 16 == 0) {
          if (!r.e->Read(t * region, buf.data(), region).ok()) bad = true;
          if (buf != mine) bad = true;
        }
      }
      std::memcpy(r.model.data() + t * region, mine.data(), region);
    });
  }
  for (auto& t : ts) t.join();
  CHECK_FALSE(bad.load());
  r.CheckAll();
  r.Close();
  r.Open();
  r.CheckAll();
}

namespace {

// Holds back writes at or beyond `from` while closed.
class GateDevice final : public Device {
 public:
  GateDevice(std::shared_ptr<MemDisk> d, uint64_t from) : inner_(std::move(d)), from_(from) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override { return inner_.ReadAt(off, buf, len); }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    if (off >= from_) {
      std::unique_lock<std::mutex> l(mu_);
      waiting_++;
      cv_.notify_all();
      cv_.wait(l, [&] { return open_; });
      waiting_--;
    }
    return inner_.WriteAt(off, buf, len);
  }
  Status Sync() override { return inner_.Sync(); }
  Status Discard(uint64_t off, uint64_t len) override { return inner_.Discard(off, len); }
  uint64_t Size() const override { return inner_.Size(); }
  std::string Name() const override { return inner_.Name(); }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitForWriter() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return waiting_ > 0; });
  }

 private:
  MemDevice inner_;
  const uint64_t from_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
};

}  // namespace

TEST_CASE("prefilling a new cache never writes zeros where the log writes") {
  Rig r(8 * kMiB, 8 * kMiB);
  r.opts.background = false;
  r.opts.prefill_new_cache = true;
  auto gate = std::make_unique<GateDevice>(r.cache, format::kSegmentsOffset);
  GateDevice* g = gate.get();
  r.Open(std::move(gate));
  CHECK(r.e->Stats().prefilling);
  g->WaitForWriter();  // the prefill is inside its write of the first segment
  std::atomic<bool> returned{false};
  std::thread writer([&] {
    r.Fill(0, 4096, 0x61);  // needs the first segment
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_MESSAGE(!returned, "the log took the segment the prefill was zeroing");
  g->Open();
  writer.join();
  for (int i = 1; i < 400; i++) r.Fill(uint64_t(i) * 4096, 4096, uint8_t(i));
  REQUIRE(r.e->Flush().ok());
  for (int i = 0; i < 1000 && r.e->Stats().prefilling; i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EngineStats s = r.e->Stats();
  CHECK(!s.prefilling);
  CHECK(s.cache_prefill_bytes >= format::kSegmentSize);
  CHECK(s.cache_prefill_bytes <= s.nr_segments * format::kSegmentSize);
  r.CheckAll();
  r.Close();
  r.opts.threads = false;
  r.Open();  // replay: every block is where the log put it
  r.CheckAll();
}
