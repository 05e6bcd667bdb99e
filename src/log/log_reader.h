// The one reader of the wbfs on-disk log. Mount (replay), check, dump and
// offline writeback all read the cache through this file:
//   ReadCacheMeta / ReadRecordSlots  the superblock and both record slots
//   ChunkWalker                      chunk headers, along the chain or in one
//                                    segment slot; why a walk stops is a WalkStop
//   ScanLog                          the chain from the record's tail, data checked
//   FindSyncedLoss                   synced chunks the chain cannot reach
// Damage is reported through a Reporter (as leveldb's log::Reader::Reporter),
// never as text a caller has to parse. The replay fold is in replay.h.
#ifndef WBFS_LOG_LOG_READER_H_
#define WBFS_LOG_LOG_READER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/aligned_buffer.h"
#include "wbfs/device.h"
#include "wbfs/format.h"
#include "wbfs/status.h"

namespace wbfs::log {

// ---------------------------------------------------------------- damage

enum class Damage {
  kBadSuperblock,  // the superblock does not decode, or the cache shrank
  kNoRecord,       // neither record slot holds a valid record
  kBadRecord,      // one record slot is invalid; the other serves (a torn record write)
  kTornChunk,      // the newest chunk's data never fully reached the disk: a crash's normal end
  kCorruptData,    // a chunk known synced fails its data checksum
  kSyncedLoss,     // the chain ends at a chunk that a later chunk records as synced
};

// Damage that makes a cache inconsistent (false: what a crash leaves).
bool IsCorruption(Damage d);

// Told about every damaged region a read comes across. `offset` is a byte
// offset in the cache; `what` is one sentence for a human.
class Reporter {
 public:
  virtual ~Reporter() = default;
  virtual void Damaged(Damage kind, uint64_t offset, const std::string& what) = 0;
};

// ---------------------------------------------------------------- records

struct RecordSlot {
  uint64_t offset = 0;        // byte offset of the slot in the cache
  bool zero = false;          // all zeros: never written
  Status status;              // DecodeRecord's verdict
  bool other_format = false;  // decodes, but carries another format's nonce
  format::Record record;      // meaningful when status.ok()
  bool valid() const { return status.ok() && !other_format; }
};

struct RecordSlots {
  std::array<RecordSlot, 2> slot;
  int in_use = -1;  // the valid slot with the higher seq (ties: slot 0); -1: none
};

// Reads and decodes both record slots of a cache whose superblock carries
// `nonce`. Only an I/O error is an error; invalid slots are described.
Status ReadRecordSlots(Device& cache, uint64_t nonce, RecordSlots* out);

struct CacheMeta {
  bool blank = false;  // the first 4 KiB are zero: a cache to be formatted
  format::Superblock sb;
  RecordSlots records;
  format::Record record;  // the record in use: records.slot[record_slot].record
  int record_slot = -1;
};

// Reads the superblock and both records. A blank cache is not an error.
// Corruption when the superblock or both records do not decode (reported
// as kBadSuperblock or kNoRecord); an invalid slot next to a valid one is
// reported as kBadRecord unless it is all zeros.
Status ReadCacheMeta(Device& cache, CacheMeta* meta, Reporter* reporter = nullptr);

// ---------------------------------------------------------------- walker

// Why a walk of chunk headers stopped.
enum class WalkStop {
  kNone,         // it has not
  kLogFull,      // chain: it came round to the record's tail; the log fills the cache
  kSegmentEnd,   // segment: the next chunk would start in the next segment
  kUnwritten,    // an all-zero block
  kBadHeader,    // does not decode as a header (magic, crc, counts, entries): detail()
  kOtherFormat,  // a valid header written under another format (nonce)
  kOtherSlot,    // a valid header written for another segment id or block: an earlier lap
  kChainBreak,   // chain: a valid header whose seq or prev_crc does not continue the chain
  kTornData,     // ScanLog only: a chunk after the trusted point fails its data checksum
};
const char* WalkStopName(WalkStop s);

class HeaderPrefetch;

// Reads chunk headers one after the other, in one of two modes:
//  - the chain: from a position, expecting a seq and a prev_crc, across
//    segments, up to (not into) segment `end_id`;
//  - one segment slot: the chunks laid out from its block 0, whatever
//    their seq, up to the end of the segment.
// Next() reads the next header; when it returns false the walk stopped and
// stop(), position() and offset() say why and where.
class ChunkWalker {
 public:
  // prefetch_threads > 0: block 0 of the segments ahead (below
  // prefetch_end_id) is read in parallel, kBatch at a time; 0: every
  // header is read when the walk reaches it, in order.
  ChunkWalker(Device& cache, const format::Superblock& sb, unsigned prefetch_threads = 0,
              uint64_t prefetch_end_id = 0);
  ~ChunkWalker();
  ChunkWalker(const ChunkWalker&) = delete;
  ChunkWalker& operator=(const ChunkWalker&) = delete;

  void StartChain(format::Position pos, uint64_t seq, uint32_t prev_crc, uint64_t end_id);
  // match_id: a header of another segment id (an earlier lap in the same
  // slot) stops the walk (kOtherSlot); otherwise only its block must match.
  void StartSegment(uint64_t segment_id, bool match_id);

  // true: header() is the next chunk. false: the walk stopped. An I/O
  // error stops nothing: it is returned, offset() is where.
  Status Next(bool* got);

  const format::ChunkHeader& header() const { return h_; }  // after kOtherSlot/kChainBreak too
  format::Position position() const { return pos_; }  // of header(), or where the walk stopped
  uint64_t offset() const;                            // the same, as a cache byte offset
  WalkStop stop() const { return stop_; }
  const std::string& detail() const { return detail_; }  // kBadHeader: the decoder's message
  uint64_t expected_seq() const { return expect_seq_; }  // chain: the seq it wants next

 private:
  Device& cache_;
  const format::Superblock& sb_;
  const uint64_t backing_blocks_;
  std::unique_ptr<HeaderPrefetch> prefetch_;
  AlignedBuffer hbuf_;
  format::ChunkHeader h_;
  bool chain_ = false;
  bool match_id_ = false;
  bool started_ = false;  // a header was returned: pos_ is its position
  uint64_t walk_id_ = 0;  // segment mode: the slot's segment id
  uint64_t end_id_ = 0;   // chain mode
  format::Position pos_{1, 0};
  uint64_t expect_seq_ = 0;
  uint32_t prev_crc_ = 0;
  WalkStop stop_ = WalkStop::kNone;
  std::string detail_;
};

// ---------------------------------------------------------------- scan

struct ChunkInfo {
  uint64_t seq = 0;
  uint64_t segment_id = 0;
  uint32_t offset = 0;  // block of the header inside the segment
  uint16_t nr_blocks = 0;
  uint16_t flags = 0;
  uint16_t nr_extents = 0;
  uint32_t header_crc = 0;
  uint32_t data_crc = 0;
  uint64_t durable_seq = 0;
  uint64_t epoch = 0;
  uint64_t time_ms = 0;  // when it was cut (0: unknown)
  size_t first_entry = 0;   // index into LogScan::entries
  size_t first_extent = 0;  // index into LogScan::extents
  bool data_checked = false;
};

struct LogScan {
  std::vector<ChunkInfo> chunks;  // the valid log, oldest first
  std::vector<format::ChunkEntry> entries;
  std::vector<format::Extent> extents;
  // Chunks up to this seq were synced before a later chunk was written;
  // replay trusts their data without reading it.
  uint64_t trusted_seq = 0;
  format::Position end{1, 0};  // where the next chunk goes
  uint64_t next_seq = 1;
  uint32_t last_crc = 0;
  // Why the log ends there, and at which cache byte offset; end_reason is
  // the same for a human (check prints it).
  WalkStop stop = WalkStop::kNone;
  std::string end_reason;
  uint64_t end_offset = 0;
  // Chunks whose headers continued the chain but that were dropped because
  // an earlier chunk's data failed its checksum (a torn write).
  uint64_t dropped_chunks = 0;
  // verify_all only: a chunk at or below trusted_seq failed its data
  // checksum: corruption of synced data, not a torn tail (the first one).
  bool corrupt = false;
  uint64_t corrupt_offset = 0;
};

struct ScanOptions {
  bool verify_all_data = false;  // check reads every chunk's data
  // Readers that fetch the first block of the segments ahead in parallel
  // (a full segment is one chunk, so that is where the next headers are;
  // one 4 KiB read at a time made resuming a full 8 GiB cache take 1.3 s).
  // 0: every header is read when the chain reaches it, in order (tests
  // that count or fail reads rely on that order).
  unsigned prefetch_threads = 0;
  // Told about every synced chunk whose data fails its checksum
  // (kCorruptData) and about a torn tail (kTornChunk).
  Reporter* reporter = nullptr;
};

// Follows the chunk chain from the record's tail. Stops quietly at the
// first header that does not continue the chain, and at the first chunk
// after trusted_seq whose data does not match its checksum.
Status ScanLog(Device& cache, const CacheMeta& meta, const ScanOptions& opts, LogScan* out);

// A log whose chain ends although a later chunk of this cache records the
// chunk at the end as synced: data that was durable cannot be read any more
// (a damaged header or data in the middle of the log), not a torn tail.
// Replaying only the chain would silently roll the image back, so mount,
// offline writeback and check all look for it, through this one call.
struct SyncedLoss {
  bool found = false;
  uint64_t end_seq = 0;         // the first chunk seq the chain is missing
  uint64_t end_offset = 0;      // cache byte offset where the chain ends
  uint64_t witness_seq = 0;     // a later chunk that records end_seq as synced
  uint64_t witness_offset = 0;  // its cache byte offset
  // Readable chunks at or after end_seq that replay leaves out, and the
  // data blocks they carry (the damaged chunk itself may not be counted).
  uint64_t lost_chunks = 0;
  uint64_t lost_blocks = 0;
  // The highest chunk seq of this cache found in any slot: a log restarted
  // after accepting the loss continues above it, so that no old chunk is
  // ever read as a witness again.
  uint64_t max_seq = 0;
  // When the last chunk that survives was cut (0: unknown or none): the
  // flush point the image rolls back to.
  uint64_t survivor_ms = 0;
};

// Reads the first header of every segment slot outside the chain (in
// parallel with `threads` > 0) and walks the slots that can hold chunks
// newer than the chain's end. Never writes. A loss found is reported
// (kSyncedLoss) to `reporter` when there is one.
Status FindSyncedLoss(Device& cache, const CacheMeta& meta, const LogScan& scan, unsigned threads,
                      SyncedLoss* out, Reporter* reporter = nullptr);

// One sentence for a SyncedLoss that was found: what is lost, where.
std::string DescribeSyncedLoss(const SyncedLoss& loss);
// The flush point accepting it rolls the image back to: "chunk seq N (cut
// 2026-12-02 12:31:14)".
std::string RollbackPointText(const SyncedLoss& loss);

// ---------------------------------------------------------------- dump

// The chunks laid out in the slot of one segment id (what `wbfs dump
// --segment` shows), and why the walk ended.
struct SegmentDump {
  struct Chunk {
    uint64_t offset = 0;  // cache byte offset of its header
    format::ChunkHeader header;
  };
  std::vector<Chunk> chunks;
  WalkStop stop = WalkStop::kNone;
  std::string detail;          // kBadHeader: the decoder's message
  uint64_t other_segment = 0;  // kOtherSlot: the segment id the slot holds
};
// An I/O error names the offset it failed at in *err_offset.
Status DumpSegment(Device& cache, const format::Superblock& sb, uint64_t segment_id,
                   SegmentDump* out, uint64_t* err_offset);

}  // namespace wbfs::log

#endif  // WBFS_LOG_LOG_READER_H_
