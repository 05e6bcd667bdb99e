// EngineRig: an engine over in-memory disks, the one rig of the unit tests.
//
// It holds a backing and a cache MemDisk of the sizes given (a journal disk
// too once AddJournal is called), the EngineOptions the next Open uses,
// the engine while it is open and a byte model of the image. The data
// helpers keep the model up to date (Write, Fill...) and compare the image
// with it (CheckRange, Matches). An engine ends in one of four ways: Close
// (clean), ProcessCrash, PowerCut, PowerCutLosingUnsynced. Any of them can
// be followed by Open, which replays what the disks kept.
//
// A test file with its own defaults (sizes, options, a seed, a backing
// pattern) derives a small struct that sets them in its constructor.
#ifndef WBFS_TESTS_SUPPORT_ENGINE_RIG_H_
#define WBFS_TESTS_SUPPORT_ENGINE_RIG_H_

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/mem_device.h"
#include "wbfs/engine.h"

namespace wbfs::test {

struct EngineRig {
  std::shared_ptr<MemDisk> backing, cache;
  std::shared_ptr<MemDisk> jdev;  // the journal disk: null until AddJournal
  bool with_journal = true;       // whether Open passes jdev (if any) to the engine
  EngineOptions opts;
  std::unique_ptr<Engine> e;
  std::vector<uint8_t> model;  // what the image must read back as
  std::mt19937_64 rng{1};      // the bytes Write writes

  // Blank (zeroed) disks; the model is zeros too.
  EngineRig(uint64_t backing_size, uint64_t cache_size)
      : backing(std::make_shared<MemDisk>(backing_size, "backing")),
        cache(std::make_shared<MemDisk>(cache_size, "cache")),
        model(backing_size, 0) {}
  EngineRig(const EngineRig&) = delete;
  EngineRig& operator=(const EngineRig&) = delete;

  void AddJournal(uint64_t size) { jdev = std::make_shared<MemDisk>(size, "journal"); }
  // Byte i of the backing (durably) and of the model is f(i).
  template <typename F>
  void SetBacking(F f) {
    for (size_t i = 0; i < model.size(); i++) backing->data[i] = model[i] = f(i);
    backing->durable = backing->data;
  }
  // Engine messages (opts.log) are kept; Logged counts them.
  void CaptureLog() {
    opts.log = [this](const std::string& m) {
      std::lock_guard<std::mutex> l(log_mu_);
      log_lines_.push_back(m);
    };
  }
  // How many logged messages contain `part`.
  size_t Logged(const std::string& part) {
    std::lock_guard<std::mutex> l(log_mu_);
    size_t n = 0;
    for (const std::string& m : log_lines_) n += m.find(part) != std::string::npos;
    return n;
  }

  // ---- opening and ending the engine

  // Engine::Open with opts, on `cache_dev` instead of the cache disk if
  // given, with the journal disk if there is one and with_journal is set.
  Result<std::unique_ptr<Engine>> TryOpen(std::unique_ptr<Device> cache_dev = nullptr) {
    return Engine::Open(opts, Dev(backing), cache_dev ? std::move(cache_dev) : Dev(cache),
                        jdev && with_journal ? Dev(jdev) : nullptr);
  }
  void Open(std::unique_ptr<Device> cache_dev = nullptr) {
    auto r = TryOpen(std::move(cache_dev));
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    e = std::move(r.value());
  }
  void Close() {
    REQUIRE(e->Close().ok());
    e.reset();
  }
  // The process dies: the engine's last calls fail and change nothing,
  // every write it made before is kept (unsynced ones too).
  void ProcessCrash() {
    Kill();
    for (MemDisk* d : Disks()) d->KeepAll();
  }
  // The power fails: each disk keeps what it synced plus a random part of
  // the rest, torn at sectors (MemDisk::Crash, in the order cache, backing,
  // journal, all from `g`).
  void PowerCut(std::mt19937_64& g) {
    Kill();
    for (MemDisk* d : Disks()) d->Crash(g);
  }
  void PowerCut(uint64_t seed) {
    std::mt19937_64 g(seed);
    PowerCut(g);
  }
  // The power fails and every write not yet synced is lost.
  void PowerCutLosingUnsynced() {
    Kill();
    for (MemDisk* d : Disks()) {
      std::lock_guard<std::mutex> l(d->mu);
      d->pending.clear();
      d->data = d->durable;
      d->frozen = false;
    }
  }

  // ---- data

  // Writes `len` random bytes (from rng) at `off`; the model follows.
  void Write(uint64_t off, size_t len) { REQUIRE(TryWrite(off, len).ok()); }
  // The same, for a write that may fail: the model follows only on success.
  Status TryWrite(uint64_t off, size_t len) {
    std::vector<uint8_t> b(len);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    Status st = e->Write(off, b.data(), len);
    if (st.ok()) std::memcpy(model.data() + off, b.data(), len);
    return st;
  }
  void WriteBlock(uint64_t block) { Write(block * 4096, 4096); }
  // Writes `len` bytes of value `v` at `off`; the model follows.
  void Fill(uint64_t off, size_t len, uint8_t v) {
    std::vector<uint8_t> b(len, v);
    REQUIRE(e->Write(off, b.data(), len).ok());
    std::memcpy(model.data() + off, b.data(), len);
  }
  void FillBlock(uint64_t block, uint8_t v) { Fill(block * 4096, 4096, v); }
  std::vector<uint8_t> Read(uint64_t off, size_t len) {
    std::vector<uint8_t> b(len);
    REQUIRE(e->Read(off, b.data(), len).ok());
    return b;
  }
  void ReadBlock(uint64_t block) { (void)Read(block * 4096, 4096); }
  uint8_t At(uint64_t off) {
    uint8_t b = 0;
    REQUIRE(e->Read(off, &b, 1).ok());
    return b;
  }
  // Whether the image's [off, off + len) is the model's.
  bool Matches(uint64_t off, size_t len) {
    return Read(off, len) == std::vector<uint8_t>(model.begin() + static_cast<long>(off),
                                                  model.begin() + static_cast<long>(off + len));
  }
  // Fails at the first byte of [off, off + len) that is not the model's.
  void CheckRange(uint64_t off, size_t len) {
    std::vector<uint8_t> buf = Read(off, len);
    for (size_t i = 0; i < len; i++) {
      if (buf[i] != model[off + i]) {
        FAIL("byte " << off + i << " is " << int(buf[i]) << ", expected " << int(model[off + i]));
      }
    }
  }
  void CheckAll() { CheckRange(0, model.size()); }

  // ---- statistics

  // One of the 16 counters, by StatName.
  uint64_t Stat(const char* name) {
    EngineStats s = e->Stats();
    for (unsigned i = 0; i < 16; i++) {
      if (StatName(i) == name) return s.stat[i];
    }
    FAIL("no stat " << name);
    return 0;
  }
  // Full-block read hits, on the cache and in the RAM buffer.
  uint64_t Hits() {
    EngineStats s = e->Stats();
    return s.stat[kStatHit | kStatFull] + s.stat[kStatHit | kStatBuffer | kStatFull];
  }
  // Waits (up to 3 s) until every staged read has been injected or cancelled.
  void Settle() {
    for (int i = 0; i < 300 && e->Stats().nr_staging > 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(e->Stats().nr_staging == 0);
  }

 private:
  std::vector<MemDisk*> Disks() {
    std::vector<MemDisk*> v{cache.get(), backing.get()};
    if (jdev) v.push_back(jdev.get());
    return v;
  }
  // The power is gone for the engine: its disks refuse its last writes.
  void Kill() {
    for (MemDisk* d : Disks()) d->Freeze();
    e.reset();
  }
  std::mutex log_mu_;
  std::vector<std::string> log_lines_;
};

}  // namespace wbfs::test

#endif  // WBFS_TESTS_SUPPORT_ENGINE_RIG_H_
