// The ack log's ring alone (log/ack_log.h): append, scan, trim, wrap, and
// a death at every step of an append.
#include "log/ack_log.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

using namespace wbfs;
using wbfs::log::AckLog;
using wbfs::log::AckRecord;
using wbfs::log::kAckBlockSize;

namespace {

// A 4096-aligned region of `slots` slots, zero-filled like a fresh memfd.
struct Region {
  explicit Region(uint64_t slots) : size(AckLog::BytesFor(slots)) {
    base = static_cast<uint8_t*>(std::aligned_alloc(4096, size));
    std::memset(base, 0, size);
  }
  Region(const Region& o) : size(o.size) {
    base = static_cast<uint8_t*>(std::aligned_alloc(4096, size));
    std::memcpy(base, o.base, size);
  }
  Region& operator=(const Region&) = delete;
  ~Region() { std::free(base); }
  uint8_t* base;
  size_t size;
};

std::vector<uint8_t> Block(uint64_t n) {
  std::vector<uint8_t> b(kAckBlockSize);
  for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<uint8_t>(n * 131 + i * 7 + (i >> 9));
  return b;
}

// The sector mask the tests give the record of a block at `offset`.
uint32_t Mask(uint64_t offset) { return static_cast<uint32_t>((offset / 4096) % 255 + 1); }

// What a new process finds in `r`.
std::vector<AckRecord> ScanOf(const Region& r) {
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  std::vector<AckRecord> out;
  if (a.formatted()) a.Scan(&out);
  return out;
}

struct Appended {
  uint64_t offset, tag;
  bool discard;
};

// The scan holds exactly `want` (offset, tag, data) in order.
void CheckScan(const Region& r, const std::vector<Appended>& want) {
  std::vector<AckRecord> got = ScanOf(r);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); i++) {
    CHECK(got[i].offset == want[i].offset);
    CHECK(got[i].tag == want[i].tag);
    if (want[i].discard) {
      CHECK(got[i].kind == AckRecord::kDiscard);
      CHECK(got[i].data.empty());
    } else {
      CHECK(got[i].kind == AckRecord::kWrite);
      CHECK(got[i].mask == Mask(want[i].offset));
      CHECK(got[i].data == Block(want[i].offset));
    }
  }
}

}  // namespace

TEST_CASE("ack log: a zeroed region is no log; Format makes an empty one") {
  Region r(8);
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  CHECK_FALSE(a.formatted());
  REQUIRE(a.Format(42).ok());
  CHECK(a.capacity() == 8);
  CHECK(a.LiveCount() == 0);
  AckLog b(r.base, r.size);
  REQUIRE(b.Attach().ok());
  CHECK(b.formatted());
  CHECK(b.nonce() == 42);
  CHECK(b.capacity() == 8);
  CHECK(ScanOf(r).empty());
}

TEST_CASE("ack log: SlotsFor and BytesFor agree") {
  for (uint64_t n : {1u, 2u, 63u, 64u, 65u, 4096u}) {
    CHECK(AckLog::SlotsFor(AckLog::BytesFor(n)) == n);
    CHECK(AckLog::SlotsFor(AckLog::BytesFor(n) - 1) == n - 1);
  }
  Region r(1);
  AckLog a(r.base, AckLog::BytesFor(1) - 1);
  REQUIRE(a.Attach().ok());
  CHECK_FALSE(a.Format(1).ok());
}

TEST_CASE("ack log: append, scan, trim by tag, and wrap around the ring") {
  Region r(8);
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  REQUIRE(a.Format(7).ok());
  std::vector<Appended> live;
  uint64_t tag = 1, n = 0;
  for (int round = 0; round < 40; round++) {
    // Append until full, several records per tag, a discard now and then.
    while (!a.Full()) {
      const bool discard = n % 5 == 4;
      const auto b = Block(n * 4096);
      const uint64_t seq = a.Append(discard ? AckRecord::kDiscard : AckRecord::kWrite, n * 4096,
                                    discard ? 8192 : 4096, discard ? 0 : Mask(n * 4096), tag,
                                    discard ? nullptr : b.data());
      CHECK(seq != 0);
      live.push_back({n * 4096, tag, discard});
      n++;
      if (n % 3 == 0) tag++;
    }
    CHECK(a.LiveCount() == 8);
    CheckScan(r, live);
    // Trim the oldest tag, and sometimes all.
    const uint64_t upto = round % 4 == 3 ? tag : a.OldestTag();
    a.Trim(upto);
    while (!live.empty() && live.front().tag <= upto) live.erase(live.begin());
    CHECK(a.LiveCount() == live.size());
    CheckScan(r, live);
  }
  CHECK(n > 8 * 10);  // many laps
}

TEST_CASE("ack log: a new process continues after the records it scanned") {
  Region r(4);
  {
    AckLog a(r.base, r.size);
    REQUIRE(a.Attach().ok());
    REQUIRE(a.Format(9).ok());
    for (uint64_t i = 0; i < 3; i++)
      a.Append(AckRecord::kWrite, i * 4096, 4096, Mask(i * 4096), 1, Block(i * 4096).data());
    a.Trim(0);  // nothing
  }
  AckLog b(r.base, r.size);
  REQUIRE(b.Attach().ok());
  std::vector<AckRecord> recs;
  b.Scan(&recs);
  REQUIRE(recs.size() == 3);
  CHECK(b.LiveCount() == 3);
  b.Reset();
  CHECK(b.LiveCount() == 0);
  CHECK(ScanOf(r).empty());
  // The next records take the seqs after the old ones; the old ones never come back.
  for (uint64_t i = 10; i < 14; i++)
    b.Append(AckRecord::kWrite, i * 4096, 4096, Mask(i * 4096), 2, Block(i * 4096).data());
  CheckScan(
      r,
      {{10 * 4096, 2, false}, {11 * 4096, 2, false}, {12 * 4096, 2, false}, {13 * 4096, 2, false}});
}

// For every step of an append (and every record of a run that wraps the
// ring), a death there: the region as left is scanned by a new process.
// Every record appended before is there, the interrupted one is whole or
// absent, and no record differs from what was appended.
TEST_CASE(
    "ack log: a death at every step of an append loses nothing acknowledged and tears nothing") {
  Region r(5);
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  REQUIRE(a.Format(3).ok());
  std::vector<Appended> live;
  int torn_whole = 0, torn_absent = 0;
  for (uint64_t n = 0; n < 17; n++) {
    if (a.Full()) {
      a.Trim(live.front().tag);
      live.erase(live.begin());
    }
    const bool discard = n % 4 == 3;
    const auto b = Block(n * 4096);
    const AckRecord::Kind kind = discard ? AckRecord::kDiscard : AckRecord::kWrite;
    for (int stop = 0; stop <= AckLog::kAppendSteps; stop++) {
      // Append on a copy of the region, dying before step `stop`.
      Region copy(r);
      AckLog c(copy.base, copy.size);
      REQUIRE(c.Attach().ok());
      std::vector<AckRecord> ignored;
      c.Scan(&ignored);
      AckLog::StepHook hook = [&](int step) { return step < stop; };
      const uint64_t seq = c.Append(kind, n * 4096, 4096, discard ? 0 : Mask(n * 4096), n,
                                    discard ? nullptr : b.data(), &hook);
      CHECK((seq != 0) == (stop == AckLog::kAppendSteps));
      std::vector<AckRecord> got = ScanOf(copy);
      REQUIRE(got.size() >= live.size());
      REQUIRE(got.size() <= live.size() + 1);
      std::vector<Appended> want = live;
      if (got.size() == live.size() + 1) {
        want.push_back({n * 4096, n, discard});
        torn_whole++;
      } else {
        torn_absent++;
      }
      CheckScan(copy, want);
      // Only the last step (the seq store) makes the record count.
      CHECK((got.size() == live.size() + 1) == (stop == AckLog::kAppendSteps));
    }
    REQUIRE(a.Append(kind, n * 4096, 4096, discard ? 0 : Mask(n * 4096), n,
                     discard ? nullptr : b.data()) != 0);
    live.push_back({n * 4096, n, discard});
    CheckScan(r, live);
  }
  CHECK(torn_whole == 17);
  CHECK(torn_absent == 17 * AckLog::kAppendSteps);
}

TEST_CASE("ack log: a block changed after its record is rejected by the crc, and ends the log") {
  Region r(8);
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  REQUIRE(a.Format(5).ok());
  for (uint64_t i = 0; i < 4; i++)
    a.Append(AckRecord::kWrite, i * 4096, 4096, Mask(i * 4096), i, Block(i * 4096).data());
  CheckScan(r, {{0, 0, false}, {4096, 1, false}, {8192, 2, false}, {12288, 3, false}});
  const size_t data_off = AckLog::kHeaderBytes + 4096;  // 8 slot headers round up to one block
  // Every byte of record 3's block (seq 3, slot 3), one at a time.
  std::mt19937 g(1);
  for (size_t i = 0; i < kAckBlockSize; i += 1 + g() % 61) {
    Region copy(r);
    copy.base[data_off + 3 * kAckBlockSize + i] ^= 0x10;
    CheckScan(copy, {{0, 0, false},
                     {4096, 1, false}});  // the torn one and everything after it end the log
  }
}

TEST_CASE("ack log: a torn record header is rejected; a bad region header is refused") {
  Region r(8);
  AckLog a(r.base, r.size);
  REQUIRE(a.Attach().ok());
  REQUIRE(a.Format(5).ok());
  for (uint64_t i = 0; i < 3; i++)
    a.Append(AckRecord::kWrite, i * 4096, 4096, Mask(i * 4096), i, Block(i * 4096).data());
  // Every byte of the third record's 44 used header bytes (seq 3, slot 3).
  for (size_t i = 0; i < 44; i++) {
    Region copy(r);
    copy.base[AckLog::kHeaderBytes + 3 * AckLog::kSlotHeaderBytes + i] ^= 0x01;
    CheckScan(copy, {{0, 0, false}, {4096, 1, false}});
  }
  // Every byte of the region header's first 44: refused or, for the head
  // word, a different start of the log; never a crash.
  for (size_t i = 0; i < 44; i++) {
    Region copy(r);
    copy.base[i] ^= 0x04;
    AckLog b(copy.base, copy.size);
    Status st = b.Attach();
    if (i >= 32 && i < 40) {
      CHECK(st.ok());  // head: not checksummed, one atomic word
    } else {
      CHECK_FALSE(st.ok());
    }
  }
}
