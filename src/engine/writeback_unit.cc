#include "engine/writeback_unit.h"

#include <algorithm>

#include "engine/block_index.h"
#include "util/crc32c.h"

namespace wbfs::wb {

using format::kBlockSize;
using format::kBlocksPerSegment;
using format::kSectorSize;
using format::kSectorsPerBlock;

Plan BuildPlan(const std::vector<SegmentView>& segs, const std::vector<uint64_t>& slots,
               const std::vector<uint32_t>& crcs, uint64_t cache_nonce, bool all_versions) {
  Plan plan;
  plan.point.cache_nonce = cache_nonce;
  plan.ends.resize(segs.size());
  std::vector<Item>& items = plan.taken;
  for (size_t k = 0; k < segs.size(); k++) {
    const SegmentView& s = segs[k];
    plan.ends[k] = s.fill;
    if (s.last_chunk_seq > plan.point.chunk_seq) {
      plan.point.chunk_seq = s.last_chunk_seq;
      plan.point.segment_id = s.id;
      plan.point.whole = s.sealed;
      plan.point.time_ms = s.last_ms;
    }
    if (s.discards != nullptr) {
      for (const PendingDiscard& d : *s.discards) plan.punches.push_back({d.start, d.count, (k << 8) | d.pos});
    }
    uint32_t from = kBlocksPerSegment, to = 0;
    const size_t first_item = items.size();
    for (uint32_t pos = s.applied; pos < s.fill; pos++) {
      const uint32_t slot = s.ring * kBlocksPerSegment + pos;
      const uint64_t w = slots[slot];
      const bool take = all_versions ? SlotWord::Logged(w) : SlotWord::Valid(w) && SlotWord::Dirty(w);
      if (!take) continue;
      items.push_back({SlotWord::Block(w), slot, SlotWord::Mask(w), false, (k << 8) | pos, 0,
                       crcs.empty() ? 0 : crcs[slot]});
      from = std::min(from, pos);
      to = pos + 1;
    }
    if (items.size() == first_item) continue;
    for (size_t i = first_item; i < items.size(); i++) {
      items[i].data = plan.total + size_t{items[i].slot % kBlocksPerSegment - from} * kBlockSize;
    }
    plan.ranges.push_back({s.ring, s.id, from, to, plan.total});
    plan.total += size_t{to - from} * kBlockSize;
  }
  // The unit's net effect: per block its last version, unless a discard
  // later in the unit covers it (the punch comes first when applied).
  std::vector<Item>& net = plan.net;
  net = items;
  std::stable_sort(net.begin(), net.end(), [](const Item& a, const Item& b) { return a.block < b.block; });
  size_t n = 0;
  for (size_t i = 0; i < net.size(); i++) {
    if (i + 1 < net.size() && net[i + 1].block == net[i].block) continue;
    net[n++] = net[i];
  }
  net.resize(n);
  for (const Punch& p : plan.punches) {
    auto it = std::lower_bound(net.begin(), net.end(), p.start,
                               [](const Item& a, uint64_t b) { return a.block < b; });
    for (; it != net.end() && it->block < p.start + p.count; ++it) {
      if (it->order < p.order) it->dropped = true;
    }
  }
  return plan;
}

journal::Unit Pack(const Plan& plan, std::vector<Piece>* pieces) {
  journal::Unit unit;
  unit.point = plan.point;
  for (const Punch& p : plan.punches) unit.punches.push_back({p.start * kBlockSize, p.count * kBlockSize});
  pieces->clear();
  uint64_t at = 0;
  for (const Item& it : plan.net) {
    if (it.dropped) continue;
    for (uint32_t sec = 0; sec < kSectorsPerBlock; sec++) {
      if (!(it.mask & (1u << sec))) continue;
      const uint64_t off = it.block * kBlockSize + sec * kSectorSize;
      format::ByteRange* last = unit.runs.empty() ? nullptr : &unit.runs.back();
      if (last != nullptr && last->offset + last->length == off && last->length < (1u << 20)) {
        last->length += kSectorSize;
      } else {
        unit.runs.push_back({off, kSectorSize});
      }
      Piece* lp = pieces->empty() ? nullptr : &pieces->back();
      if (lp != nullptr && lp->slot == it.slot && lp->from + lp->len == sec * kSectorSize) {
        lp->len += kSectorSize;
      } else {
        pieces->push_back({at, it.slot, sec * kSectorSize, kSectorSize});
      }
      at += kSectorSize;
    }
  }
  unit.data_len = at;
  return unit;
}

}  // namespace wbfs::wb
