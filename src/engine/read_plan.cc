#include "engine/read_plan.h"

#include <algorithm>
#include <cstring>

#include "util/aligned_buffer.h"
#include "util/crc32c.h"
#include "wbfs/format.h"

namespace wbfs {

using format::kBlockSize;
using format::kSectorSize;

void ReadPlan::Add(uint8_t* dst, uint64_t src, size_t n, bool cache) {
  if (!ext.empty()) {
    Extent& e = ext.back();
    if (e.cache == cache && e.src + e.len == src && e.dst + e.len == dst) {
      e.len += n;
      return;
    }
  }
  ext.push_back({dst, src, n, cache});
}

Status ReadExtents(Device& cache, Device& backing, const std::vector<ReadPlan::Extent>& ext,
                   uint64_t gap_max, uint64_t span_max) {
  Status result;
  AlignedBuffer span_buf;
  for (size_t i = 0; i < ext.size() && result.ok();) {
    const ReadPlan::Extent& e = ext[i];
    size_t j = i + 1;
    if (!e.cache) {
      while (j < ext.size() && !ext[j].cache && ext[j].src >= ext[j - 1].src + ext[j - 1].len &&
             ext[j].src - (ext[j - 1].src + ext[j - 1].len) <= gap_max &&
             ext[j].src + ext[j].len - e.src <= span_max) {
        j++;
      }
    }
    if (e.cache) {
      result = cache.ReadAt(e.src, e.dst, e.len);
    } else if (j == i + 1) {
      result = backing.ReadAt(e.src, e.dst, e.len);
    } else {
      const uint64_t first = e.src, end = ext[j - 1].src + ext[j - 1].len;
      if (span_buf.size() < end - first) span_buf.Reset(static_cast<size_t>(end - first));
      result = backing.ReadAt(first, span_buf.data(), static_cast<size_t>(end - first));
      for (size_t k = i; k < j && result.ok(); k++) {
        std::memcpy(ext[k].dst, span_buf.data() + (ext[k].src - first), ext[k].len);
      }
    }
    i = j;
  }
  return result;
}

Status VerifyBlocks(Device& cache, const std::vector<ReadPlan::Verify>& verify,
                    std::vector<const ReadPlan::Verify*>* bad) {
  AlignedBuffer bounce;
  for (const ReadPlan::Verify& v : verify) {
    const uint8_t* data = v.dst;
    if (v.bounce) {
      if (bounce.size() == 0) bounce.Reset(kBlockSize);
      WBFS_RETURN_IF_ERROR(cache.ReadAt(v.cache_off, bounce.data(), kBlockSize));
      data = bounce.data();
    }
    if (crc32c::Value(data, kBlockSize) != v.crc) {
      bad->push_back(&v);
      continue;
    }
    if (!v.bounce) continue;
    for (uint32_t sec = v.lo / kSectorSize; sec * kSectorSize < v.hi; sec++) {
      if (!(v.mask & (1u << sec))) continue;
      const uint32_t a = std::max(v.lo, sec * kSectorSize), b = std::min(v.hi, (sec + 1) * kSectorSize);
      std::memcpy(v.dst + (a - v.lo), data + a, b - a);
    }
  }
  return Status::OK();
}

}  // namespace wbfs
