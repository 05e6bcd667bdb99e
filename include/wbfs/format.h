// The wbfs cache on-disk format (version 3; version 2 is still read). This header and
// src/format/format.cc are the only places that know byte offsets.
//
//   byte 0        4 KiB   8 KiB   12 KiB                1 MiB
//   | superblock | record A | record B | zero ...      | segment slot 0 | slot 1 | ... | tail
//
// All integers are little-endian. Every structure is one 4 KiB block that
// carries a CRC-32C of itself (computed with its crc field zeroed).
//
// Superblock (written once, at format):
//   0 magic "WBFS-SB\0"  8 version u32  12 crc u32  16 block_size u32
//   20 segment_size u32  24 nr_segments u64  32 segments_offset u64
//   40 backing_size u64  48 cache_size u64  56 nonce u64  64 format_time u64
//   72 backing_id_len u16  74 backing_id (backing_id_len bytes, at most 200)
// backing_id names the storage the cache was formatted for when the backing
// device has an identity (an RBD image: cluster fsid, pool id, image id);
// a cache is never opened over a backing with another identity. Files and
// block devices have none (length 0): only the size is checked, as before.
// Writers that predate the field left it zero, and ignore it.
// The nonce is the cache's identity: it is repeated in every record and chunk
// header, so nothing written under an earlier format ever validates.
//
// Record (two slots, written alternately; the valid one with the higher seq
// wins, so a torn record write leaves the other one intact):
//   0 magic "WBFS-RC\0"  8 crc u32  12 flags u32  16 nonce u64  24 seq u64
//   32 tail_segment_id u64  40 tail_block u32 (0: a tail starts a segment)  44 tail_prev_crc u32
//   48 tail_chunk_seq u64  56 last_writeback_id u64  64 durable_seq u64
// The tail is where replay starts: the first chunk that may hold data not
// yet on the backing file. It is rewritten (and synced) before the log
// overwrites the slot it points into.
//
// Segment slot: 512 KiB = 128 blocks of 4 KiB. Segment id N (N >= 1) lives
// in slot (N - 1) mod nr_segments. A segment is filled by one or more
// chunks, each one sequential write of a header block followed by its data
// blocks. An fsync cuts the open chunk early, so a flush of one 4 KiB write
// costs 8 KiB of log, not a whole segment.
//
// Chunk header (block `offset` of the segment):
//   0 magic "WBFS-CH\0"  8 header_crc u32  12 data_crc u32  16 nonce u64
//   24 epoch u64  32 seq u64  40 segment_id u64  48 offset u32
//   52 prev_crc u32  56 nr_blocks u16  58 flags u16  60 nr_extents u16
//   62 reserved u16  64 durable_seq u64  72 time_ms u64 (wall clock when
//   the chunk was cut; 0 from writers that predate it)  80..127 zero
//   128 + 16*i, i < nr_blocks: data entry i = block u64 (backing address
//               in 4 KiB units), mask u8 (bit s = 512-byte sector s is
//               valid), flags u8 (bit 0 = dirty), 2 bytes zero, crc u32
//               (version 3: CRC-32C of the 4 KiB data block as written;
//               version 2: zero)
//   then nr_extents extent entries = start u64, kind u8, flags u8 (bit 1 =
//               extent), count u48: the cache holds nothing for blocks
//               [start, start + count) any more. Kind 0: a write went
//               around the cache to the backing. Kind 1: a discard; the
//               range reads as zeros, and writeback punches the backing
//               in log order, like any other change. Kind 2: ignored by
//               readers (once "the punch is durable"); written now only
//               as the one extent {0, 1} of a marker chunk that seals its
//               segment (flags kChunkSeal) when no data chunk is open.
// header_crc covers the whole 4 KiB header (data_crc included). data_crc
// covers the nr_blocks data blocks that follow it: in version 2 it is the
// CRC-32C of the data itself; in version 3 the CRC-32C of the entries'
// block crcs (each a u32, little-endian, in entry order), so that the data
// is checksummed once, per block. The per-block crc lets every read of a
// block from the cache be verified on its own (user reads, writeback,
// offline writeback): SSDs do return wrong data. A chunk has data
// entries or extents, never both: replay applies chunks in log order.
//
// Chaining: seq increases by one per chunk across the whole log; prev_crc
// is the previous chunk's header_crc (for seq 1: ChainSeed(nonce)); epoch
// is random per mount. Replay follows the chain from the record's tail and
// stops at the first header that does not continue it, so a stale chunk of
// an earlier lap, or of a tail discarded by an earlier replay, never
// validates. The next chunk's position is offset + 1 + nr_blocks in the
// same segment, or block 0 of segment_id + 1 when fewer than two blocks
// remain or flags has kChunkSeal.
//
// durable_seq is the highest seq the writer knew to be synced when it wrote
// the header. Replay trusts data of chunks at or below the highest
// durable_seq it sees (they were synced before a later write was issued) and
// verifies data_crc only for the chunks after it: the torn tail of a crash.
//
// ---------------------------------------------------------------- journal
// The writeback journal: a file next to the backing (never on the cache),
// through which each writeback unit reaches the backing atomically.
//
//   byte 0         4 KiB          8 KiB
//   | state A     | state B      | entry header (4 KiB multiple) | entry data
//
// State (two slots written alternately, the valid one with the higher seq
// wins):
//   0 magic "WBFS-JS\0"  8 crc u32  12 version u32  16 seq u64
//   24 applied_entry u64 (entries up to this one are on the backing)
//   32 backing_size u64  40 cache_nonce u64  48 chunk_seq u64
//   56 segment_id u64  64 flags u32 (bit 0: the segment was applied whole)
//   68 reserved u32  72 time_ms u64
// (cache_nonce, chunk_seq, segment_id, time_ms) is the flush point the
// backing represents: the image as it was when chunk chunk_seq of the cache
// with that nonce was cut; 0 when no unit was ever applied.
//
// Entry (one at a time, at 8 KiB; written and synced before the backing
// is touched, replayed by recovery when its seq > applied_entry):
//   0 magic "WBFS-JE\0"  8 header_crc u32  12 data_crc u32  16 seq u64
//   24 backing_size u64  32 cache_nonce u64  40 chunk_seq u64
//   48 segment_id u64  56 flags u32  60 header_len u32 (bytes)
//   64 nr_runs u32  68 nr_punches u32  72 data_len u64  80 time_ms u64
//   88..127 zero
//   128 + 16*i: run i = backing offset u64, length u64 (bytes, sectors)
//   then punch j = backing offset u64, length u64
// header_crc covers header_len bytes; data_crc covers data_len bytes that
// follow the header: the runs' contents, in order. Applying an entry =
// punch every punch range, then write every run, then sync: idempotent.
#ifndef WBFS_FORMAT_H_
#define WBFS_FORMAT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "wbfs/status.h"

namespace wbfs::format {

// 2: extent entries (version 1 had none; a version-1 reader would ignore
// them and bring discarded data back, hence the bump).
// 3: a CRC-32C per data block in its chunk entry; data_crc is the crc of
// those crcs. Version 2 caches are still read and written as version 2
// (no per-block verification); a new format is version 3.
constexpr uint32_t kFormatVersion = 3;
constexpr uint32_t kOldestFormatVersion = 2;
constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kBlockSize = 4096;
constexpr uint32_t kSectorsPerBlock = kBlockSize / kSectorSize;
constexpr uint32_t kSegmentSize = 512 * 1024;
constexpr uint32_t kBlocksPerSegment = kSegmentSize / kBlockSize;
constexpr uint32_t kMaxChunkBlocks = kBlocksPerSegment - 1;
constexpr uint64_t kSuperblockOffset = 0;
constexpr uint64_t kRecordOffsets[2] = {4096, 8192};
constexpr uint64_t kSegmentsOffset = 1 << 20;
// The smallest log that can hold a segment being filled, one being flushed
// and one being written back, plus one spare.
constexpr uint64_t kMinSegments = 4;
constexpr uint64_t kMinCacheSize = kSegmentsOffset + kMinSegments * kSegmentSize;
// Cache block indexes are 32-bit in RAM: at most 2^31 blocks (8 TiB).
constexpr uint64_t kMaxSegments = (uint64_t{1} << 31) / kBlocksPerSegment;
// Backing block addresses are 48-bit in RAM.
constexpr uint64_t kMaxBackingBlocks = (uint64_t{1} << 48) - 2;

constexpr uint8_t kFullMask = 0xff;
constexpr uint16_t kChunkSeal = 1;
constexpr uint8_t kEntryDirty = 1;
constexpr uint8_t kEntryExtent = 2;
constexpr uint64_t kMaxExtentCount = (uint64_t{1} << 48) - 1;

// Offsets inside a chunk header.
constexpr size_t kChunkEntriesOffset = 128;
constexpr size_t kChunkEntrySize = 16;
constexpr uint32_t kMaxChunkEntries = (kBlockSize - kChunkEntriesOffset) / kChunkEntrySize;
static_assert(kChunkEntriesOffset + kMaxChunkBlocks * kChunkEntrySize <= kBlockSize);
static_assert(kBlocksPerSegment * kBlockSize == kSegmentSize);
static_assert(kRecordOffsets[1] + kBlockSize <= kSegmentsOffset);

struct Superblock {
  uint32_t version = kFormatVersion;
  uint32_t block_size = kBlockSize;
  uint32_t segment_size = kSegmentSize;
  uint64_t nr_segments = 0;
  uint64_t segments_offset = kSegmentsOffset;
  uint64_t backing_size = 0;
  uint64_t cache_size = 0;
  uint64_t nonce = 0;
  uint64_t format_time = 0;
  std::string backing_id;  // empty: the backing had no identity
};
constexpr size_t kMaxBackingIdLen = 200;

constexpr uint32_t kRecordClean = 1;  // written by a clean unmount

struct Record {
  uint32_t flags = 0;
  uint64_t nonce = 0;
  uint64_t seq = 0;
  uint64_t tail_segment_id = 1;
  uint32_t tail_block = 0;
  uint32_t tail_prev_crc = 0;
  uint64_t tail_chunk_seq = 1;
  uint64_t last_writeback_id = 0;
  uint64_t durable_seq = 0;
};

struct ChunkEntry {
  uint64_t block = 0;  // backing address in 4 KiB units
  uint8_t mask = 0;    // valid 512-byte sectors
  uint8_t flags = 0;   // kEntryDirty
  uint32_t crc = 0;    // version 3: CRC-32C of the block's 4 KiB
};

// Does a cache of this superblock carry a crc per data block?
inline bool HasBlockCrcs(const Superblock& sb) { return sb.version >= 3; }

constexpr uint8_t kExtentInvalidate = 0;
constexpr uint8_t kExtentDiscard = 1;
constexpr uint8_t kExtentPunched = 2;

struct Extent {
  uint64_t start = 0;  // backing block
  uint64_t count = 0;
  uint8_t kind = kExtentInvalidate;
};

struct ChunkHeader {
  uint32_t header_crc = 0;
  uint32_t data_crc = 0;
  uint64_t nonce = 0;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t segment_id = 0;
  uint32_t offset = 0;
  uint32_t prev_crc = 0;
  uint16_t nr_blocks = 0;
  uint16_t flags = 0;
  uint16_t nr_extents = 0;
  uint64_t durable_seq = 0;
  uint64_t time_ms = 0;
  std::array<ChunkEntry, kMaxChunkBlocks> entries{};
  std::array<Extent, kMaxChunkEntries> extents{};
};

bool IsZero(const void* p, size_t n);

// Number of segment slots a cache of `cache_size` bytes holds.
uint64_t SegmentsFor(uint64_t cache_size);
// Byte offset of block `block` of segment `segment_id` in the cache.
uint64_t SegmentBlockOffset(const Superblock& sb, uint64_t segment_id, uint32_t block);
// The prev_crc of the very first chunk of a freshly formatted cache.
uint32_t ChainSeed(uint64_t nonce);
// Where the chunk after `h` starts: returns {segment_id, block}.
struct Position {
  uint64_t segment_id;
  uint32_t block;
};
Position NextChunkPosition(uint64_t segment_id, uint32_t offset, uint16_t nr_blocks,
                           uint16_t flags);
// Blocks a chunk occupies: its header and its data.
inline uint32_t ChunkBlocks(uint16_t nr_blocks) { return 1u + nr_blocks; }
// Can a chunk start at `block` (room for its header and one data block)?
inline bool ChunkFits(uint32_t block) { return block + 2 <= kBlocksPerSegment; }

void EncodeSuperblock(const Superblock& sb, uint8_t* block);
// Corruption naming the field when the block is not a valid superblock
// (an all-zero block included: callers test IsZero first).
Status DecodeSuperblock(const uint8_t* block, Superblock* sb);

void EncodeRecord(const Record& r, uint8_t* block);
Status DecodeRecord(const uint8_t* block, Record* r);

// Chunk headers are built in two steps: entries at cut time, the rest
// (crcs, chain fields) by the writer thread, which then seals the block.
void EncodeChunkEntry(uint8_t* header_block, uint32_t i, const ChunkEntry& e);
// Extent entries follow the data entries: i counts from 0 after them.
void EncodeChunkExtent(uint8_t* header_block, uint32_t nr_blocks, uint32_t i, const Extent& x);
// Stores the crc of data entry i (version 3), after EncodeChunkEntry.
void SetChunkEntryCrc(uint8_t* header_block, uint32_t i, uint32_t crc);
// Version 3's data_crc: the crc of the block crcs, little-endian, in order.
uint32_t BlockCrcsDataCrc(const uint32_t* crcs, size_t n);
// Fills every field but header_crc from `h` (entries are left as they are),
// computes header_crc over the block and stores it. Returns header_crc.
uint32_t SealChunkHeader(const ChunkHeader& h, uint8_t* header_block);
// Decodes and checks magic, header crc, nr_blocks and entries; chain fields
// are the scanner's business. `backing_blocks` bounds entry addresses.
Status DecodeChunkHeader(const uint8_t* header_block, uint64_t backing_blocks, ChunkHeader* h);

// ---------------------------------------------------------------- journal

constexpr uint32_t kJournalVersion = 1;
constexpr uint64_t kJournalStateOffsets[2] = {0, 4096};
constexpr uint64_t kJournalEntryOffset = 8192;
constexpr size_t kJournalFixedHeader = 128;
constexpr size_t kJournalDescSize = 16;
constexpr uint32_t kJournalWhole = 1;

// A flush point of the cache log: the image as of the cut of chunk
// `chunk_seq` (segment `segment_id`, wholly applied when `whole`).
struct FlushPoint {
  uint64_t cache_nonce = 0;
  uint64_t chunk_seq = 0;  // 0: none
  uint64_t segment_id = 0;
  bool whole = false;
  uint64_t time_ms = 0;
};

struct JournalState {
  uint64_t seq = 0;
  uint64_t applied_entry = 0;
  uint64_t backing_size = 0;
  FlushPoint point;
};

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct JournalEntryHeader {
  uint32_t header_crc = 0;
  uint32_t data_crc = 0;
  uint64_t seq = 0;
  uint64_t backing_size = 0;
  FlushPoint point;
  uint32_t header_len = 0;
  uint64_t data_len = 0;
  std::vector<ByteRange> runs;
  std::vector<ByteRange> punches;
};

void EncodeJournalState(const JournalState& s, uint8_t* block);
Status DecodeJournalState(const uint8_t* block, JournalState* s);
// Header bytes an entry with these many runs and punches needs (a 4 KiB
// multiple).
uint32_t JournalHeaderLen(size_t nr_runs, size_t nr_punches);
// Encodes into `out` (resized to JournalHeaderLen); h.data_crc must be set.
void EncodeJournalEntryHeader(const JournalEntryHeader& h, std::vector<uint8_t>* out);
// The fixed part of a header (its first 128 bytes): header_len, counts.
Status DecodeJournalEntryFixed(const uint8_t* p, JournalEntryHeader* h);
// The whole header (h->header_len bytes, after DecodeJournalEntryFixed):
// checks header_crc and that every range lies inside the backing.
Status DecodeJournalEntryHeader(const uint8_t* p, JournalEntryHeader* h);

}  // namespace wbfs::format

#endif  // WBFS_FORMAT_H_
