#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "util/coding.h"
#include "util/crc32c.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::format;

TEST_CASE("crc32c known values") {
  CHECK(crc32c::Value("123456789", 9) == 0xE3069283u);
  std::vector<uint8_t> zeros(3584, 0);
  // The test vector dm-writeboost-tools uses for an empty segment header.
  CHECK(crc32c::Value(zeros.data(), zeros.size()) == 0x0890BE15u);
  CHECK(crc32c::Extend(crc32c::Value("1234", 4), "56789", 5) == 0xE3069283u);
  std::vector<uint8_t> ff(32, 0xff);
  CHECK(crc32c::Value(ff.data(), ff.size()) == 0x62A8AB43u);
}

TEST_CASE("crc32c equals a bit-at-a-time reference for every length the three-stream path cuts") {
  auto reference = [](const uint8_t* p, size_t n, uint32_t crc) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
      crc ^= p[i];
      for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0);
    }
    return ~crc;
  };
  std::vector<uint8_t> buf(3 * 4096 + 64);
  uint64_t x = 88172645463325252ull;
  for (auto& b : buf) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  for (size_t n : {size_t{0}, size_t{7}, size_t{4079}, size_t{4080}, size_t{4081}, size_t{4096},
                   size_t{8160}, size_t{8192}, size_t{12288}, size_t{12300}}) {
    for (size_t at : {size_t{0}, size_t{1}, size_t{13}}) {
      CHECK_MESSAGE(crc32c::Value(buf.data() + at, n) == reference(buf.data() + at, n, 0),
                    "length " << n << " at " << at);
      CHECK(crc32c::Extend(0x12345678u, buf.data() + at, n) == reference(buf.data() + at, n, 0x12345678u));
    }
  }
}

TEST_CASE("fixed-width coding is little-endian") {
  uint8_t b[8];
  EncodeFixed32(b, 0x01020304);
  CHECK(b[0] == 4);
  CHECK(b[3] == 1);
  CHECK(DecodeFixed32(b) == 0x01020304u);
  EncodeFixed64(b, 0x0102030405060708ull);
  CHECK(b[0] == 8);
  CHECK(DecodeFixed64(b) == 0x0102030405060708ull);
  EncodeFixed16(b, 0xBEEF);
  CHECK(DecodeFixed16(b) == 0xBEEF);
}

static Superblock SampleSuperblock() {
  Superblock sb;
  sb.nr_segments = 10;
  sb.cache_size = kSegmentsOffset + 10 * kSegmentSize;
  sb.backing_size = 1 << 30;
  sb.nonce = 0x1234567890abcdefull;
  sb.format_time = 1700000000;
  return sb;
}

TEST_CASE("superblock round trip and every byte flip is detected") {
  Superblock sb = SampleSuperblock();
  std::vector<uint8_t> b(kBlockSize);
  EncodeSuperblock(sb, b.data());
  Superblock out;
  REQUIRE(DecodeSuperblock(b.data(), &out).ok());
  CHECK(out.nr_segments == 10);
  CHECK(out.backing_size == sb.backing_size);
  CHECK(out.nonce == sb.nonce);
  for (size_t i = 0; i < kBlockSize; i++) {
    std::vector<uint8_t> c = b;
    c[i] ^= 0x40;
    CHECK_MESSAGE(!DecodeSuperblock(c.data(), &out).ok(), "flip at byte " << i);
  }
}

TEST_CASE("superblock: the backing's identity round-trips; none reads as empty; a bad length is refused") {
  Superblock sb = SampleSuperblock();
  std::vector<uint8_t> b(kBlockSize);
  Superblock out;
  EncodeSuperblock(sb, b.data());
  REQUIRE(DecodeSuperblock(b.data(), &out).ok());
  CHECK(out.backing_id.empty());
  CHECK(IsZero(b.data() + 72, kBlockSize - 72));  // as writers that predate the field left it
  sb.backing_id = "rbd:fsid=0b1e/pool=3/image=10f2a9";
  EncodeSuperblock(sb, b.data());
  REQUIRE(DecodeSuperblock(b.data(), &out).ok());
  CHECK(out.backing_id == sb.backing_id);
  sb.backing_id.assign(kMaxBackingIdLen, 'x');
  EncodeSuperblock(sb, b.data());
  REQUIRE(DecodeSuperblock(b.data(), &out).ok());
  CHECK(out.backing_id.size() == kMaxBackingIdLen);
  // A length beyond the field, with a valid crc: refused, not read past.
  b[72] = 0xff;
  b[73] = 0x00;
  std::vector<uint8_t> c = b;
  std::memset(c.data() + 12, 0, 4);
  const uint32_t v = crc32c::Value(c.data(), kBlockSize);
  std::memcpy(c.data() + 12, &v, 4);
  CHECK(DecodeSuperblock(c.data(), &out).message().find("backing_id") != std::string::npos);
}

TEST_CASE("superblock with inconsistent geometry is refused") {
  Superblock sb = SampleSuperblock();
  sb.nr_segments = 11;  // does not fit cache_size
  std::vector<uint8_t> b(kBlockSize);
  EncodeSuperblock(sb, b.data());
  Superblock out;
  Status st = DecodeSuperblock(b.data(), &out);
  CHECK(st.code() == Status::Code::kCorruption);
  CHECK(st.message().find("nr_segments") != std::string::npos);
  sb = SampleSuperblock();
  sb.version = 99;
  EncodeSuperblock(sb, b.data());
  CHECK(DecodeSuperblock(b.data(), &out).message().find("version 99") != std::string::npos);
}

TEST_CASE("record round trip and flips") {
  Record r;
  r.nonce = 7;
  r.seq = 12;
  r.tail_segment_id = 5;
  r.tail_chunk_seq = 40;
  r.tail_prev_crc = 0xabcdef;
  r.last_writeback_id = 4;
  r.durable_seq = 39;
  std::vector<uint8_t> b(kBlockSize);
  EncodeRecord(r, b.data());
  Record out;
  REQUIRE(DecodeRecord(b.data(), &out).ok());
  CHECK(out.seq == 12);
  CHECK(out.tail_segment_id == 5);
  CHECK(out.tail_prev_crc == 0xabcdefu);
  for (size_t i = 0; i < 128; i++) {
    std::vector<uint8_t> c = b;
    c[i] ^= 1;
    CHECK(!DecodeRecord(c.data(), &out).ok());
  }
}

TEST_CASE("chunk header round trip, flips and bounds") {
  // The writer reuses its buffers: stale bytes of an earlier chunk must not
  // leak into the header. Encoded over stale bytes and over zeros, the
  // block must come out the same.
  std::vector<uint8_t> b(kBlockSize, 0xAA);
  std::vector<uint8_t> clean(kBlockSize, 0);
  ChunkHeader h;
  h.nonce = 9;
  h.epoch = 3;
  h.seq = 100;
  h.segment_id = 17;
  h.offset = 10;
  h.prev_crc = 0x55;
  h.nr_blocks = 3;
  h.data_crc = 0x77;
  h.durable_seq = 98;
  for (uint32_t i = 0; i < 3; i++) EncodeChunkEntry(b.data(), i, {1000 + i, 0xff, kEntryDirty});
  uint32_t crc = SealChunkHeader(h, b.data());
  for (uint32_t i = 0; i < 3; i++) EncodeChunkEntry(clean.data(), i, {1000 + i, 0xff, kEntryDirty});
  CHECK(SealChunkHeader(h, clean.data()) == crc);
  CHECK(b == clean);
  ChunkHeader out;
  REQUIRE(DecodeChunkHeader(b.data(), 1 << 20, &out).ok());
  CHECK(out.header_crc == crc);
  CHECK(out.seq == 100);
  CHECK(out.nr_blocks == 3);
  CHECK(out.entries[2].block == 1002);
  CHECK(out.entries[2].mask == 0xff);
  for (size_t i = 0; i < kBlockSize; i += 7) {
    std::vector<uint8_t> c = b;
    c[i] ^= 0x10;
    CHECK_MESSAGE(!DecodeChunkHeader(c.data(), 1 << 20, &out).ok(), "flip at " << i);
  }
  // An entry beyond the backing is refused even with a valid checksum.
  CHECK(!DecodeChunkHeader(b.data(), 1001, &out).ok());
  // nr_blocks that would overrun the segment.
  h.offset = 126;
  h.nr_blocks = 2;
  SealChunkHeader(h, b.data());
  CHECK(DecodeChunkHeader(b.data(), 1 << 20, &out).message().find("nr_blocks") != std::string::npos);
}

TEST_CASE("chunk positions") {
  CHECK(NextChunkPosition(3, 0, 1, 0).segment_id == 3);
  CHECK(NextChunkPosition(3, 0, 1, 0).block == 2);
  CHECK(NextChunkPosition(3, 0, 127, 0).segment_id == 4);
  CHECK(NextChunkPosition(3, 0, 125, 0).segment_id == 3);   // 126: header + 1 still fit
  CHECK(NextChunkPosition(3, 0, 126, 0).segment_id == 4);   // 127: only one block left
  CHECK(NextChunkPosition(3, 0, 1, kChunkSeal).segment_id == 4);
  Superblock sb = SampleSuperblock();
  CHECK(SegmentBlockOffset(sb, 1, 0) == kSegmentsOffset);
  CHECK(SegmentBlockOffset(sb, 11, 2) == kSegmentsOffset + 2 * kBlockSize);  // wraps to slot 0
  CHECK(SegmentsFor(kMinCacheSize) == kMinSegments);
  CHECK(SegmentsFor(kMinCacheSize - 1) == kMinSegments - 1);
}
