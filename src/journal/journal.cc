#include "journal/journal.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/aligned_buffer.h"
#include "util/crc32c.h"

namespace wbfs::journal {

using format::kBlockSize;

namespace {

// Journal I/O moves data in pieces of at most this many bytes: the RAM a
// unit needs while it is journaled or its entry checked.
constexpr size_t kPiece = 8 << 20;
// The RAM ApplyUnit's batch of writes may hold (see QueueDepth).
constexpr size_t kBatchBytes = 32 << 20;

// The data of the entry at the journal's entry offset, `base` bytes in.
class EntryData final : public UnitData {
 public:
  EntryData(Device& dev, uint64_t base) : dev_(dev), base_(base) {}
  Status Read(uint64_t at, uint8_t* dst, size_t len) override { return dev_.ReadAt(base_ + at, dst, len); }

 private:
  Device& dev_;
  const uint64_t base_;
};

}  // namespace

Status MemoryData::Read(uint64_t at, uint8_t* dst, size_t len) {
  std::memcpy(dst, p_ + at, len);
  return Status::OK();
}

Status ApplyUnit(Device& backing, const Unit& u, const std::atomic<bool>* abort,
                 const FillPolicy& fill, ApplyStats* stats) {
  auto stopped = [&] { return abort != nullptr && abort->load(std::memory_order_relaxed); };
  ApplyStats local;
  ApplyStats& s = stats != nullptr ? *stats : local;
  for (const format::ByteRange& p : u.punches) {
    if (stopped()) return Status::Failed("writeback stopped for unmount");
    WBFS_RETURN_IF_ERROR(backing.Discard(p.offset, p.length));
  }
  // The punches as sorted, disjoint [start, end) ranges: no window spans one.
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  for (const format::ByteRange& p : u.punches) holes.emplace_back(p.offset, p.offset + p.length);
  std::sort(holes.begin(), holes.end());
  size_t nh = 0;
  for (const auto& h : holes) {
    if (nh > 0 && h.first <= holes[nh - 1].second) {
      holes[nh - 1].second = std::max(holes[nh - 1].second, h.second);
    } else {
      holes[nh++] = h;
    }
  }
  holes.resize(nh);
  auto punched = [&](uint64_t a, uint64_t b) {  // does [a, b) meet a punch?
    auto it = std::upper_bound(holes.begin(), holes.end(), a,
                               [](uint64_t x, const std::pair<uint64_t, uint64_t>& h) { return x < h.second; });
    return it != holes.end() && it->first < b;
  };
  // Nor one of the backing's holes (a sparse file): the gap's zeros would
  // be written as data and allocate it (a 100G sparse backing filled by gap
  // writes, ENOSPC on a nearly full file system). The runs ascend, so the
  // last extent asked about answers most questions (HoleCursor).
  HoleCursor holes_of_backing(backing);
  // Windows pay where one I/O at a time is served (a disk's seek). A
  // backing that takes many writes at once (QueueDepth > 1: RBD) gets
  // every run as a write of its own, in batches, rather than a read round
  // trip and up to max_window bytes rewritten for each few blocks.
  const uint64_t max_gap = backing.QueueDepth() > 1 ? 0 : fill.max_gap;
  // A buffer serves a window or a single run: as large as a window, or
  // the largest run if that is larger (up to kPiece; a longer run is
  // written a piece at a time).
  uint64_t longest = 0;
  for (const format::ByteRange& r : u.runs) longest = std::max(longest, r.length);
  const size_t buf_len = static_cast<size_t>(
      std::max<uint64_t>(max_gap > 0 ? fill.max_window : 0, std::min<uint64_t>(longest, kPiece)));
  // Writes go out in batches of up to `depth`, each in a buffer of its
  // own: the backing's QueueDepth (1 for a disk: one write after another,
  // as ever), within kBatchBytes of RAM. Within a unit the writes are
  // disjoint, and a crash before the unit's sync (once, at the end) has
  // the whole unit applied again (from the journal, or from the cache
  // that still holds it), so their order does not matter.
  const size_t depth = buf_len == 0 ? 1 : std::clamp<size_t>(kBatchBytes / buf_len, 1, std::max<size_t>(1, backing.QueueDepth()));
  std::vector<AlignedBuffer> bufs(depth);
  std::vector<Device::Write> batch;
  batch.reserve(depth);
  auto next_buffer = [&] {
    AlignedBuffer& b = bufs[batch.size()];
    if (b.size() == 0) b.ResetUninitialized(buf_len);  // only bytes read into it are written
    return b.data();
  };
  auto submit = [&](uint64_t off, const uint8_t* p, size_t len) {
    batch.push_back({off, p, len});
    s.writes++;
    if (batch.size() < depth) return Status::OK();
    Status st = backing.WriteBatch(batch.data(), batch.size());
    batch.clear();
    return st;
  };
  const size_t n = u.runs.size();
  uint64_t at = 0;  // of runs[i] in u.data
  for (size_t i = 0; i < n;) {
    if (stopped()) return Status::Failed("writeback stopped for unmount");
    const uint64_t start = u.runs[i].offset;
    uint64_t end = start + u.runs[i].length;
    size_t j = i + 1;  // the window is runs [i, j)
    for (; max_gap > 0 && j < n; j++) {
      const format::ByteRange& r = u.runs[j];
      if (r.offset - end > max_gap || r.offset + r.length - start > fill.max_window ||
          punched(end, r.offset) || holes_of_backing.Meets(end, r.offset)) {
        break;
      }
      end = r.offset + r.length;
    }
    if (j == i + 1) {
      const format::ByteRange& r = u.runs[i];
      for (uint64_t done = 0; done < r.length;) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(r.length - done, buf_len));
        uint8_t* p = next_buffer();
        WBFS_RETURN_IF_ERROR(u.data->Read(at + done, p, len));
        WBFS_RETURN_IF_ERROR(submit(r.offset + done, p, len));
        done += len;
      }
      s.bytes_written += r.length;
      at += r.length;
      i = j;
      continue;
    }
    const size_t span = static_cast<size_t>(end - start);
    uint8_t* p = next_buffer();
    WBFS_RETURN_IF_ERROR(backing.ReadAt(start, p, span));
    uint64_t data = 0;
    for (; i < j; i++) {
      const format::ByteRange& r = u.runs[i];
      WBFS_RETURN_IF_ERROR(u.data->Read(at, p + (r.offset - start), static_cast<size_t>(r.length)));
      at += r.length;
      data += r.length;
    }
    WBFS_RETURN_IF_ERROR(submit(start, p, span));
    s.bytes_written += span;
    s.bytes_filled += span - data;
  }
  if (!batch.empty()) WBFS_RETURN_IF_ERROR(backing.WriteBatch(batch.data(), batch.size()));
  return backing.Sync();
}

std::string DefaultPath(const std::string& backing_path) { return backing_path + ".wbfs-journal"; }

Result<std::unique_ptr<Journal>> Journal::Open(std::unique_ptr<Device> dev, uint64_t backing_size) {
  std::unique_ptr<Journal> j(new Journal(std::move(dev), backing_size));
  const uint64_t size = j->dev_->Size();
  AlignedBuffer states(2 * kBlockSize);
  std::memset(states.data(), 0, states.size());
  if (size > 0) {
    WBFS_RETURN_IF_ERROR(
        j->dev_->ReadAt(0, states.data(), static_cast<size_t>(std::min<uint64_t>(size, states.size()))));
  }
  // Blank: nothing but zeros where the states and an entry would be (a new
  // file, or a zeroed device). Anything else must validate.
  bool blank = format::IsZero(states.data(), states.size());
  if (blank && size >= format::kJournalEntryOffset + kBlockSize) {
    AlignedBuffer first(kBlockSize);
    WBFS_RETURN_IF_ERROR(j->dev_->ReadAt(format::kJournalEntryOffset, first.data(), kBlockSize));
    blank = format::IsZero(first.data(), kBlockSize);
  }
  if (blank) {
    format::JournalState s;
    s.backing_size = backing_size;
    WBFS_RETURN_IF_ERROR(j->WriteState(s));
    return j;
  }
  bool found = false;
  for (int i = 0; i < 2; i++) {
    format::JournalState s;
    if (!format::DecodeJournalState(states.data() + i * kBlockSize, &s).ok()) continue;
    if (!found || s.seq > j->state_.seq) j->state_ = s;
    found = true;
  }
  const std::string name = j->dev_->Name();
  if (!found) {
    return Status::Corruption(name + " is not a wbfs journal (neither state block is valid); "
                              "if it is one that never recorded a unit, remove it");
  }
  if (j->state_.backing_size != backing_size) {
    return Status::InvalidArgument(name + " is the journal of a backing of " +
                                   std::to_string(j->state_.backing_size) + " bytes, not " +
                                   std::to_string(backing_size));
  }
  j->pending_ = true;  // until Recover() has looked at the entry (and set next_entry_)
  return j;
}

Status Journal::WriteState(const format::JournalState& s) {
  format::JournalState n = s;
  n.seq = state_.seq + 1;
  AlignedBuffer block(kBlockSize);
  format::EncodeJournalState(n, block.data());
  WBFS_RETURN_IF_ERROR(dev_->WriteAt(format::kJournalStateOffsets[n.seq % 2], block.data(), kBlockSize));
  WBFS_RETURN_IF_ERROR(dev_->Sync());
  bytes_written_ += kBlockSize;
  state_ = n;
  return Status::OK();
}

Result<RecoveryReport> Journal::Recover(Device& backing) {
  RecoveryReport rep;
  const std::string name = dev_->Name();
  const uint64_t size = dev_->Size();
  pending_ = false;
  AlignedBuffer fixed(kBlockSize);
  format::JournalEntryHeader h;
  bool have = size >= format::kJournalEntryOffset + kBlockSize &&
              dev_->ReadAt(format::kJournalEntryOffset, fixed.data(), kBlockSize).ok() &&
              format::DecodeJournalEntryFixed(fixed.data(), &h).ok() &&
              format::kJournalEntryOffset + h.header_len + h.data_len <= size;
  AlignedBuffer header;
  if (have && h.seq > state_.applied_entry) {
    header.Reset(h.header_len);
    Status st = dev_->ReadAt(format::kJournalEntryOffset, header.data(), h.header_len);
    if (st.ok()) st = format::DecodeJournalEntryHeader(header.data(), &h);
    if (st.ok()) {
      // The data is checked a piece at a time (an entry can be far larger
      // than the RAM one should take for it), then applied from here.
      AlignedBuffer piece(static_cast<size_t>(std::min<uint64_t>(h.data_len, kPiece)));
      uint32_t crc = 0;
      for (uint64_t at = 0; st.ok() && at < h.data_len; at += piece.size()) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(h.data_len - at, piece.size()));
        st = dev_->ReadAt(format::kJournalEntryOffset + h.header_len + at, piece.data(), len);
        if (st.ok()) crc = crc32c::Extend(crc, piece.data(), len);
      }
      if (st.code() == Status::Code::kIOError) return st.WithContext(name);
      if (st.ok() && crc != h.data_crc) {
        st = Status::Corruption("journal entry: data checksum mismatch");
      }
    } else if (st.code() == Status::Code::kIOError) {
      return st.WithContext(name);
    }
    if (!st.ok()) {
      have = false;
      rep.torn_entry = true;  // never synced: nothing of it reached the backing
    }
  } else {
    have = false;
  }
  if (have && h.backing_size != backing_size_) {
    return Status::Corruption(name + ": the pending entry is for a backing of " +
                              std::to_string(h.backing_size) + " bytes");
  }
  if (have) {
    EntryData data(*dev_, format::kJournalEntryOffset + h.header_len);
    Unit u;
    u.point = h.point;
    u.punches = h.punches;
    u.runs = h.runs;
    u.data = &data;
    u.data_len = h.data_len;
    Status st = ApplyUnit(backing, u, nullptr);
    if (!st.ok()) {
      pending_ = true;
      return st.WithContext("replaying the journal entry " + std::to_string(h.seq) + " of " + name);
    }
    format::JournalState s = state_;
    s.applied_entry = h.seq;
    s.point = h.point;
    WBFS_RETURN_IF_ERROR(WriteState(s));
    rep.replayed = true;
    rep.entry_seq = h.seq;
    rep.bytes = h.data_len;
  }
  // (A replayed entry's seq is applied_entry now; a torn one's seq is not
  // reused, so that its leftovers can never pass for the next entry.)
  next_entry_ = std::max(state_.applied_entry, rep.torn_entry ? h.seq : 0) + 1;
  rep.state = state_;
  return rep;
}

Status Journal::Write(Device& backing, const Unit& u, const std::atomic<bool>* abort,
                      const FillPolicy& fill, ApplyStats* stats) {
  if (pending_) WBFS_RETURN_IF_ERROR(Recover(backing).status());
  format::JournalEntryHeader h;
  h.seq = next_entry_;
  h.backing_size = backing_size_;
  h.point = u.point;
  h.runs = u.runs;
  h.punches = u.punches;
  h.data_len = u.data_len;
  // The entry replaces the previous (retired) one in place: its data
  // first, a piece at a time (the header needs the data's checksum), then
  // the header, then one sync. Until that sync a crash leaves an entry that
  // does not validate (header or data checksum), which recovery ignores.
  const uint64_t data_off = format::kJournalEntryOffset + format::JournalHeaderLen(h.runs.size(), h.punches.size());
  AlignedBuffer piece;
  piece.ResetUninitialized(static_cast<size_t>(std::min<uint64_t>(u.data_len, kPiece)));  // read before written
  uint32_t crc = 0;
  for (uint64_t at = 0; at < u.data_len; at += piece.size()) {
    // Stopping here leaves no entry (its header is not written): the unit
    // is simply done again later. A large unit spends seconds here.
    if (abort != nullptr && abort->load(std::memory_order_relaxed)) {
      return Status::Failed("writeback stopped for unmount");
    }
    const size_t len = static_cast<size_t>(std::min<uint64_t>(u.data_len - at, piece.size()));
    WBFS_RETURN_IF_ERROR(u.data->Read(at, piece.data(), len));
    crc = crc32c::Extend(crc, piece.data(), len);
    WBFS_RETURN_IF_ERROR(dev_->WriteAt(data_off + at, piece.data(), len));
  }
  h.data_crc = crc;
  std::vector<uint8_t> header;
  format::EncodeJournalEntryHeader(h, &header);
  WBFS_RETURN_IF_ERROR(dev_->WriteAt(format::kJournalEntryOffset, header.data(), header.size()));
  next_entry_++;
  bytes_written_ += header.size() + u.data_len;
  WBFS_RETURN_IF_ERROR(dev_->Sync());
  pending_ = true;
  // Committed: the apply runs to its end even if an unmount asks to stop.
  // Stopping would only move the rest of the work to the next mount, which
  // must apply the entry before it serves (reading it back from the
  // journal's disk): with units of half the log that made a mount after
  // an unmount under pressure take seconds.
  WBFS_RETURN_IF_ERROR(ApplyUnit(backing, u, nullptr, fill, stats));
  format::JournalState s = state_;
  s.applied_entry = h.seq;
  s.point = u.point;
  WBFS_RETURN_IF_ERROR(WriteState(s));
  pending_ = false;
  return Status::OK();
}

uint64_t Journal::Capacity() const {
  if (dev_->Grows()) return UINT64_MAX;
  const uint64_t size = dev_->Size();
  return size > format::kJournalEntryOffset ? size - format::kJournalEntryOffset : 0;
}

uint64_t Journal::EntryBytes(uint64_t blocks) {
  return blocks * kBlockSize + format::JournalHeaderLen(static_cast<size_t>(blocks), 0);
}

Status Journal::Forget() {
  if (pending_) return Status::Failed(dev_->Name() + ": recover the journal first");
  format::JournalState s = state_;
  s.point = format::FlushPoint{};
  return WriteState(s);
}

}  // namespace wbfs::journal
