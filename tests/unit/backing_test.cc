// Backing names (src/io/backing.h): the rbd: URI grammar and the size of
// the cluster-side journal.
#include <doctest/doctest.h>

#include "io/backing.h"
#include "wbfs/format.h"

namespace wbfs {
namespace {

TEST_CASE("IsRbdUriOnlyForTheScheme") {
  CHECK(IsRbdUri("rbd:p/i"));
  CHECK_FALSE(IsRbdUri("/srv/rbd:p/i"));
  CHECK_FALSE(IsRbdUri("rbd"));
  CHECK_FALSE(IsRbdUri("./rbd:p"));
}

TEST_CASE("PoolAndImage") {
  auto s = ParseRbdUri("rbd:rbd/vm1");
  REQUIRE(s.ok());
  CHECK(s.value().pool == "rbd");
  CHECK(s.value().ns == "");
  CHECK(s.value().image == "vm1");
  CHECK(RbdUri(s.value()) == "rbd:rbd/vm1");
}

TEST_CASE("PoolNamespaceAndImage") {
  auto s = ParseRbdUri("rbd:pool/tenant-a/vm.disk0");
  REQUIRE(s.ok());
  CHECK(s.value().pool == "pool");
  CHECK(s.value().ns == "tenant-a");
  CHECK(s.value().image == "vm.disk0");
  CHECK(RbdUri(s.value()) == "rbd:pool/tenant-a/vm.disk0");
}

TEST_CASE("BadUrisAreRefusedNamingTheUri") {
  for (const char* bad : {"rbd:", "rbd:pool", "rbd:pool/", "rbd:/image", "rbd:a//b", "rbd:a/b/c/d",
                          "rbd:a/b/", "rbd:pool/image@snap", "/dev/sda"}) {
    CAPTURE(bad);
    auto s = ParseRbdUri(bad);
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == Status::Code::kInvalidArgument);
    CHECK(s.status().message().find(bad) != std::string::npos);
  }
  auto nul = ParseRbdUri(std::string("rbd:p/i\0x", 9));
  CHECK_FALSE(nul.ok());
}

TEST_CASE("JournalImageHoldsTheLargestUnit") {
  // 33 segments of data and, at most, a descriptor per header slot.
  const uint64_t data = 33ull * format::kSegmentSize;
  const uint64_t descs = 33ull * format::kBlocksPerSegment * 248 * format::kJournalDescSize;
  CHECK(RbdJournalSize() >= format::kJournalEntryOffset + format::kJournalFixedHeader + descs + data);
  CHECK(RbdJournalSize() % (4 << 20) == 0);
}

}  // namespace
}  // namespace wbfs
