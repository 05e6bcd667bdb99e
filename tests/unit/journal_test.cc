// The writeback journal: its format, recovery after a crash at each step,
// and the engine's journaled writeback (the backing alone is always the
// image at some flush point).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "journal/journal.h"
#include "support/engine_rig.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

constexpr size_t kBacking = 1 << 20;

std::unique_ptr<journal::Journal> OpenJournal(const std::shared_ptr<MemDisk>& d) {
  auto j = journal::Journal::Open(Dev(d), kBacking);
  REQUIRE_MESSAGE(j.ok(), j.status().ToString());
  return std::move(j.value());
}

// A unit writing `v` over [off, off + len) and punching `punch` (if any).
struct TestUnit {
  std::vector<uint8_t> data;
  journal::MemoryData md{nullptr};
  journal::Unit u;
  TestUnit(uint64_t off, size_t len, uint8_t v, uint64_t seq) : data(len, v), md(data.data()) {
    u.point = {7, seq, seq, true, 1000 * seq};
    u.runs.push_back({off, len});
    u.data = &md;
    u.data_len = len;
  }
};

// Loses every write not yet synced.
void PowerCut(MemDisk& d) {
  d.pending.clear();
  d.data = d.durable;
}

}  // namespace

TEST_CASE("journal format: states and entries round-trip; damage is detected") {
  format::JournalState s;
  s.seq = 5;
  s.applied_entry = 4;
  s.backing_size = kBacking;
  s.point = {11, 99, 12, true, 123456};
  std::vector<uint8_t> b(4096);
  format::EncodeJournalState(s, b.data());
  format::JournalState d;
  REQUIRE(format::DecodeJournalState(b.data(), &d).ok());
  CHECK(d.applied_entry == 4);
  CHECK(d.point.chunk_seq == 99);
  CHECK(d.point.whole);
  CHECK(d.point.time_ms == 123456);
  b[40] ^= 1;
  CHECK(!format::DecodeJournalState(b.data(), &d).ok());

  format::JournalEntryHeader h;
  h.seq = 3;
  h.backing_size = kBacking;
  h.point = {11, 100, 13, false, 5};
  h.runs = {{4096, 512}, {65536, 8192}};
  h.punches = {{0, 4096}};
  h.data_len = 512 + 8192;
  h.data_crc = 42;
  std::vector<uint8_t> e;
  format::EncodeJournalEntryHeader(h, &e);
  CHECK(e.size() == 4096);
  format::JournalEntryHeader g;
  REQUIRE(format::DecodeJournalEntryFixed(e.data(), &g).ok());
  REQUIRE(format::DecodeJournalEntryHeader(e.data(), &g).ok());
  CHECK(g.runs.size() == 2);
  CHECK(g.runs[1].offset == 65536);
  CHECK(g.punches[0].length == 4096);
  CHECK(g.point.segment_id == 13);
  e[200] ^= 1;
  REQUIRE(format::DecodeJournalEntryFixed(e.data(), &g).ok());
  CHECK(!format::DecodeJournalEntryHeader(e.data(), &g).ok());
  // A range outside the backing is refused even with a good checksum.
  h.runs = {{kBacking, 512}};
  h.data_len = 512;
  format::EncodeJournalEntryHeader(h, &e);
  REQUIRE(format::DecodeJournalEntryFixed(e.data(), &g).ok());
  CHECK(!format::DecodeJournalEntryHeader(e.data(), &g).ok());
}

TEST_CASE("journal: a unit is applied and retired; reopening replays nothing") {
  auto jd = std::make_shared<MemDisk>(4 << 20, "journal");
  auto bd = std::make_shared<MemDisk>(kBacking, "backing");
  auto j = OpenJournal(jd);
  TestUnit t(8192, 4096, 0xA1, 1);
  REQUIRE(j->Write(*Dev(bd), t.u, nullptr).ok());
  CHECK(bd->durable[8192] == 0xA1);
  CHECK(j->state().applied_entry == 1);
  CHECK(j->state().point.chunk_seq == 1);
  j.reset();
  std::memset(bd->data.data() + 8192, 0xEE, 4096);  // written outside the journal since
  bd->durable = bd->data;
  auto j2 = OpenJournal(jd);
  auto rep = j2->Recover(*Dev(bd));
  REQUIRE(rep.ok());
  CHECK(!rep.value().replayed);
  CHECK(bd->data[8192] == 0xEE);  // a retired unit is never applied again
  CHECK(rep.value().state.point.chunk_seq == 1);
}

TEST_CASE("journal: an entry larger than the pieces it is written and checked in survives a crash") {
  // 20 MiB of data (three 8 MiB pieces, the last short) in 5 runs; the
  // power goes after the entry's sync, before the backing is written.
  constexpr uint64_t kBig = 32 << 20;
  auto jd = std::make_shared<MemDisk>(24 << 20, "journal");
  auto bd = std::make_shared<MemDisk>(kBig, "backing");
  auto power = std::make_shared<PowerPlan>();
  jd->power = bd->power = power;
  auto j = journal::Journal::Open(Dev(jd), kBig);
  REQUIRE(j.ok());
  std::vector<uint8_t> data(20 << 20);
  std::mt19937_64 rng(3);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  journal::MemoryData md(data.data());
  journal::Unit u;
  u.point = {7, 1, 1, true, 1000};
  for (uint64_t k = 0; k < 5; k++) u.runs.push_back({k * (6 << 20), 4 << 20});
  u.data = &md;
  u.data_len = data.size();
  power->ops_left = 4;  // 3 data pieces, the header; the sync is cut
  CHECK_FALSE(j.value()->Write(*Dev(bd), u, nullptr).ok());
  j.value().reset();
  jd->KeepAll();  // the entry made it (as if the sync had)
  PowerCut(*jd);
  PowerCut(*bd);
  power->Restore();
  auto j2 = journal::Journal::Open(Dev(jd), kBig);
  REQUIRE(j2.ok());
  auto rep = j2.value()->Recover(*Dev(bd));
  REQUIRE_MESSAGE(rep.ok(), rep.status().ToString());
  CHECK(rep.value().replayed);
  CHECK(rep.value().bytes == data.size());
  for (uint64_t k = 0; k < 5; k++) {
    REQUIRE(std::equal(data.begin() + static_cast<long>(k * (4 << 20)), data.begin() + static_cast<long>((k + 1) * (4 << 20)),
                       bd->durable.begin() + static_cast<long>(k * (6 << 20))));
  }
}

TEST_CASE("journal: an unmount while an entry's data is written leaves no entry and the backing as it was") {
  auto jd = std::make_shared<MemDisk>(4 << 20, "journal");
  auto bd = std::make_shared<MemDisk>(kBacking, "backing");
  auto j = OpenJournal(jd);
  TestUnit a(0, 8192, 0xA1, 1);
  std::atomic<bool> abort{true};
  const Status st = j->Write(*Dev(bd), a.u, &abort);
  CHECK(st.code() == Status::Code::kFailed);
  CHECK_FALSE(j->pending());
  CHECK(bd->writes == 0);
  j.reset();
  auto j2 = OpenJournal(jd);
  auto rep = j2->Recover(*Dev(bd));
  REQUIRE(rep.ok());
  CHECK_FALSE(rep.value().replayed);
  abort = false;
  REQUIRE(j2->Write(*Dev(bd), a.u, &abort).ok());  // done again later
  CHECK(bd->data[0] == 0xA1);
}

TEST_CASE("journal: a crash after the entry is durable replays it; a torn entry changes nothing") {
  for (int variant = 0; variant < 3; variant++) {
    CAPTURE(variant);
    auto jd = std::make_shared<MemDisk>(4 << 20, "journal");
    auto bd = std::make_shared<MemDisk>(kBacking, "backing");
    auto power = std::make_shared<PowerPlan>();
    jd->power = bd->power = power;
    auto j = OpenJournal(jd);
    TestUnit a(0, 8192, 0xA1, 1);
    REQUIRE(j->Write(*Dev(bd), a.u, nullptr).ok());
    // Unit 2: variant 0 cuts the power after the journal sync, during the
    // backing writes (ops: entry data, entry header, sync = 3; then the
    // first backing write lands and the second is cut); variants 1 and 2
    // cut it at the entry's sync, with the header landed but not the data
    // (1) or the data but not the header (2).
    TestUnit b(4096, 8192, 0xB2, 2);
    b.u.runs = {{4096, 4096}, {65536, 4096}};
    power->ops_left = variant == 0 ? 4 : 2;
    CHECK(!j->Write(*Dev(bd), b.u, nullptr).ok());
    j.reset();
    if (variant == 0) {
      // A partly applied unit: the first run landed (durably, say), the second did not.
      bd->KeepAll();
      CHECK(bd->durable[4096] == 0xB2);
      CHECK(bd->durable[65536] == 0);
    } else {
      REQUIRE(jd->pending.size() == 2);  // the data, then the header
      jd->pending.erase(jd->pending.begin() + (variant == 1 ? 0 : 1));
      jd->KeepAll();
      PowerCut(*jd);  // what reads see: the durable bytes only
      PowerCut(*bd);
    }
    power->Restore();
    auto j2 = OpenJournal(jd);
    auto rep = j2->Recover(*Dev(bd));
    REQUIRE_MESSAGE(rep.ok(), rep.status().ToString());
    if (variant == 0) {
      CHECK(rep.value().replayed);
      CHECK(bd->durable[4096] == 0xB2);
      CHECK(bd->durable[65536] == 0xB2);  // completed: the image at point 2
      CHECK(rep.value().state.point.chunk_seq == 2);
    } else {
      CHECK(!rep.value().replayed);
      // A new header over old data fails its data checksum; new data under
      // the old (applied) header is no entry at all.
      CHECK(rep.value().torn_entry == (variant == 1));
      CHECK(bd->durable[4096] == 0xA1);  // untouched: the image at point 1
      CHECK(bd->durable[65536] == 0);
      CHECK(rep.value().state.point.chunk_seq == 1);
    }
    // The journal goes on working after either.
    TestUnit c(65536, 4096, 0xC3, 3);
    REQUIRE(j2->Write(*Dev(bd), c.u, nullptr).ok());
    CHECK(j2->state().point.chunk_seq == 3);
  }
}

TEST_CASE("journal: refuses garbage and a journal of another backing, without writing") {
  auto jd = std::make_shared<MemDisk>(64 << 10, "journal");
  for (size_t i = 0; i < jd->data.size(); i++) jd->data[i] = uint8_t(i * 7 + 1);
  jd->durable = jd->data;
  auto before = jd->data;
  auto j = journal::Journal::Open(Dev(jd), kBacking);
  CHECK(!j.ok());
  CHECK(jd->data == before);
  auto jd2 = std::make_shared<MemDisk>(64 << 10, "journal");
  REQUIRE(journal::Journal::Open(Dev(jd2), kBacking).ok());
  auto other = journal::Journal::Open(Dev(jd2), 2 * kBacking);
  REQUIRE(!other.ok());
  CHECK(other.status().message().find("backing of") != std::string::npos);
}

namespace {

// A cache of 4 segments more than the smallest, a 16 MiB journal disk; no
// threads.
struct JRig : EngineRig {
  JRig() : EngineRig(2 << 20, format::kMinCacheSize + 4 * format::kSegmentSize) {
    AddJournal(16 << 20);
    opts.threads = false;
    opts.background = false;
  }
  // Fills the rest of the current segment with blocks >= 200, so the next
  // write starts a new segment.
  void Seal() {
    for (int i = 0; i < 127; i++) FillBlock(200 + i, 0x5A);
  }
};

}  // namespace

TEST_CASE("journaled writeback applies superseded versions: the backing is a prefix of the log") {
  for (bool journal : {true, false}) {
    CAPTURE(journal);
    JRig r;
    r.with_journal = journal;
    r.Open();
    r.FillBlock(1, 0x11);  // segment 1: block 1 = 0x11, block 2 = 0x21
    r.FillBlock(2, 0x21);
    r.Seal();
    r.FillBlock(2, 0x22);  // segment 2 (or later): block 2 rewritten
    REQUIRE(r.e->Flush().ok());
    REQUIRE(r.e->WritebackOldest(1).ok());
    // After segment 1 alone, the image was block 1 = 0x11, block 2 = 0x21.
    CHECK(r.backing->durable[4096] == 0x11);
    if (journal) {
      CHECK(r.backing->durable[2 * 4096] == 0x21);
      CHECK(r.e->Stats().backing_point_seq > 0);
    } else {
      CHECK(r.backing->durable[2 * 4096] == 0);  // skipped: newer copy pending (a mix until then)
    }
    REQUIRE(r.e->WritebackAll().ok());
    CHECK(r.backing->durable[2 * 4096] == 0x22);
  }
}

TEST_CASE("after a crash, mount trusts the journal's flush point over a lagging record") {
  JRig r;
  r.Open();
  for (int i = 0; i < 3; i++) {
    r.FillBlock(i, uint8_t(0x30 + i));
    r.Seal();
  }
  REQUIRE(r.e->Flush().ok());
  REQUIRE(r.e->WritebackAll().ok());
  const uint64_t point = r.e->Stats().backing_point_seq;
  CHECK(point > 0);
  // Power cut: the record (written at unmount or wrap) still says nothing
  // was written back.
  r.PowerCutLosingUnsynced();
  r.Open();
  EngineStats s = r.e->Stats();
  CHECK(s.nr_dirty_cache_blocks == 0);  // nothing to write back again
  CHECK(s.backing_point_seq == point);
  CHECK(s.oldest_unapplied_ms == 0);
  uint8_t v = 0;
  REQUIRE(r.e->Read(2 * 4096, &v, 1).ok());
  CHECK(v == 0x32);
}

TEST_CASE("status reports the dirty age; max_dirty_age forces writeback of old changes") {
  JRig r;
  r.opts.threads = true;
  r.opts.background = true;
  r.opts.tunables.writeback_threshold = 0;  // only max_dirty_age writes back
  r.Open();
  r.FillBlock(5, 0x55);
  REQUIRE(r.e->Flush().ok());
  EngineStats s = r.e->Stats();
  CHECK(s.oldest_unapplied_ms > 0);
  CHECK(s.nr_dirty_cache_blocks == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(r.e->Stats().nr_dirty_cache_blocks == 1);  // off by default: stays dirty
  REQUIRE(r.e->SetTunable("max_dirty_age", 1).ok());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r.e->Stats().nr_dirty_cache_blocks > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  s = r.e->Stats();
  CHECK(s.nr_dirty_cache_blocks == 0);
  CHECK(s.oldest_unapplied_ms == 0);
  CHECK(s.backing_point_seq > 0);
  CHECK(r.backing->Durable(5 * 4096) == 0x55);
}

TEST_CASE("journal: a unit whose apply failed is completed before the next one is journaled") {
  auto jd = std::make_shared<MemDisk>(4 << 20, "journal");
  auto bd = std::make_shared<MemDisk>(kBacking, "backing");
  auto j = OpenJournal(jd);
  TestUnit a(0, 8192, 0xA1, 1);
  a.u.runs = {{0, 4096}, {65536, 4096}};
  bd->fail_write_after = 1;  // the second run fails: the backing holds half of unit 1
  CHECK(!j->Write(*Dev(bd), a.u, nullptr).ok());
  bd->ClearFaults();
  CHECK(bd->data[65536] == 0);
  // The next unit must not overwrite the entry before unit 1 is complete
  // (a torn entry 2 would leave the backing a mix for good).
  TestUnit b(131072, 4096, 0xB2, 2);
  REQUIRE(j->Write(*Dev(bd), b.u, nullptr).ok());
  CHECK(bd->durable[0] == 0xA1);
  CHECK(bd->durable[65536] == 0xA1);
  CHECK(bd->durable[131072] == 0xB2);
  CHECK(j->state().point.chunk_seq == 2);
}

TEST_CASE("a journaled unit whose apply failed is covered whole by the next unit") {
  JRig r;
  r.Open();
  r.FillBlock(1, 0x11);  // segment 1
  r.Seal();
  r.FillBlock(1, 0x12);  // segment 2
  r.FillBlock(100, 0x22);
  r.Seal();
  REQUIRE(r.e->Flush().ok());
  r.backing->fail_write_after = 1;  // the unit's second run fails: half applied
  CHECK(!r.e->WritebackOldest(2).ok());
  r.backing->ClearFaults();
  // A smaller unit (segment 1 alone) would write block 1 = 0x11 over the
  // completed first unit, next to block 100 = 0x22: a mix of two points.
  REQUIRE(r.e->WritebackOldest(1).ok());
  const uint8_t b1 = r.backing->data[4096], b100 = r.backing->data[100 * 4096];
  CHECK_MESSAGE((b100 != 0x22 || b1 == 0x12), "block 1 " << int(b1) << ", block 100 " << int(b100));
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(r.backing->durable[4096] == 0x12);
}

TEST_CASE("writeback fills small gaps between runs with the backing's data, never across a punch") {
  JRig r;
  for (size_t i = 0; i < r.backing->data.size(); i++) r.backing->data[i] = uint8_t(i / 4096 + 1);
  r.backing->durable = r.backing->data;
  r.Open();
  r.FillBlock(10, 0xA0);
  r.FillBlock(12, 0xA2);  // block 11 between: filled with its own backing data
  REQUIRE(r.e->Discard(14 * 4096, 4096).ok());
  r.FillBlock(16, 0xA6);  // block 14 punched between 12 and 16: no fill across it
  REQUIRE(r.e->WritebackAll().ok());
  CHECK(r.backing->durable[10 * 4096] == 0xA0);
  CHECK(r.backing->durable[11 * 4096] == 12);  // unchanged (rewritten as it was)
  CHECK(r.backing->durable[12 * 4096] == 0xA2);
  CHECK(r.backing->durable[13 * 4096] == 14);
  CHECK(r.backing->durable[14 * 4096] == 0);
  CHECK(r.backing->durable[16 * 4096] == 0xA6);
  // 10, 11, 12 joined (11 filled); 16 alone (13-15 not filled across the punch).
  EngineStats s = r.e->Stats();
  CHECK(s.backing_bytes_written == 4 * 4096);
  CHECK(s.backing_fill_bytes == 4096);
}

namespace {

// Records the backing's writes and punches as ApplyUnit issues them.
class RecordingDevice final : public Device {
 public:
  explicit RecordingDevice(std::shared_ptr<MemDisk> d) : inner_(d) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override { return inner_.ReadAt(off, buf, len); }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    writes.push_back({off, len});
    return inner_.WriteAt(off, buf, len);
  }
  Status Sync() override { return inner_.Sync(); }
  Status Discard(uint64_t off, uint64_t len) override {
    punches.push_back({off, len});
    return inner_.Discard(off, len);
  }
  uint64_t Size() const override { return inner_.Size(); }
  std::string Name() const override { return inner_.Name(); }
  // With depth > 1, as a network store: batches, applied last to first
  // (any order may happen there).
  size_t QueueDepth() const override { return depth; }
  Status WriteBatch(const Write* w, size_t n) override {
    largest_batch = std::max(largest_batch, n);
    for (size_t i = n; i-- > 0;) WBFS_RETURN_IF_ERROR(WriteAt(w[i].off, w[i].buf, w[i].len));
    return Status::OK();
  }
  std::vector<format::ByteRange> writes, punches;
  size_t depth = 1;
  size_t largest_batch = 0;

 private:
  MemDevice inner_;
};

}  // namespace

TEST_CASE("journal: an unmount once the entry is durable lets the apply finish (the next mount has nothing to redo)") {
  auto jd = std::make_shared<MemDisk>(4 << 20, "journal");
  auto bd = std::make_shared<MemDisk>(kBacking, "backing");
  auto j = OpenJournal(jd);
  TestUnit a(0, 4096, 0xA1, 1);
  a.u.runs = {{0, 2048}, {65536, 2048}};  // two writes on the backing
  std::atomic<bool> abort{false};
  // The backing's first write is the apply's: the unmount comes then.
  class Stopper final : public Device {
   public:
    Stopper(std::shared_ptr<MemDisk> d, std::atomic<bool>* a) : inner_(std::move(d)), abort_(a) {}
    Status ReadAt(uint64_t off, void* buf, size_t len) override { return inner_.ReadAt(off, buf, len); }
    Status WriteAt(uint64_t off, const void* buf, size_t len) override {
      *abort_ = true;
      return inner_.WriteAt(off, buf, len);
    }
    Status Sync() override { return inner_.Sync(); }
    Status Discard(uint64_t off, uint64_t len) override { return inner_.Discard(off, len); }
    uint64_t Size() const override { return inner_.Size(); }
    std::string Name() const override { return inner_.Name(); }

   private:
    MemDevice inner_;
    std::atomic<bool>* abort_;
  } backing(bd, &abort);
  REQUIRE(j->Write(backing, a.u, &abort).ok());
  CHECK(abort);
  CHECK_FALSE(j->pending());
  CHECK(bd->durable[65536] == 0xA1);  // the second run too, and synced
  CHECK(j->state().point.chunk_seq == 1);
}

TEST_CASE("ApplyUnit: joined windows give the same image as run-by-run writes, bounded, never over a punch, in batches in any order") {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 300; round++) {
    // A random unit over 256 KiB: sorted disjoint sector runs, a few punches.
    constexpr uint64_t kSize = 256 << 10;
    auto disk = std::make_shared<MemDisk>(kSize);
    for (size_t i = 0; i < kSize; i++) disk->data[i] = uint8_t(rng());
    disk->durable = disk->data;
    std::vector<uint8_t> want = disk->data;
    journal::Unit u;
    for (int k = 0, n = int(rng() % 3); k < n; k++) {
      uint64_t off = rng() % 512 * 512, len = (1 + rng() % 16) * 512;
      u.punches.push_back({off, std::min(len, kSize - off)});
    }
    for (const auto& p : u.punches) std::memset(want.data() + p.offset, 0, p.length);
    std::vector<uint8_t> data;
    for (uint64_t at = rng() % 8 * 512; at < kSize;) {
      uint64_t len = std::min<uint64_t>((1 + rng() % 8) * 512, kSize - at);
      for (uint64_t i = 0; i < len; i++) data.push_back(uint8_t(rng()));
      std::memcpy(want.data() + at, data.data() + data.size() - len, len);
      u.runs.push_back({at, len});
      at += len + (1 + rng() % 64) * 512;
    }
    journal::MemoryData md(data.data());
    u.data = &md;
    u.data_len = data.size();
    journal::FillPolicy fill;
    fill.max_gap = (rng() % 3) * 4096;
    fill.max_window = (1 + rng() % 8) * 8192;
    RecordingDevice dev(disk);
    dev.depth = round % 2 ? 8 : 1;
    journal::ApplyStats stats;
    REQUIRE(journal::ApplyUnit(dev, u, nullptr, fill, &stats).ok());
    CHECK(dev.largest_batch == std::min<size_t>(dev.depth, dev.writes.size()));
    REQUIRE(disk->data == want);
    REQUIRE(disk->durable == want);
    CHECK(stats.bytes_written - stats.bytes_filled == u.data_len);
    CHECK(stats.writes == dev.writes.size());
    CHECK(dev.punches.size() == u.punches.size());
    // Outside the runs, a write only rewrites bytes it found; never a
    // punched one (that would turn a hole into written zeros).
    std::vector<bool> in_run(kSize), punched(kSize);
    for (const auto& r : u.runs) std::fill(in_run.begin() + long(r.offset), in_run.begin() + long(r.offset + r.length), true);
    for (const auto& p : u.punches) std::fill(punched.begin() + long(p.offset), punched.begin() + long(p.offset + p.length), true);
    const size_t writes = dev.writes.size();
    for (const auto& wr : dev.writes) {
      bool single_run = false;
      for (const auto& r : u.runs) single_run = single_run || (r.offset == wr.offset && r.length == wr.length);
      CHECK((single_run || wr.length <= fill.max_window));
      for (uint64_t b = wr.offset; b < wr.offset + wr.length; b++) {
        if (!in_run[b] && punched[b]) FAIL("round " << round << ": the write at " << wr.offset << "+" << wr.length << " covers punched byte " << b);
      }
    }
    const uint64_t max_gap = dev.depth > 1 ? 0 : fill.max_gap;  // no windows with a queue
    if (max_gap == 0) CHECK(writes == u.runs.size());
    // Two neighbours that may be joined are joined.
    bool joinable = false;
    for (size_t i = 0; i + 1 < u.runs.size(); i++) {
      const auto &a = u.runs[i], &b = u.runs[i + 1];
      bool clear = true;
      for (uint64_t x = a.offset + a.length; x < b.offset; x++) clear = clear && !punched[x];
      joinable = joinable || (max_gap > 0 && b.offset - (a.offset + a.length) <= max_gap &&
                              b.offset + b.length - a.offset <= fill.max_window && clear);
    }
    CHECK(writes <= u.runs.size());
    if (joinable) CHECK(writes < u.runs.size());
  }
}

TEST_CASE("ApplyUnit: a sparse unit becomes few large writes") {
  // 64 blocks, one every 64 KiB over 4 MiB: 64 writes run by run; joined
  // with a 64 KiB gap into 1 MiB windows, 4 writes (and 4 reads).
  constexpr uint64_t kSize = 4 << 20;
  auto disk = std::make_shared<MemDisk>(kSize);
  std::vector<uint8_t> data(64 * 4096, 0x5A);
  journal::Unit u;
  for (uint64_t k = 0; k < 64; k++) u.runs.push_back({k * 65536, 4096});
  journal::MemoryData md(data.data());
  u.data = &md;
  u.data_len = data.size();
  journal::FillPolicy fill;
  fill.max_gap = 64 << 10;
  fill.max_window = 1 << 20;
  RecordingDevice dev(disk);
  journal::ApplyStats stats;
  REQUIRE(journal::ApplyUnit(dev, u, nullptr, fill, &stats).ok());
  CHECK(dev.writes.size() == 4);
  CHECK(stats.writes == 4);
  CHECK(stats.bytes_filled == stats.bytes_written - 64 * 4096);
  for (uint64_t k = 0; k < 64; k++) CHECK(disk->durable[k * 65536] == 0x5A);
  CHECK(disk->durable[4096] == 0);
}
