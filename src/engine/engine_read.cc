// The read path: PlanReadLocked (under the lock: RAM copies and zeros
// filled in, the rest planned and pinned) into a ReadPlan, then the I/O
// without the lock (ReadExtents, VerifyBlocks: engine/read_plan.h), then
// unpin and stage; and the staging of read misses into the log as clean
// blocks.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "engine/engine_impl.h"
#include "engine/pieces.h"

namespace wbfs::engine_detail {

namespace {

using format::kSectorSize;

// A read's backing pieces separated by at most kReadGapMax bytes that come
// from elsewhere (the cache, RAM, zeros) are read as one span of at most
// kReadSpanMax (ReadExtents): on an HDD a seek costs ~5 ms, the time to
// read ~750 KB.
constexpr uint64_t kReadGapMax = 256 << 10;
constexpr uint64_t kReadSpanMax = 4 << 20;

}  // namespace


Status EngineImpl::Read(uint64_t off, void* buf, size_t len) {
  if (off > Size() || len > Size() - off) return Status::OutOfRange("read beyond the image");
  ReadPlan plan;
  {
    Lock lk(mu_);
    PlanReadLocked(off, len, static_cast<uint8_t*>(buf), &plan);
  }
  Status result = ReadExtents(*cache_, *backing_, plan.ext, kReadGapMax, kReadSpanMax);
  std::vector<const ReadPlan::Verify*> bad;
  if (result.ok() && !plan.verify.empty()) result = VerifyBlocks(*cache_, plan.verify, &bad);
  // Read errors go to the caller; the log hears of each episode once.
  if (!result.ok() && !read_failing_.exchange(true)) {
    Log("read failed: " + result.message() + "; the read returns EIO");
  } else if (result.ok() && read_failing_.load(std::memory_order_relaxed) &&
             read_failing_.exchange(false)) {
    Log("reads work again");
  }
  if (!plan.pinned.empty() || !plan.staged.empty()) {
    Lock lk(mu_);
    for (const ReadPlan::Verify* v : bad) result = BadBlockLocked(v->cache_off, v->block);
    for (uint32_t slot : plan.pinned) map_.BookOf(slot).pins--;
    cv_.notify_all();
    for (const ReadPlan::Staged& x : plan.staged) {
      if (result.ok()) stager_.Fill(x.block, x.data);
      else stager_.Cancel(x.block);
    }
    if (!plan.staged.empty()) InjectStagedLocked(std::chrono::milliseconds(opts_.read_stage_delay_ms));
  }
  return result;
}

void EngineImpl::PlanReadLocked(uint64_t off, size_t len, uint8_t* out, ReadPlan* plan) {
  const int64_t threshold = tun_.read_cache_threshold;
  const bool stage = threshold > 0 && !failed_ && !closed_ &&
                     stager_.Track(off / kBlockSize, (off + len + kBlockSize - 1) / kBlockSize, threshold);
  for (Pieces p(off, len); !p.done(); p.Next()) {
    const uint64_t block = p.block();
    const uint32_t lo = p.lo(), hi = p.hi();
    uint8_t* dst = out + p.at();
    unsigned stat = p.whole() ? kStatFull : 0;
    const uint32_t slot = map_.Find(block);
    const bool zeroed = zeros_.Covers(block);  // a pending discard: not the backing's data
    if (slot == BlockIndex::kNone) {
      if (zeroed) std::memset(dst, 0, hi - lo);
      else plan->Add(dst, block * kBlockSize + lo, hi - lo, false);
      if (stage && (stat & kStatFull) && stager_.Reserve(block)) plan->staged.push_back({block, dst});
      st_.stat[stat]++;
      continue;
    }
    stat |= kStatHit;
    const uint8_t mask = map_.Mask(slot);
    const uint8_t* ram = log_.RamBlock(slot);
    if (log_.InCurrentSegment(slot)) stat |= kStatBuffer;
    bool pin = false;
    bool from_cache = false;  // some sectors come from the cache device
    // Walk the sectors, each from the cache (valid) or the backing.
    for (uint32_t b = lo; b < hi;) {
      const bool cached = mask & (1u << (b / kSectorSize));
      uint32_t e = b;
      while (e < hi && ((mask >> (e / kSectorSize)) & 1u) == cached) {
        e = std::min(hi, (e / kSectorSize + 1) * kSectorSize);
      }
      if (!cached) {
        if (zeroed) std::memset(dst + (b - lo), 0, e - b);
        else plan->Add(dst + (b - lo), block * kBlockSize + b, e - b, false);
      } else if (ram != nullptr) {
        std::memcpy(dst + (b - lo), ram + b, e - b);
      } else if (!block_crcs_) {
        plan->Add(dst + (b - lo), log_.CacheOffset(slot) + b, e - b, true);
        pin = true;
      } else {
        from_cache = true;  // whole block, below
      }
      b = e;
    }
    if (from_cache) {
      pin = true;
      const bool whole = lo == 0 && hi == kBlockSize && mask == format::kFullMask;
      plan->verify.push_back({dst, log_.CacheOffset(slot), block, map_.crc(slot), !whole, lo, hi, mask});
      if (whole) plan->Add(dst, log_.CacheOffset(slot), kBlockSize, true);
    }
    if (pin) {
      map_.BookOf(slot).pins++;
      plan->pinned.push_back(slot);
    }
    st_.stat[stat]++;
  }
}

void EngineImpl::InjectStagedLocked(ReadStager::Clock::duration min_age) {
  if (stager_.empty() || failed_ || closed_) return;
  const std::vector<uint64_t> ready = stager_.Injectable(tun_.read_cache_threshold, min_age);
  if (ready.empty()) return;
  // Write-around: a staged read may have seen a write that went around the
  // cache and is not durable on the backing yet. Its clean copy must not
  // become durable in the log first, or a crash would leave the cache
  // disagreeing with the backing (found by the simulation).
  if (write_around() && around_gen_ != around_synced_) {
    const uint64_t gen = around_gen_;
    mu_.unlock();
    Status st = backing_->Sync();
    mu_.lock();
    if (!st.ok()) return;  // not now; the cells wait
    around_synced_ = std::max(around_synced_, gen);
  }
  for (uint64_t block : ready) {
    if (!EnsureRoomLocked().ok()) return;  // may drop the lock: look again
    const uint8_t* data = stager_.Data(block);
    if (data == nullptr) continue;  // cancelled meanwhile
    if (map_.Find(block) == BlockIndex::kNone) {
      PlaceLocked(block, data, format::kFullMask, false);
      st_.nr_staged_blocks++;
    }
    stager_.Remove(block);
  }
}

}  // namespace wbfs::engine_detail
