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

struct EngineOptions {
  Tunables tunables;
  // RAM buffers of one segment (512 KiB) each: the segment being filled
  // plus the ones waiting for the flusher. At least 2.
  uint32_t nr_ram_buffers = 8;
  // The flusher syncs the cache after this many full segments even when
  // nobody calls Flush(), which bounds what replay must checksum.
  uint32_t sync_every_segments = 8;
  // Open-time only: refuse a blank cache instead of formatting it.
  bool format_blank_cache = true;
  // Where the engine reports errors and recoveries (once per episode, not
  // per retry). Called with the engine's lock held: must not call back.
  std::function<void(const std::string&)> log;
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
  uint64_t nr_partial_flushed = 0;  // chunks cut early by a flush
  std::array<uint64_t, 16> stat{};
  uint64_t user_bytes_written = 0;
  uint64_t cache_bytes_written = 0;   // chunks (headers + data) and records
  uint64_t backing_bytes_written = 0; // writeback
  uint64_t nr_chunks_written = 0;
  uint64_t nr_cache_syncs = 0;
  uint64_t replayed_chunks = 0;   // at open
  uint64_t dropped_chunks = 0;    // torn tail dropped at open
  Tunables tunables;
  bool formatted = false;         // the cache was formatted at open
  bool failed = false;
  std::string error;              // why, when failed
};

class Engine {
 public:
  // Formats a blank cache or replays a formatted one. Refuses (without
  // writing a byte) a cache that is neither, one formatted for a backing
  // of another size, or a backing whose size is not a multiple of 4 KiB.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& opts,
                                              std::unique_ptr<Device> backing,
                                              std::unique_ptr<Device> cache);
  virtual ~Engine() = default;

  virtual uint64_t Size() const = 0;
  // REQUIRES: off + len <= Size().
  virtual Status Read(uint64_t off, void* buf, size_t len) = 0;
  virtual Status Write(uint64_t off, const void* buf, size_t len) = 0;
  virtual Status Flush() = 0;
  // Writes every dirty block back to the backing device and syncs it.
  virtual Status WritebackAll() = 0;
  // Seals the buffer, makes the cache durable and records the superblock.
  // Further calls fail. Also done by the destructor if not called.
  virtual Status Close() = 0;
  virtual EngineStats Stats() const = 0;
};

}  // namespace wbfs

#endif  // WBFS_ENGINE_H_
