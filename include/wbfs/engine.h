// Engine: the write-back cache over one backing device and one cache
// device. Nothing here knows about FUSE; the FUSE front end and the tests
// drive it through these calls.
//
// Semantics (those of a disk with a volatile write cache):
//   Write   returns once the data is in a RAM buffer (the log chunk);
//   Flush   returns once every write that returned before it began is
//           durable on the cache device;
//   Read    sees every write that returned before it began.
// All public methods are thread-safe.
#ifndef WBFS_ENGINE_H_
#define WBFS_ENGINE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "wbfs/device.h"
#include "wbfs/status.h"
#include "wbfs/tunables.h"

namespace wbfs {

// Memory shared with a process that outlives this one (a supervisor's memfd,
// mapped MAP_SHARED). See EngineOptions::ack_log.
struct AckLogRegion { void* base = nullptr; size_t size = 0; };
// Bytes a caller must map for an ack log (zero-filled at first use).
size_t AckLogBytes();

struct EngineOptions {
  Tunables tunables;
  // RAM buffers of one segment (512 KiB) each: the segment being filled
  // plus the ones waiting for the flusher. At least 2.
  uint32_t nr_ram_buffers = 8;
  // The flusher syncs the cache after this many full segments even when
  // nobody calls Flush(), which bounds what replay must checksum (32 MiB)
  // and what a power cut can take without any fsync. 8 cost streaming
  // writes most of their speed (a sync every 4 MiB).
  uint32_t sync_every_segments = 64;
  // Start the background thread (writeback policy, sync_data_interval,
  // update_sb_record_interval). Tests that drive writeback by hand turn
  // it off.
  bool background = true;
  // false: no threads at all; the caller that cuts a chunk writes it. Every
  // device call then happens in a fixed order (the crash simulation's
  // seeds replay exactly).
  bool threads = true;
  // How long a staged read waits before it is injected into the log, so
  // that interleaved sequential streams can be recognised first.
  uint32_t read_stage_delay_ms = 50;
  // Writeback joins runs of a unit separated by at most this many bytes
  // into one write of a window of at most writeback_fill_window bytes,
  // filling each gap with what the backing holds (one read and one write
  // instead of several writes: an HDD pays ~5 ms per I/O, as much as
  // ~750 KiB of transfer; see journal::FillPolicy). 0: off. Off in
  // write-around mode, where the backing is written outside writeback.
  uint64_t writeback_fill_gap = 256 << 10;
  uint64_t writeback_fill_window = 8 << 20;
  // Open-time only: refuse a blank cache (NotFound) instead of formatting it.
  bool format_blank_cache = true;
  // After formatting a cache, write zeros over the segments the log has
  // not reached yet, in the background, ahead of the log (threads only).
  // For a cache that is a file: a sparse or fallocated file makes every
  // first write into a block allocate or convert it, and the fdatasync
  // after it commit the file system's journal (measured here: 4 KiB
  // write+fdatasync p50 234-297 us on a fresh sparse or fallocated cache,
  // 189-191 us on a written one; 1 MiB streaming writes 1.15-1.27 vs
  // 1.6-1.8 GiB/s). Pointless on a block device.
  bool prefill_new_cache = false;
  // Background writeback (writeback_threshold > 0) with the backing idle
  // also drains the segment being filled once its oldest change is this
  // old, sealing it: fsynced data reaches the backing within seconds on an
  // idle system, not only when the segment fills.
  uint32_t idle_drain_ms = 1000;
  // A writer waiting for room (the log full of dirty data) while writeback
  // fails with an I/O error (a backing that times out, a network store
  // that is briefly away, a full file system) keeps trying, with pauses
  // from 250 ms doubling to 4 s, for this long before its write fails with
  // the backing's error: a transient outage is a pause to the user, not an
  // I/O error; a backing that stays away is an error within a bounded
  // time, not a hang. 0: the first failure fails the write (and always
  // without threads: nothing could change meanwhile). 60 s: a Ceph
  // cluster takes 20 s (osd_heartbeat_grace) to notice a dead OSD and
  // more to re-peer; 30 s was too short for the e2e outage test's 15 s
  // stop on a loaded machine (the OSD came back slowly).
  uint32_t room_retry_ms = 60000;
  // Recovery after data loss on the cache: a cached block that fails its
  // checksum is skipped by writeback (the backing keeps its older copy of
  // that block) instead of stopping writeback with the block kept dirty.
  bool accept_loss = false;
  // Where the engine reports errors and recoveries (once per episode, not
  // per retry). Called with the engine's lock held: must not call back.
  std::function<void(const std::string&)> log;
  // The ack log: with a region (base != nullptr), Write returns only once
  // every block it placed is also recorded there, and a Discard once it
  // is (write-around writes and discards need no record: they are on the
  // backing when they return). A record is dropped once its chunk is
  // written to the cache device. So if this process dies (any way: the
  // region and the page cache survive it), the next Open with the same
  // cache and region applies every acknowledged write again, in order,
  // after replaying the cache, flushes, and only then empties the region;
  // a death meanwhile leaves it for the next Open (applying again is
  // harmless). An unacknowledged write comes back whole per 4 KiB block
  // or not at all. Open may therefore take a while (up to AckLogBytes()'s
  // worth of writes and a flush).
  // The region: at least 4096-aligned (mmap's), zero-filled at first use,
  // AckLogBytes() bytes (fewer slots fit a smaller one; writes then wait
  // for the flusher more often), mapped for the engine's whole life, used
  // by one engine at a time. A region that holds records of another cache
  // is refused (InvalidArgument, nothing changed); an empty one is taken
  // over. Close() leaves it empty; a failed engine leaves its records.
  // base == nullptr: no ack log (the crash simulation, offline tools).
  AckLogRegion ack_log;
};

// The 16 counters of dm-writeboost, index = write*8 + hit*4 + buffer*2 + full,
// one count per 4 KiB piece of a request.
constexpr unsigned kStatWrite = 8, kStatHit = 4, kStatBuffer = 2, kStatFull = 1;
std::string StatName(unsigned index);  // e.g. "write_miss_cache_full"

struct EngineStats {
  uint64_t image_size = 0;
  uint64_t segment_size = 0;
  uint64_t nr_segments = 0;
  uint64_t nr_cache_blocks = 0;
  uint64_t current_id = 0;        // segment being filled (or last filled)
  uint64_t last_flushed_id = 0;   // segment of the newest chunk on the cache
  uint64_t last_writeback_id = 0; // newest segment fully written back
  uint64_t nr_dirty_cache_blocks = 0;
  // The same counts in bytes (what the CLI shows; it never multiplies by
  // the block size itself).
  uint64_t cache_data_bytes = 0;   // nr_cache_blocks
  uint64_t dirty_bytes = 0;        // nr_dirty_cache_blocks
  uint64_t cached_bytes = 0;       // nr_cached_blocks
  uint64_t nr_partial_flushed = 0;  // chunks cut early by a flush
  uint64_t nr_writeback_waits = 0;  // writes that waited for writeback (log full)
  uint64_t nr_staged_blocks = 0;    // read misses staged into the cache
  uint64_t nr_staging = 0;          // read-cache cells pending now
  uint64_t discarded_bytes = 0;
  std::array<uint64_t, 16> stat{};
  uint64_t user_bytes_written = 0;
  uint64_t cache_bytes_written = 0;   // chunks (headers + data) and records
  uint64_t backing_bytes_written = 0; // writeback (gap fill included)
  uint64_t backing_fill_bytes = 0;    // of which gaps rewritten with their own bytes
  uint64_t nr_chunks_written = 0;
  uint64_t nr_cache_syncs = 0;
  uint64_t nr_cached_blocks = 0;  // valid blocks, clean or dirty
  uint64_t nr_cur_batched_writeback = 0;
  int64_t backing_utilization = -1;  // % over the last second; -1 before the first sample
  std::string utilization_source;
  bool dropping_caches = false;   // a drop_caches is writing everything back
  bool writeback_failing = false;
  std::string writeback_error;    // why, while failing (e.g. "...: No space left on device")
  uint64_t replayed_chunks = 0;   // at open
  uint64_t dropped_chunks = 0;    // torn tail dropped at open
  uint64_t pending_discards = 0;  // logged, not yet punched on the backing
  uint64_t nr_writeback_units = 0;
  // The journal (writeback units reach the backing atomically through it).
  bool journal = false;
  std::string journal_name;
  uint64_t journal_bytes_written = 0;
  bool journal_replayed = false;   // at open: an interrupted unit was applied again
  // The flush point the backing alone represents: the image as of the cut
  // of chunk backing_point_seq (wall-clock ms backing_point_ms); 0 when
  // unknown (nothing written back since the cache was formatted, or the
  // backing was written without the journal).
  uint64_t backing_point_seq = 0;
  uint64_t backing_point_ms = 0;
  // Wall-clock ms of the oldest change (write or discard) that is only on
  // the cache; 0: none. What losing the cache now would lose starts here.
  uint64_t oldest_unapplied_ms = 0;
  Tunables tunables;
  bool formatted = false;         // the cache was formatted at open
  bool prefilling = false;        // zeros are being written ahead of the log
  uint64_t cache_prefill_bytes = 0;  // written so (not in cache_bytes_written)
  std::string prefill_stopped;       // why the prefill ended early (ENOSPC...), or empty
  // Cached blocks found not to match their checksum (version 3 caches):
  // reads of them fail with EIO and writeback keeps them dirty.
  uint64_t nr_checksum_errors = 0;
  // The ack log (EngineOptions::ack_log): writes + discards applied again
  // from the region at open, and records live now.
  uint64_t ack_log_rebuilt = 0;
  uint64_t ack_log_records = 0;
  bool failed = false;
  std::string error;              // why, when failed
};

class Engine {
 public:
  // Formats a blank cache or replays a formatted one. Refuses (without
  // writing a byte) a cache that is neither, one formatted for a backing
  // of another size, or a backing whose size is not a multiple of 4 KiB.
  // With a `journal` device (never the cache), writeback goes through the
  // journal (the backing alone is always the image at some flush point),
  // and a unit a crash interrupted is applied again first of all.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& opts,
                                              std::unique_ptr<Device> backing,
                                              std::unique_ptr<Device> cache,
                                              std::unique_ptr<Device> journal = nullptr);
  virtual ~Engine() = default;

  virtual uint64_t Size() const = 0;
  // REQUIRES: off + len <= Size().
  virtual Status Read(uint64_t off, void* buf, size_t len) = 0;
  virtual Status Write(uint64_t off, const void* buf, size_t len) = 0;
  virtual Status Flush() = 0;
  // Makes [off, off + len) read as zeros: cached copies are dropped
  // (durably, in the log) and the backing range is punched or zeroed;
  // partial blocks at the ends are zeroed like writes. Durable on return.
  virtual Status Discard(uint64_t off, uint64_t len) = 0;
  // Writes every dirty block back to the backing device and syncs it.
  virtual Status WritebackAll() = 0;
  // Writes back the `n` oldest sealed segments that are not yet (one batch).
  virtual Status WritebackOldest(uint64_t n) = 0;
  // dm-writeboost's drop_caches: the background thread writes everything
  // back until no dirty block remains; watch nr_dirty_cache_blocks.
  virtual void StartDropCaches() = 0;
  // Sets an online tunable; InvalidArgument naming the key otherwise.
  virtual Status SetTunable(const std::string& key, int64_t value) = 0;
  // Zeroes the 16 counters and nr_partial_flushed.
  virtual void ClearStats() = 0;
  // Seals the buffer, makes the cache durable and records the superblock.
  // Further calls fail. Also done by the destructor if not called.
  virtual Status Close() = 0;
  // Close() for a cache with no dirty block left (after WritebackAll):
  // the record then points past every chunk, so the next open replays
  // nothing: the cache is clean and the backing alone is the image.
  // Refused while dirty blocks remain.
  virtual Status CloseClean() = 0;
  virtual EngineStats Stats() const = 0;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_H_
