#include "log/replay.h"

#include <iterator>

namespace wbfs::log {

bool ReplayCursor::Next(ReplayStep* step) {
  for (;;) {
    if (chunk_ >= scan_.chunks.size()) return false;
    const ChunkInfo& c = scan_.chunks[chunk_];
    *step = ReplayStep();
    step->chunk = &c;
    step->chunk_index = chunk_;
    step->applied = c.seq <= applied_seq_;
    if (!open_) {
      open_ = true;
      item_ = 0;
      changes_ = false;
      step->kind = ReplayStep::kChunkBegin;
      return true;
    }
    if (item_ < c.nr_extents) {
      const format::Extent& x = scan_.extents[c.first_extent + item_++];
      if (x.kind == format::kExtentPunched) continue;  // an old marker: nothing to do
      step->kind = ReplayStep::kDrop;
      step->extent = x;
      step->pending_discard = x.kind == format::kExtentDiscard && !step->applied;
      changes_ = changes_ || step->pending_discard;
      return true;
    }
    if (item_ < uint32_t{c.nr_extents} + c.nr_blocks) {
      const uint32_t i = item_++ - c.nr_extents;
      step->kind = ReplayStep::kBlock;
      step->entry = scan_.entries[c.first_entry + i];
      step->index = i;
      step->dirty = (step->entry.flags & format::kEntryDirty) != 0 && !step->applied;
      changes_ = changes_ || step->dirty;
      return true;
    }
    step->kind = ReplayStep::kChunkEnd;
    step->changes = changes_;
    open_ = false;
    chunk_++;
    return true;
  }
}

ReplayState Replay(const LogScan& scan, uint64_t applied_seq) {
  ReplayState st;
  ReplayCursor cursor(scan, applied_seq);
  for (ReplayStep s; cursor.Next(&s);) {
    if (s.kind == ReplayStep::kDrop) {
      const uint64_t start = s.extent.start, count = s.extent.count;
      if (s.pending_discard) st.discards.push_back({s.chunk_index, start, count});
      // A range larger than the map: walk the map instead of the range.
      if (count > st.blocks.size()) {
        for (auto it = st.blocks.begin(); it != st.blocks.end();) {
          it = it->first - start < count ? st.blocks.erase(it) : std::next(it);
        }
      } else {
        for (uint64_t b = start; b < start + count; b++) st.blocks.erase(b);
      }
    } else if (s.kind == ReplayStep::kBlock) {
      st.blocks[s.entry.block] = {s.chunk_index, s.index, s.dirty};
    }
  }
  for (const auto& [block, live] : st.blocks) st.nr_dirty += live.dirty;
  return st;
}

}  // namespace wbfs::log
