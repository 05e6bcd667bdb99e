#include "engine/writeback.h"

#include <algorithm>
#include <cstring>

#include "util/aligned_buffer.h"
#include "util/crc32c.h"

namespace wbfs::wb {

using format::kBlockSize;

CacheData::CacheData(Device& cache, const format::Superblock& sb, const std::vector<Piece>& pieces,
                     const Plan* plan, const uint8_t* mem)
    : cache_(cache), sb_(sb), pieces_(pieces), mem_(mem) {
  if (mem_ == nullptr) return;
  ring_base_.assign(sb.nr_segments, -1);
  for (const Range& r : plan->ranges) {
    ring_base_[r.ring] = static_cast<int64_t>(r.data) - static_cast<int64_t>(size_t{r.from} * kBlockSize);
  }
}

// With mem_, the offset in it rather than in the cache.
uint64_t CacheData::CacheOffset(const Piece& p) const {
  const uint32_t ring = p.slot / format::kBlocksPerSegment, pos = p.slot % format::kBlocksPerSegment;
  if (mem_ != nullptr) return static_cast<uint64_t>(ring_base_[ring]) + uint64_t{pos} * kBlockSize + p.from;
  return format::SegmentBlockOffset(sb_, uint64_t{ring} + 1, pos) + p.from;
}

Status CacheData::Read(uint64_t at, uint8_t* dst, size_t len) {
  // The piece holding `at`: the last one that starts at or before it.
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), at,
                             [](uint64_t x, const Piece& p) { return x < p.at; });
  if (it == pieces_.begin()) return Status::InvalidArgument("unit data: read before its first piece");
  --it;
  while (len > 0) {
    if (it == pieces_.end() || at >= it->at + it->len) {
      return Status::InvalidArgument("unit data: read beyond its last piece");
    }
    // One read for this piece and the following ones that continue it in
    // the cache (a run of blocks written together lies together).
    const uint64_t off = CacheOffset(*it) + (at - it->at);
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, it->at + it->len - at));
    for (auto next = it + 1; n < len && next != pieces_.end() && CacheOffset(*next) == off + n; ++next) {
      n += std::min<size_t>(len - n, next->len);
      it = next;
    }
    if (mem_ != nullptr) std::memcpy(dst, mem_ + off, n);
    else WBFS_RETURN_IF_ERROR(cache_.ReadAt(off, dst, n));
    dst += n;
    at += n;
    len -= n;
    if (len > 0 && at >= it->at + it->len) ++it;
  }
  return Status::OK();
}

namespace {

// Checks every net block against its checksum: in `mem` (the unit read
// whole), or reading the unit's segments from the cache one range at a
// time.
Status Verify(Device& cache, const format::Superblock& sb, Plan* plan, const uint8_t* mem, bool leave_out,
              std::vector<Item>* bad) {
  std::vector<Item*> order;  // the net items by where they lie in the ranges
  for (Item& it : plan->net) {
    if (!it.dropped) order.push_back(&it);
  }
  std::sort(order.begin(), order.end(), [](const Item* a, const Item* b) { return a->data < b->data; });
  AlignedBuffer buf;
  buf.ResetUninitialized(mem == nullptr ? format::kSegmentSize : 0);  // each range is read before it is checked
  size_t k = 0;
  for (const Range& r : plan->ranges) {
    const size_t len = size_t{r.to - r.from} * kBlockSize;
    std::vector<Item*> in;
    while (k < order.size() && order[k]->data < r.data + len) in.push_back(order[k++]);
    if (in.empty()) continue;
    const uint8_t* at = buf.data();
    if (mem != nullptr) {
      at = mem + r.data;
    } else {
      WBFS_RETURN_IF_ERROR(cache.ReadAt(format::SegmentBlockOffset(sb, r.id, r.from), buf.data(), len));
    }
    const std::vector<Item> b = CheckData(
        in, [&](const Item& it) { return crc32c::Value(at + (it.data - r.data), kBlockSize); }, leave_out);
    bad->insert(bad->end(), b.begin(), b.end());
  }
  return Status::OK();
}

}  // namespace

Outcome Run(Device& cache, Device& backing, journal::Journal* journal, const format::Superblock& sb,
            Plan* plan, const RunOptions& o, const std::atomic<bool>* abort) {
  Outcome out;
  AlignedBuffer mem;
  const uint8_t* m = nullptr;  // the unit's data read whole, if it is small enough
  if (plan->total <= o.memory_unit) {
    mem.ResetUninitialized(plan->total);  // the ranges below fill it whole
    for (const Range& r : plan->ranges) {
      out.st = cache.ReadAt(format::SegmentBlockOffset(sb, r.id, r.from), mem.data() + r.data,
                            size_t{r.to - r.from} * kBlockSize);
      if (!out.st.ok()) return out;
    }
    m = mem.data();
  }
  // What reaches the backing is verified first: a block that fails its
  // checksum stops the unit (nothing is applied, the block stays dirty),
  // or with accept_loss is left out (the backing keeps its older copy).
  if (o.verify) {
    out.st = Verify(cache, sb, plan, m, o.accept_loss, &out.bad);
    if (!out.st.ok()) return out;
    if (!out.bad.empty() && !o.accept_loss) {
      out.st = Status::Corruption(std::to_string(out.bad.size()) +
                                  " cached blocks do not match their checksum, the first at image offset " +
                                  std::to_string(out.bad[0].block * kBlockSize) +
                                  "; they stay dirty and are not written back (see wbfs check)");
      return out;
    }
  }
  std::vector<Piece> pieces;
  journal::Unit unit = Pack(*plan, &pieces);
  CacheData data(cache, sb, pieces, plan, m);
  unit.data = &data;
  out.empty = unit.runs.empty() && unit.punches.empty();
  if (out.empty) return out;
  out.st = journal ? journal->Write(backing, unit, abort, o.fill, &out.applied)
                   : journal::ApplyUnit(backing, unit, abort, o.fill, &out.applied);
  return out;
}

void Carry::Cover(uint64_t* upto, uint64_t* batch, bool* current) const {
  if (redo_count_ == 0) return;
  *upto = std::max(*upto, redo_upto_);
  *batch = std::max(*batch, redo_count_);
  *current = *current || redo_current_;
}

bool Carry::Failed(const Status& st, bool redo, uint64_t upto, uint64_t count, bool current) {
  if (redo) {
    redo_upto_ = upto;
    redo_count_ = count;
    redo_current_ = current;
  }
  if (st.code() == Status::Code::kFailed) return false;  // stopped for unmount: not a failure
  const bool first = !failing_;
  failing_ = true;
  error_ = st.message();
  return first;
}

bool Carry::Succeeded(const format::FlushPoint& point) {
  redo_upto_ = redo_count_ = 0;
  redo_current_ = false;
  const bool was = failing_;
  failing_ = false;
  error_.clear();
  retry_ms_ = retry_at_ms_ = 0;
  point_ = point;
  return was;
}

void Carry::BackOff(uint64_t now_ms) {
  retry_ms_ = std::min<uint64_t>(kMaxRetryMs, retry_ms_ == 0 ? 1000 : retry_ms_ * 2);
  retry_at_ms_ = now_ms + retry_ms_;
}

}  // namespace wbfs::wb
