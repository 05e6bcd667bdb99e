// ReadPlan: what one user read takes from where, decided under the engine's
// lock (EngineImpl::PlanReadLocked) and carried out without it: backing
// and cache extents (ReadExtents), cached blocks verified against their
// checksum (VerifyBlocks). The engine pins the segments the plan reads
// from the cache until it is done.
#ifndef WBFS_ENGINE_READ_PLAN_H_
#define WBFS_ENGINE_READ_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "wbfs/device.h"
#include "wbfs/status.h"

namespace wbfs {

struct ReadPlan {
  // Bytes [src, src + len) of the cache or the backing into dst.
  struct Extent {
    uint8_t* dst;
    uint64_t src;
    size_t len;
    bool cache;
  };
  // A block read from the cache device, verified against its crc after the
  // read: whole blocks read straight into the caller's buffer (an extent),
  // blocks needed only in part read whole into a bounce (`bounce`) and
  // their cached sectors of the caller's [lo, hi) copied out.
  struct Verify {
    uint8_t* dst;  // the whole block, or the caller's [lo, hi) of it (bounce)
    uint64_t cache_off;
    uint64_t block;
    uint32_t crc;
    bool bounce;
    uint32_t lo, hi;
    uint8_t mask;
  };
  // A missed block to stage into the cache once the read has it.
  struct Staged {
    uint64_t block;
    const uint8_t* data;
  };

  // Appends an extent, joined to the last one when it continues it.
  void Add(uint8_t* dst, uint64_t src, size_t n, bool cache);

  std::vector<Extent> ext;
  std::vector<Verify> verify;
  std::vector<Staged> staged;
  std::vector<uint32_t> pinned;  // cache slots whose segments the engine pinned
};

// Reads the plan's extents. Backing extents separated by at most `gap_max`
// bytes that come from elsewhere (the cache, RAM, zeros) are read as one
// span of at most `span_max` into a bounce buffer and copied out: a 1 MiB
// read over scattered cached blocks is one backing read, not one per run
// between them (an HDD seeks for each: such a read was 2,263 reads of
// 37 KiB on average).
Status ReadExtents(Device& cache, Device& backing, const std::vector<ReadPlan::Extent>& ext,
                   uint64_t gap_max, uint64_t span_max);

// Checks the plan's cache blocks against their crcs (reading the bounced
// ones first) and copies the bounced ones' cached sectors out. Returns the
// failing ones in `bad` (their bytes are not copied).
Status VerifyBlocks(Device& cache, const std::vector<ReadPlan::Verify>& verify,
                    std::vector<const ReadPlan::Verify*>* bad);

}  // namespace wbfs

#endif  // WBFS_ENGINE_READ_PLAN_H_
