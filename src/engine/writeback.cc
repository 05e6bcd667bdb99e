#include "engine/writeback.h"

#include <algorithm>

#include "util/aligned_buffer.h"

namespace wbfs::wb {

using format::kBlockSize;

Outcome Run(Device& cache, Device& backing, journal::Journal* journal, const format::Superblock& sb,
            Plan* plan, const RunOptions& o, const std::atomic<bool>* abort) {
  Outcome out;
  AlignedBuffer data(plan->total);
  for (const Range& r : plan->ranges) {
    out.st = cache.ReadAt(format::SegmentBlockOffset(sb, r.id, r.from), data.data() + r.data,
                          size_t{r.to - r.from} * kBlockSize);
    if (!out.st.ok()) return out;
  }
  // What reaches the backing is verified first: a block that fails its
  // checksum stops the unit (nothing is applied, the block stays dirty),
  // or with accept_loss is left out (the backing keeps its older copy).
  if (o.verify) {
    out.bad = CheckData(&plan->net, data.data(), o.accept_loss);
    if (!out.bad.empty() && !o.accept_loss) {
      out.st = Status::Corruption(std::to_string(out.bad.size()) +
                                  " cached blocks do not match their checksum, the first at image offset " +
                                  std::to_string(out.bad[0].block * kBlockSize) +
                                  "; they stay dirty and are not written back (see wbfs check)");
      return out;
    }
  }
  AlignedBuffer packed;
  const journal::Unit unit = Pack(*plan, data.data(), &packed);
  data.Reset(0);  // packed: not held through the (long) apply
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
