// The "dirty elsewhere" record (src/io/backing.h, src/cli/owner_record.h):
// its text, the refusal's decision and sentence, and its life over a
// mount, on an in-memory backing that keeps a record as an RBD image does.
#include <doctest/doctest.h>

#include <algorithm>

#include <cstring>
#include <memory>
#include <vector>

#include "cli/owner_record.h"
#include "io/backing.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

namespace wbfs {
namespace {

using test::Dev;
using test::MemDisk;
constexpr uint64_t kMiB = 1 << 20;

// A MemDevice that keeps an owner record, as RbdDevice does in the image's
// metadata. The text lives in `meta`, shared across opens.
struct Meta {
  bool present = false;
  std::string text;
  std::string given_up;  // the wbfs.given_up text, "" when none
  int sets = 0;
};

class SharedBacking final : public Device, public OwnerRecordStore {
 public:
  SharedBacking(std::shared_ptr<MemDisk> d, std::shared_ptr<Meta> m) : dev_(Dev(d)), meta_(std::move(m)) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override { return dev_->ReadAt(off, buf, len); }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override { return dev_->WriteAt(off, buf, len); }
  Status Sync() override { return dev_->Sync(); }
  Status Discard(uint64_t off, uint64_t len) override { return dev_->Discard(off, len); }
  uint64_t Size() const override { return dev_->Size(); }
  std::string Name() const override { return "rbd:pool/vm"; }

  Status GetOwnerRecord(OwnerRecord* r, std::string* raw) override {
    if (!meta_->present) return Status::NotFound("no record");
    if (raw != nullptr) *raw = meta_->text;
    return DecodeOwnerRecord(meta_->text, r);
  }
  Status SetOwnerRecord(const OwnerRecord& r) override {
    meta_->present = true;
    meta_->text = EncodeOwnerRecord(r);
    meta_->sets++;
    return Status::OK();
  }
  Status ClearOwnerRecord() override {
    meta_->present = false;
    meta_->text.clear();
    return Status::OK();
  }
  Status GetGivenUp(std::vector<uint64_t>* nonces) override {
    if (meta_->given_up.empty()) {
      nonces->clear();
      return Status::OK();
    }
    return DecodeGivenUp(meta_->given_up, nonces);
  }
  Status SetGivenUp(const std::vector<uint64_t>& nonces) override {
    meta_->given_up = EncodeGivenUp(nonces);
    return Status::OK();
  }

 private:
  std::unique_ptr<Device> dev_;
  std::shared_ptr<Meta> meta_;
};

std::unique_ptr<Device> Shared(const std::shared_ptr<MemDisk>& d, const std::shared_ptr<Meta>& m) {
  return std::make_unique<SharedBacking>(d, m);
}

void NoLog(int, const std::string&) {}

TEST_CASE("OwnerRecordRoundTrips") {
  OwnerRecord r;
  r.cache_nonce = 0x0123456789abcdefull;
  r.host = "hv-07.example";
  r.flush_seq = 4711;
  r.flush_ms = 1796300000123;
  r.since_ms = 1796299000000;
  r.updated_ms = 1796300001000;
  const std::string text = EncodeOwnerRecord(r);
  CHECK(text.rfind("wbfs-owner/1 nonce=0123456789abcdef host=hv-07.example ", 0) == 0);
  OwnerRecord d;
  REQUIRE(DecodeOwnerRecord(text, &d).ok());
  CHECK(d.cache_nonce == r.cache_nonce);
  CHECK(d.host == r.host);
  CHECK(d.flush_seq == r.flush_seq);
  CHECK(d.flush_ms == r.flush_ms);
  CHECK(d.since_ms == r.since_ms);
  CHECK(d.updated_ms == r.updated_ms);
}

TEST_CASE("OwnerRecordHostCannotBreakTheText") {
  OwnerRecord r;
  r.cache_nonce = 1;
  r.host = "a b=c";
  OwnerRecord d;
  REQUIRE(DecodeOwnerRecord(EncodeOwnerRecord(r), &d).ok());
  CHECK(d.host == "a_b_c");
}

TEST_CASE("OwnerRecordLaterKeysAreIgnored") {
  OwnerRecord d;
  REQUIRE(DecodeOwnerRecord("wbfs-owner/1 nonce=ff host=h flush_seq=3 colour=blue", &d).ok());
  CHECK(d.cache_nonce == 0xff);
  CHECK(d.flush_seq == 3);
}

TEST_CASE("OwnerRecordGarbageIsCorruption") {
  for (const char* bad : {"", "hello", "wbfs-owner/2 nonce=1 host=h", "wbfs-owner/1 host=h",
                          "wbfs-owner/1 nonce=1", "wbfs-owner/1 nonce=zz host=h", "wbfs-owner/1 nonce=1 host=h x",
                          "wbfs-owner/1 nonce=1 host=h flush_seq=-1", "wbfs-owner/1 nonce=1 host=h since_ms=1e3"}) {
    CAPTURE(bad);
    OwnerRecord d;
    CHECK(DecodeOwnerRecord(bad, &d).code() == Status::Code::kCorruption);
  }
}

TEST_CASE("OnlyTheSameCacheGetsPastTheRecord") {
  OwnerRecord r;
  r.cache_nonce = 42;
  cli::CacheIdentity same{false, true, 42}, other{false, true, 43}, blank{true, false, 0}, garbage{};
  CHECK_FALSE(cli::OwnerRecordBlocks(r, same));
  CHECK(cli::OwnerRecordBlocks(r, other));
  CHECK(cli::OwnerRecordBlocks(r, blank));
  CHECK(cli::OwnerRecordBlocks(r, garbage));
}

TEST_CASE("AgesReadAsAPersonWouldSayThem") {
  const uint64_t now = 1000000000000;
  CHECK(cli::AgeText(now - 40000, now) == "40 s");
  CHECK(cli::AgeText(now - 125000, now) == "2 min 5 s");
  CHECK(cli::AgeText(now - (2 * 3600 + 5 * 60) * 1000ull, now) == "2 h 5 min");
  CHECK(cli::AgeText(now - (3 * 86400 + 4 * 3600) * 1000ull, now) == "3 d 4 h");
  CHECK(cli::AgeText(0, now) == "an unknown time");
}

TEST_CASE("TheRefusalNamesHostStalenessAndBothWaysOut") {
  OwnerRecord r;
  r.cache_nonce = 0xabc;
  r.host = "old-host";
  r.flush_seq = 17;
  r.flush_ms = 1000000000000 - 300000;
  const std::string t = cli::DirtyElsewhereText("rbd:rbd/vm1", r, 1000000000000);
  CAPTURE(t);
  CHECK(t.find("host old-host") != std::string::npos);
  CHECK(t.find("chunk 17") != std::string::npos);
  CHECK(t.find("(5 min 0 s ago)") != std::string::npos);
  CHECK(t.find("drop_caches") != std::string::npos);
  CHECK(t.find("wbfs recover --backing rbd:rbd/vm1") != std::string::npos);
  CHECK(t.find("clears this record") != std::string::npos);
  CHECK(t.find('\n') == std::string::npos);
  r.flush_seq = r.flush_ms = 0;
  r.since_ms = 1000000000000 - 60000;
  const std::string u = cli::DirtyElsewhereText("rbd:rbd/vm1", r, 1000000000000);
  CHECK(u.find("nothing was written back from that cache since") != std::string::npos);
  CHECK(u.find("(1 min 0 s ago)") != std::string::npos);
}

TEST_CASE("BackingsWithoutAStoreAreLeftAlone") {
  auto disk = std::make_shared<MemDisk>(4 * kMiB);
  auto cache = std::make_shared<MemDisk>(8 * kMiB);
  auto b = Dev(disk);
  auto c = Dev(cache);
  CHECK(OwnerRecordOf(*b) == nullptr);
  CHECK(cli::CheckOwnerRecord(*b, *c, "/x").ok());
  std::string said;
  CHECK(cli::ClearOwnerRecordForRecover(*b, "/x", &said).ok());
  CHECK(said.empty());
}

// A mount with cache A marks the record, an unmount with data left keeps
// it; cache B is then refused (and not written), A is let in; a clean
// unmount of A removes the record and B gets in.
TEST_CASE("TheRecordOverMountsOfTwoCaches") {
  auto disk = std::make_shared<MemDisk>(4 * kMiB);
  auto meta = std::make_shared<Meta>();
  auto cache_a = std::make_shared<MemDisk>(8 * kMiB);
  auto cache_b = std::make_shared<MemDisk>(8 * kMiB);
  EngineOptions eo;
  eo.threads = false;
  eo.background = false;
  auto mount = [&](const std::shared_ptr<MemDisk>& cache, bool write, bool writeback, bool* cleared) {
    auto b = Shared(disk, meta);
    auto c = Dev(cache);
    Status st = cli::CheckOwnerRecord(*b, *c, "rbd:pool/vm");
    if (!st.ok()) return st;
    Device* cdev = c.get();
    cli::OwnerRecorder rec(OwnerRecordOf(*b), NoLog);
    auto e = Engine::Open(eo, std::move(b), std::move(c));
    REQUIRE(e.ok());
    const cli::CacheIdentity id = cli::ReadCacheIdentity(*cdev);
    REQUIRE(id.known);
    REQUIRE(rec.Mark(*e.value(), id.nonce).ok());
    REQUIRE(meta->present);
    if (write) {
      std::vector<uint8_t> buf(4096, 0x5a);
      REQUIRE(e.value()->Write(0, buf.data(), buf.size()).ok());
      REQUIRE(e.value()->Flush().ok());
    }
    if (writeback) REQUIRE(e.value()->WritebackAll().ok());
    const bool ok = e.value()->Close().ok();
    return rec.Finish(e.value()->Stats(), ok, cleared);
  };
  bool cleared = true;
  REQUIRE(mount(cache_a, true, false, &cleared).ok());
  CHECK_FALSE(cleared);
  REQUIRE(meta->present);
  OwnerRecord r;
  REQUIRE(DecodeOwnerRecord(meta->text, &r).ok());
  CHECK(r.since_ms != 0);

  const auto b_before = cache_b->data;
  const auto disk_before = disk->data;
  const std::string text_before = meta->text;
  Status st = mount(cache_b, false, false, &cleared);
  CHECK(st.code() == Status::Code::kBusy);
  CHECK(st.message().find("drop_caches") != std::string::npos);
  CHECK(cache_b->data == b_before);
  CHECK(cache_b->writes == 0);
  CHECK(disk->data == disk_before);
  CHECK(meta->text == text_before);

  // The same cache gets in, keeps the record's start, and a clean end removes it.
  REQUIRE(mount(cache_a, false, true, &cleared).ok());
  CHECK(cleared);
  CHECK_FALSE(meta->present);
  REQUIRE(mount(cache_b, true, true, &cleared).ok());
  CHECK(cleared);
  CHECK_FALSE(meta->present);

  // Recover gives A's data up: A, unformatted, is refused from then on (it
  // would write that data over newer writes); B gets in, and so does A
  // once formatted (a blank superblock: a new nonce).
  REQUIRE(mount(cache_a, true, false, &cleared).ok());
  REQUIRE(meta->present);
  {
    auto b = Shared(disk, meta);
    std::string said;
    REQUIRE(cli::ClearOwnerRecordForRecover(*b, "rbd:pool/vm", &said).ok());
  }
  CHECK_FALSE(meta->present);
  const Status given_up = mount(cache_a, false, true, &cleared);
  CHECK(given_up.code() == Status::Code::kBusy);
  CHECK(given_up.message().find("was given up by `wbfs recover`") != std::string::npos);
  REQUIRE(mount(cache_b, false, true, &cleared).ok());
  std::fill(cache_a->data.begin(), cache_a->data.begin() + 4096, 0);  // wbfs format --force
  cache_a->durable = cache_a->data;
  REQUIRE(mount(cache_a, false, true, &cleared).ok());
}

TEST_CASE("GivenUpListRoundTripsAndKeepsTheNewest") {
  std::vector<uint64_t> in, out;
  for (uint64_t i = 1; i <= kMaxGivenUp + 5; i++) in.push_back(i * 0x1111);
  REQUIRE(DecodeGivenUp(EncodeGivenUp(in), &out).ok());
  REQUIRE(out.size() == kMaxGivenUp);
  CHECK(out.front() == 6 * 0x1111);
  CHECK(out.back() == in.back());
  for (const char* bad : {"", "wbfs-given-up/2 0000000000000001", "wbfs-given-up/1 1", "wbfs-given-up/1 zz00000000000001"}) {
    CHECK(DecodeGivenUp(bad, &out).code() == Status::Code::kCorruption);
  }
}

TEST_CASE("RecoverClearsTheRecordAndSaysWhatIsGivenUp") {
  auto disk = std::make_shared<MemDisk>(4 * kMiB);
  auto meta = std::make_shared<Meta>();
  auto b = Shared(disk, meta);
  OwnerRecord r;
  r.cache_nonce = 0xfeed;
  r.host = "gone";
  REQUIRE(OwnerRecordOf(*b)->SetOwnerRecord(r).ok());
  std::string said;
  REQUIRE(cli::ClearOwnerRecordForRecover(*b, "rbd:pool/vm", &said).ok());
  CHECK_FALSE(meta->present);
  CHECK(said.find("host gone") != std::string::npos);
  CHECK(said.find("given up") != std::string::npos);
  // An unreadable record: refused at mount, cleared by recover.
  meta->present = true;
  meta->text = "junk";
  auto cache = std::make_shared<MemDisk>(8 * kMiB);
  auto c = Dev(cache);
  Status st = cli::CheckOwnerRecord(*b, *c, "rbd:pool/vm");
  CHECK(st.code() == Status::Code::kBusy);
  CHECK(st.message().find("wbfs recover --backing rbd:pool/vm") != std::string::npos);
  REQUIRE(cli::ClearOwnerRecordForRecover(*b, "rbd:pool/vm", &said).ok());
  CHECK_FALSE(meta->present);
  CHECK(said.find("junk") != std::string::npos);
}

}  // namespace
}  // namespace wbfs
