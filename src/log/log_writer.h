// LogWriter: the write side of the cache log, the mirror of log_reader.h.
//
// It owns what the log is made of while it is being written: the ring of
// segments (which id occupies which slot, how far each is filled, its RAM
// buffer), the open chunk, the queue of cut chunks waiting for their
// write, the sequence numbers (cut, flushed, durable) and the checksum
// chain, the superblock record, and the format of a blank cache. It knows
// nothing of image blocks, dirty data or the backing: the engine decides
// what goes into a chunk (it encodes the entries), when a segment slot may
// be reused (writeback, pins) and what a failure means.
//
// Life of a chunk. Append() copies blocks into the open chunk's RAM; the
// engine encodes their entries into OpenHeader() and calls Cut(), which
// gives the chunk its seq and queues it; FlushFront() seals the header
// (checksums, chain fields) and writes header and data to the cache in
// one sequential write; MarkDurable() records a cache sync that covered
// it. WriteRecord() moves the record's tail once the segments behind it
// are written back.
//
// Locking. A LogWriter has no lock of its own: the engine declares it
// GUARDED_BY its mutex, so every call holds that mutex. The calls that do
// I/O (FlushFront, WriteRecord) take the mutex as an argument and drop it
// around the I/O only, reading state that is frozen meanwhile (a cut
// chunk's blocks and the job copied before the unlock).
#ifndef WBFS_LOG_LOG_WRITER_H_
#define WBFS_LOG_LOG_WRITER_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "log/log_reader.h"
#include "util/aligned_buffer.h"
#include "util/mutex.h"
#include "wbfs/device.h"
#include "wbfs/format.h"
#include "wbfs/status.h"

namespace wbfs::log {

// What the log knows of one ring slot.
struct SegmentLog {
  uint64_t id = 0;            // occupant (0: none since format)
  uint32_t fill = 0;          // blocks used by cut chunks (headers included)
  uint32_t unflushed = 0;     // cut chunks not written yet
  bool sealed = false;        // no chunk will be added
  uint8_t* buf = nullptr;     // RAM copy of blocks [buf_start, 128) while held
  uint32_t buf_start = 0;
  uint64_t first_chunk_seq = 0;  // 0: no chunk yet
  uint32_t first_prev_crc = 0;   // prev_crc of that chunk, once known
  uint64_t last_chunk_seq = 0;   // its newest chunk
  uint64_t last_ms = 0;          // when that chunk was cut
};

// A cut chunk waiting for its write.
struct FlushJob {
  uint32_t ring;
  uint64_t segment_id;
  uint32_t offset;      // of its header block in the segment
  uint16_t nr_blocks;
  uint16_t nr_extents;  // an extent chunk: no data blocks
  uint64_t seq;
  uint64_t time_ms;
  bool seal;  // the segment's last chunk: replay goes on at the next segment
};

// What FlushFront wrote.
struct FlushedChunk {
  bool written = false;   // false: skipped (the engine had failed)
  uint32_t first_slot = 0;  // cache slot (ring * 128 + position) of its first data block
  uint16_t nr_blocks = 0;
  uint32_t block_crcs[format::kMaxChunkBlocks];  // when the cache has per-block checksums
  uint64_t bytes = 0;
  bool sync_due = false;  // sync_every_segments segments were completed since the last one
};

class LogWriter {
 public:
  struct Options {
    uint32_t nr_ram_buffers = 2;       // segment buffers (at least 2)
    uint32_t sync_every_segments = 64;  // FlushedChunk::sync_due after that many (0: after each)
  };
  LogWriter(const format::Superblock& sb, Device* cache, const Options& o, uint64_t epoch);
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // ---- the ring
  uint64_t nr_segments() const { return sb_.nr_segments; }
  uint32_t RingSlot(uint64_t segment_id) const {
    return static_cast<uint32_t>((segment_id - 1) % sb_.nr_segments);
  }
  SegmentLog& seg(uint32_t ring) { return ring_[ring]; }
  const SegmentLog& seg(uint32_t ring) const { return ring_[ring]; }
  uint64_t last_seg_id() const { return last_seg_id_; }
  // The newest segment no chunk will be added to.
  uint64_t last_sealed_id() const { return cur_ >= 0 ? ring_[cur_].id - 1 : last_seg_id_; }
  // RAM copy of cache slot `slot` (ring * 128 + position), or nullptr when
  // only on the cache device.
  uint8_t* RamBlock(uint32_t slot);
  uint64_t CacheOffset(uint32_t slot) const;

  // ---- the segment being filled and its open chunk
  // Its ring slot, or -1: the next Append needs Begin() first.
  int64_t cur() const { return cur_; }
  uint32_t chunk_start() const { return chunk_start_; }  // the open chunk's header position
  uint32_t chunk_n() const { return chunk_n_; }          // its data blocks so far
  bool HasRoom() const { return cur_ >= 0 && chunk_start_ + 1 + chunk_n_ < format::kBlocksPerSegment; }
  bool InCurrentSegment(uint32_t slot) const {
    return cur_ >= 0 && slot / format::kBlocksPerSegment == static_cast<uint32_t>(cur_);
  }
  // Still changeable in place: a data block of the open chunk.
  bool InOpenChunk(uint32_t slot) const;
  // Copies a block into the open chunk (HasRoom() must hold); its slot.
  uint32_t Append(const uint8_t* block);
  // The open chunk's header block, zeroed, for the caller's entries.
  uint8_t* OpenHeader();
  // Queues the open chunk (nr_blocks data blocks, or nr_extents extents)
  // with the next seq; the next chunk opens after it, or the segment is
  // sealed (`seal`, or no chunk fits any more). Returns the seq.
  uint64_t Cut(uint16_t nr_blocks, uint16_t nr_extents, bool seal, uint64_t now_ms);

  // ---- taking a ring slot for the next segment
  // Gives back a sealed, flushed segment's buffer (no-op when none).
  void ReleaseBuffer(uint32_t ring);
  bool HasFreeBuffer() const { return !free_bufs_.empty(); }
  // Segment last_seg_id() + 1 takes its ring slot: the caller made sure
  // the previous occupant is written back, unpinned, flushed and behind
  // the record's tail, and that a buffer is free.
  void Begin();

  // ---- writing cut chunks
  bool HasJobs() const { return !jobs_.empty(); }
  // Writes the oldest cut chunk (seals its header; header and data in one
  // write), dropping `mu` for the checksums and the write. `skip`: the
  // engine failed: the job is dropped unwritten. An error leaves the
  // sequence numbers where they were (the engine fails).
  Status FlushFront(Mutex* mu, bool skip, FlushedChunk* out) REQUIRES(mu);

  // ---- sequence numbers: next > last_cut >= flushed >= durable
  uint64_t next_seq() const { return next_seq_; }
  uint64_t last_cut_seq() const { return last_cut_seq_; }
  uint64_t flushed_seq() const { return flushed_seq_; }
  uint64_t flushed_seg_id() const { return flushed_seg_id_; }
  uint64_t durable_seq() const { return durable_seq_; }
  // A cache sync covered every chunk up to `seq`.
  void MarkDurable(uint64_t seq) { durable_seq_ = std::max(durable_seq_, seq); }

  // ---- the superblock record
  uint64_t record_tail_seg() const { return record_tail_seg_; }
  // Syncs the cache, writes the next record (tail after `last_writeback_id`,
  // `clean` flag) to the other slot and syncs again, dropping `mu` for the
  // I/O. Every cut chunk must be flushed. The caller lets one thread in at a
  // time: two would pick the same slot.
  Status WriteRecord(Mutex* mu, uint64_t last_writeback_id, bool clean) REQUIRES(mu);

  // ---- resuming a log
  // Where the record says the log resumes (before replay).
  void ResumeAtRecord(const format::Record& r);
  // Replay met chunk `c` (in log order): its segment's bookkeeping (a new
  // occupant of the ring slot is sealed until ResumeAfterScan continues the
  // last one). `now_ms` stands in for a chunk without a cut time. True when
  // `c` is the first chunk of its segment.
  bool ReplayChunk(const ChunkInfo& c, uint64_t now_ms);
  // After replay: where the scan ended. `end_block` != 0: the last segment
  // is continued from that block.
  void ResumeAfterScan(const LogScan& scan);
  // Every seq below the next is cut, flushed and durable (a fresh start),
  // and the next seq is at least `min_next` (0: unchanged).
  void SettleSeqs(uint64_t min_next = 0);

  // Writes the superblock and the records of a blank cache, for a backing
  // of `backing_size` bytes and identity `backing_id` (Device::Identity).
  static Status Format(Device& cache, uint64_t backing_size, const std::string& backing_id, uint64_t nonce,
                       CacheMeta* meta);

 private:
  const format::Superblock sb_;
  Device* const cache_;
  const Options opts_;
  const uint64_t epoch_;

  std::vector<SegmentLog> ring_;
  AlignedBuffer pool_;
  std::vector<uint8_t*> free_bufs_;
  uint64_t last_seg_id_ = 0;

  // The open chunk: ring slot cur_ (or -1), header at chunk_start_, then
  // chunk_n_ data blocks that may still be changed in place.
  int64_t cur_ = -1;
  uint32_t chunk_start_ = 0;
  uint32_t chunk_n_ = 0;

  std::deque<FlushJob> jobs_;
  uint64_t next_seq_ = 1;
  uint64_t last_cut_seq_ = 0;
  uint64_t flushed_seq_ = 0;
  uint64_t flushed_seg_id_ = 0;
  uint64_t durable_seq_ = 0;
  uint32_t last_crc_ = 0;  // header crc of chunk flushed_seq_
  uint32_t segments_since_sync_ = 0;

  uint64_t record_seq_ = 0;
  uint64_t record_tail_seg_ = 1;
};

}  // namespace wbfs::log

#endif  // WBFS_LOG_LOG_WRITER_H_
