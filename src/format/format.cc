#include "wbfs/format.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "util/coding.h"
#include "util/crc32c.h"

namespace wbfs::format {
namespace {

constexpr char kSuperMagic[8] = {'W', 'B', 'F', 'S', '-', 'S', 'B', 0};
constexpr char kRecordMagic[8] = {'W', 'B', 'F', 'S', '-', 'R', 'C', 0};
constexpr char kChunkMagic[8] = {'W', 'B', 'F', 'S', '-', 'C', 'H', 0};
constexpr char kJStateMagic[8] = {'W', 'B', 'F', 'S', '-', 'J', 'S', 0};
constexpr char kJEntryMagic[8] = {'W', 'B', 'F', 'S', '-', 'J', 'E', 0};

// Superblock field offsets.
constexpr size_t kSbVersion = 8, kSbCrc = 12, kSbBlockSize = 16, kSbSegmentSize = 20,
                 kSbNrSegments = 24, kSbSegmentsOffset = 32, kSbBackingSize = 40,
                 kSbCacheSize = 48, kSbNonce = 56, kSbFormatTime = 64, kSbBackingIdLen = 72,
                 kSbBackingId = 74;
// Record field offsets.
constexpr size_t kRcCrc = 8, kRcFlags = 12, kRcNonce = 16, kRcSeq = 24, kRcTailSegment = 32,
                 kRcTailBlock = 40, kRcTailPrevCrc = 44, kRcTailChunkSeq = 48,
                 kRcLastWriteback = 56, kRcDurableSeq = 64;
// Chunk header field offsets.
constexpr size_t kChHeaderCrc = 8, kChDataCrc = 12, kChNonce = 16, kChEpoch = 24, kChSeq = 32,
                 kChSegmentId = 40, kChOffset = 48, kChPrevCrc = 52, kChNrBlocks = 56,
                 kChFlags = 58, kChNrExtents = 60, kChDurableSeq = 64, kChTime = 72;
// Journal state field offsets.
constexpr size_t kJsCrc = 8, kJsVersion = 12, kJsSeq = 16, kJsApplied = 24, kJsBackingSize = 32,
                 kJsNonce = 40, kJsChunkSeq = 48, kJsSegment = 56, kJsFlags = 64, kJsTime = 72;
// Journal entry field offsets.
constexpr size_t kJeHeaderCrc = 8, kJeDataCrc = 12, kJeSeq = 16, kJeBackingSize = 24,
                 kJeNonce = 32, kJeChunkSeq = 40, kJeSegment = 48, kJeFlags = 56,
                 kJeHeaderLen = 60, kJeNrRuns = 64, kJeNrPunches = 68, kJeDataLen = 72,
                 kJeTime = 80;

// CRC of `len` bytes with the 4-byte crc field at `crc_at` taken as zero.
uint32_t CrcWithoutField(const uint8_t* p, size_t len, size_t crc_at) {
  static const uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t c = crc32c::Value(p, crc_at);
  c = crc32c::Extend(c, kZero, 4);
  return crc32c::Extend(c, p + crc_at + 4, len - crc_at - 4);
}
// The same over a 4 KiB block (superblock, records, chunk headers, journal states).
uint32_t BlockCrc(const uint8_t* block, size_t crc_at) {
  return CrcWithoutField(block, kBlockSize, crc_at);
}

}  // namespace

bool IsZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; i++) {
    if (b[i] != 0) return false;
  }
  return true;
}

uint64_t SegmentsFor(uint64_t cache_size) {
  if (cache_size < kSegmentsOffset) return 0;
  uint64_t n = (cache_size - kSegmentsOffset) / kSegmentSize;
  return n > kMaxSegments ? kMaxSegments : n;
}

uint64_t SegmentBlockOffset(const Superblock& sb, uint64_t segment_id, uint32_t block) {
  uint64_t slot = (segment_id - 1) % sb.nr_segments;
  return sb.segments_offset + slot * kSegmentSize + uint64_t{block} * kBlockSize;
}

uint32_t ChainSeed(uint64_t nonce) {
  uint8_t buf[8];
  EncodeFixed64(buf, nonce);
  return crc32c::Value(buf, sizeof(buf));
}

Position NextChunkPosition(uint64_t segment_id, uint32_t offset, uint16_t nr_blocks,
                           uint16_t flags) {
  uint32_t next = offset + 1 + nr_blocks;
  if ((flags & kChunkSeal) || !ChunkFits(next)) return {segment_id + 1, 0};
  return {segment_id, next};
}

void EncodeSuperblock(const Superblock& sb, uint8_t* block) {
  std::memset(block, 0, kBlockSize);
  std::memcpy(block, kSuperMagic, 8);
  EncodeFixed32(block + kSbVersion, sb.version);
  EncodeFixed32(block + kSbBlockSize, sb.block_size);
  EncodeFixed32(block + kSbSegmentSize, sb.segment_size);
  EncodeFixed64(block + kSbNrSegments, sb.nr_segments);
  EncodeFixed64(block + kSbSegmentsOffset, sb.segments_offset);
  EncodeFixed64(block + kSbBackingSize, sb.backing_size);
  EncodeFixed64(block + kSbCacheSize, sb.cache_size);
  EncodeFixed64(block + kSbNonce, sb.nonce);
  EncodeFixed64(block + kSbFormatTime, sb.format_time);
  const size_t id_len = std::min(sb.backing_id.size(), kMaxBackingIdLen);
  EncodeFixed16(block + kSbBackingIdLen, static_cast<uint16_t>(id_len));
  std::memcpy(block + kSbBackingId, sb.backing_id.data(), id_len);
  EncodeFixed32(block + kSbCrc, BlockCrc(block, kSbCrc));
}

Status DecodeSuperblock(const uint8_t* block, Superblock* sb) {
  if (std::memcmp(block, kSuperMagic, 8) != 0) {
    return Status::Corruption("superblock: bad magic (not a wbfs cache)");
  }
  uint32_t crc = DecodeFixed32(block + kSbCrc);
  if (crc != BlockCrc(block, kSbCrc)) return Status::Corruption("superblock: checksum mismatch");
  Superblock s;
  s.version = DecodeFixed32(block + kSbVersion);
  s.block_size = DecodeFixed32(block + kSbBlockSize);
  s.segment_size = DecodeFixed32(block + kSbSegmentSize);
  s.nr_segments = DecodeFixed64(block + kSbNrSegments);
  s.segments_offset = DecodeFixed64(block + kSbSegmentsOffset);
  s.backing_size = DecodeFixed64(block + kSbBackingSize);
  s.cache_size = DecodeFixed64(block + kSbCacheSize);
  s.nonce = DecodeFixed64(block + kSbNonce);
  s.format_time = DecodeFixed64(block + kSbFormatTime);
  const uint16_t id_len = DecodeFixed16(block + kSbBackingIdLen);
  if (id_len > kMaxBackingIdLen) return Status::Corruption("superblock: bad backing_id length");
  s.backing_id.assign(reinterpret_cast<const char*>(block + kSbBackingId), id_len);
  if (s.version < kOldestFormatVersion || s.version > kFormatVersion) {
    return Status::Corruption("superblock: format version " + std::to_string(s.version) +
                              " is not supported (this wbfs reads versions " +
                              std::to_string(kOldestFormatVersion) + " to " +
                              std::to_string(kFormatVersion) + ")");
  }
  if (s.block_size != kBlockSize) return Status::Corruption("superblock: bad block_size");
  if (s.segment_size != kSegmentSize) return Status::Corruption("superblock: bad segment_size");
  if (s.segments_offset != kSegmentsOffset) {
    return Status::Corruption("superblock: bad segments_offset");
  }
  if (s.nr_segments < kMinSegments || s.nr_segments > kMaxSegments ||
      s.nr_segments != SegmentsFor(s.cache_size)) {
    return Status::Corruption("superblock: nr_segments " + std::to_string(s.nr_segments) +
                              " does not fit cache_size " + std::to_string(s.cache_size));
  }
  if (s.backing_size == 0 || s.backing_size % kBlockSize != 0 ||
      s.backing_size / kBlockSize > kMaxBackingBlocks) {
    return Status::Corruption("superblock: bad backing_size");
  }
  *sb = s;
  return Status::OK();
}

void EncodeRecord(const Record& r, uint8_t* block) {
  std::memset(block, 0, kBlockSize);
  std::memcpy(block, kRecordMagic, 8);
  EncodeFixed32(block + kRcFlags, r.flags);
  EncodeFixed64(block + kRcNonce, r.nonce);
  EncodeFixed64(block + kRcSeq, r.seq);
  EncodeFixed64(block + kRcTailSegment, r.tail_segment_id);
  EncodeFixed32(block + kRcTailBlock, r.tail_block);
  EncodeFixed32(block + kRcTailPrevCrc, r.tail_prev_crc);
  EncodeFixed64(block + kRcTailChunkSeq, r.tail_chunk_seq);
  EncodeFixed64(block + kRcLastWriteback, r.last_writeback_id);
  EncodeFixed64(block + kRcDurableSeq, r.durable_seq);
  EncodeFixed32(block + kRcCrc, BlockCrc(block, kRcCrc));
}

Status DecodeRecord(const uint8_t* block, Record* r) {
  if (std::memcmp(block, kRecordMagic, 8) != 0) return Status::Corruption("record: bad magic");
  if (DecodeFixed32(block + kRcCrc) != BlockCrc(block, kRcCrc)) {
    return Status::Corruption("record: checksum mismatch");
  }
  Record x;
  x.flags = DecodeFixed32(block + kRcFlags);
  x.nonce = DecodeFixed64(block + kRcNonce);
  x.seq = DecodeFixed64(block + kRcSeq);
  x.tail_segment_id = DecodeFixed64(block + kRcTailSegment);
  x.tail_block = DecodeFixed32(block + kRcTailBlock);
  x.tail_prev_crc = DecodeFixed32(block + kRcTailPrevCrc);
  x.tail_chunk_seq = DecodeFixed64(block + kRcTailChunkSeq);
  x.last_writeback_id = DecodeFixed64(block + kRcLastWriteback);
  x.durable_seq = DecodeFixed64(block + kRcDurableSeq);
  if (x.tail_segment_id == 0 || x.tail_block != 0 || x.tail_chunk_seq == 0 ||
      x.last_writeback_id >= x.tail_segment_id) {
    return Status::Corruption("record: inconsistent tail");
  }
  *r = x;
  return Status::OK();
}

void EncodeChunkExtent(uint8_t* header_block, uint32_t nr_blocks, uint32_t i, const Extent& x) {
  uint8_t* p = header_block + kChunkEntriesOffset + (nr_blocks + i) * kChunkEntrySize;
  std::memset(p, 0, kChunkEntrySize);
  EncodeFixed64(p, x.start);
  p[8] = x.kind;
  p[9] = kEntryExtent;
  for (int k = 0; k < 6; k++) p[10 + k] = static_cast<uint8_t>(x.count >> (8 * k));
}

void EncodeChunkEntry(uint8_t* header_block, uint32_t i, const ChunkEntry& e) {
  uint8_t* p = header_block + kChunkEntriesOffset + i * kChunkEntrySize;
  std::memset(p, 0, kChunkEntrySize);
  EncodeFixed64(p, e.block);
  p[8] = e.mask;
  p[9] = e.flags;
  EncodeFixed32(p + 12, e.crc);
}

void SetChunkEntryCrc(uint8_t* header_block, uint32_t i, uint32_t crc) {
  EncodeFixed32(header_block + kChunkEntriesOffset + i * kChunkEntrySize + 12, crc);
}

uint32_t BlockCrcsDataCrc(const uint32_t* crcs, size_t n) {
  uint32_t crc = 0;
  uint8_t le[4];
  for (size_t i = 0; i < n; i++) {
    EncodeFixed32(le, crcs[i]);
    crc = crc32c::Extend(crc, le, sizeof(le));
  }
  return crc;
}

uint32_t SealChunkHeader(const ChunkHeader& h, uint8_t* header_block) {
  uint8_t* b = header_block;
  std::memcpy(b, kChunkMagic, 8);
  EncodeFixed32(b + kChDataCrc, h.data_crc);
  EncodeFixed64(b + kChNonce, h.nonce);
  EncodeFixed64(b + kChEpoch, h.epoch);
  EncodeFixed64(b + kChSeq, h.seq);
  EncodeFixed64(b + kChSegmentId, h.segment_id);
  EncodeFixed32(b + kChOffset, h.offset);
  EncodeFixed32(b + kChPrevCrc, h.prev_crc);
  EncodeFixed16(b + kChNrBlocks, h.nr_blocks);
  EncodeFixed16(b + kChFlags, h.flags);
  EncodeFixed16(b + kChNrExtents, h.nr_extents);
  EncodeFixed16(b + 62, 0);
  EncodeFixed64(b + kChDurableSeq, h.durable_seq);
  EncodeFixed64(b + kChTime, h.time_ms);
  std::memset(b + 80, 0, kChunkEntriesOffset - 80);
  size_t used = kChunkEntriesOffset + (size_t{h.nr_blocks} + h.nr_extents) * kChunkEntrySize;
  std::memset(b + used, 0, kBlockSize - used);
  uint32_t crc = BlockCrc(b, kChHeaderCrc);
  EncodeFixed32(b + kChHeaderCrc, crc);
  return crc;
}

Status DecodeChunkHeader(const uint8_t* b, uint64_t backing_blocks, ChunkHeader* h) {
  if (std::memcmp(b, kChunkMagic, 8) != 0) return Status::Corruption("chunk: bad magic");
  uint32_t crc = DecodeFixed32(b + kChHeaderCrc);
  if (crc != BlockCrc(b, kChHeaderCrc)) return Status::Corruption("chunk: header checksum mismatch");
  h->header_crc = crc;
  h->data_crc = DecodeFixed32(b + kChDataCrc);
  h->nonce = DecodeFixed64(b + kChNonce);
  h->epoch = DecodeFixed64(b + kChEpoch);
  h->seq = DecodeFixed64(b + kChSeq);
  h->segment_id = DecodeFixed64(b + kChSegmentId);
  h->offset = DecodeFixed32(b + kChOffset);
  h->prev_crc = DecodeFixed32(b + kChPrevCrc);
  h->nr_blocks = DecodeFixed16(b + kChNrBlocks);
  h->flags = DecodeFixed16(b + kChFlags);
  h->nr_extents = DecodeFixed16(b + kChNrExtents);
  h->durable_seq = DecodeFixed64(b + kChDurableSeq);
  h->time_ms = DecodeFixed64(b + kChTime);
  if (!ChunkFits(h->offset)) {
    return Status::Corruption("chunk: offset " + std::to_string(h->offset) + " out of range");
  }
  if (h->offset + 1 + h->nr_blocks > kBlocksPerSegment) {
    return Status::Corruption("chunk: nr_blocks " + std::to_string(h->nr_blocks) +
                              " does not fit at offset " + std::to_string(h->offset));
  }
  if ((h->nr_blocks == 0) == (h->nr_extents == 0) || h->nr_extents > kMaxChunkEntries) {
    return Status::Corruption("chunk: needs data entries or extents, not " +
                              std::to_string(h->nr_blocks) + " and " +
                              std::to_string(h->nr_extents));
  }
  if (h->segment_id == 0 || h->seq == 0) return Status::Corruption("chunk: zero id");
  for (uint32_t i = 0; i < h->nr_blocks; i++) {
    const uint8_t* p = b + kChunkEntriesOffset + i * kChunkEntrySize;
    ChunkEntry e{DecodeFixed64(p), p[8], p[9], DecodeFixed32(p + 12)};
    if (e.block >= backing_blocks || e.mask == 0 || (e.flags & ~kEntryDirty) != 0) {
      return Status::Corruption("chunk: entry " + std::to_string(i) + " is invalid");
    }
    h->entries[i] = e;
  }
  for (uint32_t i = 0; i < h->nr_extents; i++) {
    const uint8_t* p = b + kChunkEntriesOffset + i * kChunkEntrySize;  // nr_blocks is 0
    Extent x;
    x.start = DecodeFixed64(p);
    x.kind = p[8];
    for (int k = 5; k >= 0; k--) x.count = (x.count << 8) | p[10 + k];
    if (x.kind > kExtentPunched || p[9] != kEntryExtent || x.count == 0 || x.start >= backing_blocks ||
        x.count > backing_blocks - x.start) {
      return Status::Corruption("chunk: extent " + std::to_string(i) + " is invalid");
    }
    h->extents[i] = x;
  }
  return Status::OK();
}

// ---------------------------------------------------------------- journal

namespace {

void EncodePoint(uint8_t* b, size_t nonce, size_t chunk_seq, size_t segment, size_t flags,
                 size_t time, const FlushPoint& p) {
  EncodeFixed64(b + nonce, p.cache_nonce);
  EncodeFixed64(b + chunk_seq, p.chunk_seq);
  EncodeFixed64(b + segment, p.segment_id);
  EncodeFixed32(b + flags, p.whole ? kJournalWhole : 0);
  EncodeFixed64(b + time, p.time_ms);
}
FlushPoint DecodePoint(const uint8_t* b, size_t nonce, size_t chunk_seq, size_t segment,
                       size_t flags, size_t time) {
  FlushPoint p;
  p.cache_nonce = DecodeFixed64(b + nonce);
  p.chunk_seq = DecodeFixed64(b + chunk_seq);
  p.segment_id = DecodeFixed64(b + segment);
  p.whole = (DecodeFixed32(b + flags) & kJournalWhole) != 0;
  p.time_ms = DecodeFixed64(b + time);
  return p;
}

}  // namespace

void EncodeJournalState(const JournalState& s, uint8_t* block) {
  std::memset(block, 0, kBlockSize);
  std::memcpy(block, kJStateMagic, 8);
  EncodeFixed32(block + kJsVersion, kJournalVersion);
  EncodeFixed64(block + kJsSeq, s.seq);
  EncodeFixed64(block + kJsApplied, s.applied_entry);
  EncodeFixed64(block + kJsBackingSize, s.backing_size);
  EncodePoint(block, kJsNonce, kJsChunkSeq, kJsSegment, kJsFlags, kJsTime, s.point);
  EncodeFixed32(block + kJsCrc, BlockCrc(block, kJsCrc));
}

Status DecodeJournalState(const uint8_t* block, JournalState* s) {
  if (std::memcmp(block, kJStateMagic, 8) != 0) return Status::Corruption("journal state: bad magic");
  if (DecodeFixed32(block + kJsCrc) != BlockCrc(block, kJsCrc)) {
    return Status::Corruption("journal state: checksum mismatch");
  }
  uint32_t version = DecodeFixed32(block + kJsVersion);
  if (version != kJournalVersion) {
    return Status::Corruption("journal state: version " + std::to_string(version) +
                              " (this wbfs reads " + std::to_string(kJournalVersion) + ")");
  }
  JournalState x;
  x.seq = DecodeFixed64(block + kJsSeq);
  x.applied_entry = DecodeFixed64(block + kJsApplied);
  x.backing_size = DecodeFixed64(block + kJsBackingSize);
  x.point = DecodePoint(block, kJsNonce, kJsChunkSeq, kJsSegment, kJsFlags, kJsTime);
  *s = x;
  return Status::OK();
}

uint32_t JournalHeaderLen(size_t nr_runs, size_t nr_punches) {
  size_t n = kJournalFixedHeader + (nr_runs + nr_punches) * kJournalDescSize;
  return static_cast<uint32_t>((n + kBlockSize - 1) / kBlockSize * kBlockSize);
}

void EncodeJournalEntryHeader(const JournalEntryHeader& h, std::vector<uint8_t>* out) {
  const uint32_t len = JournalHeaderLen(h.runs.size(), h.punches.size());
  out->assign(len, 0);
  uint8_t* b = out->data();
  std::memcpy(b, kJEntryMagic, 8);
  EncodeFixed32(b + kJeDataCrc, h.data_crc);
  EncodeFixed64(b + kJeSeq, h.seq);
  EncodeFixed64(b + kJeBackingSize, h.backing_size);
  EncodePoint(b, kJeNonce, kJeChunkSeq, kJeSegment, kJeFlags, kJeTime, h.point);
  EncodeFixed32(b + kJeHeaderLen, len);
  EncodeFixed32(b + kJeNrRuns, static_cast<uint32_t>(h.runs.size()));
  EncodeFixed32(b + kJeNrPunches, static_cast<uint32_t>(h.punches.size()));
  EncodeFixed64(b + kJeDataLen, h.data_len);
  uint8_t* p = b + kJournalFixedHeader;
  for (const auto* v : {&h.runs, &h.punches}) {
    for (const ByteRange& r : *v) {
      EncodeFixed64(p, r.offset);
      EncodeFixed64(p + 8, r.length);
      p += kJournalDescSize;
    }
  }
  EncodeFixed32(b + kJeHeaderCrc, CrcWithoutField(b, len, kJeHeaderCrc));
}

Status DecodeJournalEntryFixed(const uint8_t* b, JournalEntryHeader* h) {
  if (std::memcmp(b, kJEntryMagic, 8) != 0) return Status::Corruption("journal entry: bad magic");
  h->header_crc = DecodeFixed32(b + kJeHeaderCrc);
  h->data_crc = DecodeFixed32(b + kJeDataCrc);
  h->seq = DecodeFixed64(b + kJeSeq);
  h->backing_size = DecodeFixed64(b + kJeBackingSize);
  h->point = DecodePoint(b, kJeNonce, kJeChunkSeq, kJeSegment, kJeFlags, kJeTime);
  h->header_len = DecodeFixed32(b + kJeHeaderLen);
  h->data_len = DecodeFixed64(b + kJeDataLen);
  uint32_t nr_runs = DecodeFixed32(b + kJeNrRuns), nr_punches = DecodeFixed32(b + kJeNrPunches);
  // Bounded so a corrupt header cannot ask for gigabytes: a unit is at
  // most 32 segments of 127 blocks of 8 sectors.
  constexpr uint32_t kMaxDescs = 1u << 20;
  if (nr_runs > kMaxDescs || nr_punches > kMaxDescs ||
      h->header_len != JournalHeaderLen(nr_runs, nr_punches) || h->seq == 0) {
    return Status::Corruption("journal entry: inconsistent header");
  }
  h->runs.assign(nr_runs, {});
  h->punches.assign(nr_punches, {});
  return Status::OK();
}

Status DecodeJournalEntryHeader(const uint8_t* b, JournalEntryHeader* h) {
  if (CrcWithoutField(b, h->header_len, kJeHeaderCrc) != h->header_crc) return Status::Corruption("journal entry: header checksum mismatch");
  const uint8_t* p = b + kJournalFixedHeader;
  uint64_t data = 0;
  for (auto* v : {&h->runs, &h->punches}) {
    for (ByteRange& r : *v) {
      r.offset = DecodeFixed64(p);
      r.length = DecodeFixed64(p + 8);
      p += kJournalDescSize;
      if (r.offset % kSectorSize || r.length % kSectorSize || r.length == 0 ||
          r.offset > h->backing_size || r.length > h->backing_size - r.offset) {
        return Status::Corruption("journal entry: a range lies outside the backing");
      }
    }
    if (v == &h->runs) {
      for (const ByteRange& r : *v) data += r.length;
    }
  }
  if (data != h->data_len) return Status::Corruption("journal entry: runs and data length differ");
  return Status::OK();
}

}  // namespace wbfs::format
