// The "dirty elsewhere" record as the commands use it (see owner_record.h).
#include "cli/owner_record.h"

#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "wbfs/format.h"

namespace wbfs::cli {
namespace {

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

std::string HostName() {
  char host[256] = "";
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "unknown";
  return host;
}

// Polling period of the refresher (its writes are throttled separately).
constexpr uint64_t kPollMs = 1000;

}  // namespace

CacheIdentity ReadCacheIdentity(Device& cache) {
  CacheIdentity id;
  if (cache.Size() < format::kBlockSize) return id;
  AlignedBuffer buf(format::kBlockSize);  // the cache may be open with O_DIRECT
  if (!cache.ReadAt(format::kSuperblockOffset, buf.data(), format::kBlockSize).ok()) return id;
  if (format::IsZero(buf.data(), format::kBlockSize)) {
    id.blank = true;
    return id;
  }
  format::Superblock sb;
  if (!format::DecodeSuperblock(buf.data(), &sb).ok()) return id;
  id.known = true;
  id.nonce = sb.nonce;
  return id;
}

bool OwnerRecordBlocks(const OwnerRecord& r, const CacheIdentity& c) {
  return !(c.known && c.nonce == r.cache_nonce);
}

std::string AgeText(uint64_t then_ms, uint64_t now_ms) {
  if (then_ms == 0) return "an unknown time";
  if (then_ms > now_ms) return "0 s (the clocks of the two hosts differ)";
  uint64_t s = (now_ms - then_ms) / 1000;
  const uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
  s %= 60;
  if (d > 0) return std::to_string(d) + " d " + std::to_string(h) + " h";
  if (h > 0) return std::to_string(h) + " h " + std::to_string(m) + " min";
  if (m > 0) return std::to_string(m) + " min " + std::to_string(s) + " s";
  return std::to_string(s) + " s";
}

std::string DirtyElsewhereText(const std::string& uri, const OwnerRecord& r, uint64_t now_ms) {
  std::string stale;
  if (r.flush_seq != 0 && r.flush_ms != 0) {
    stale = "the image in the cluster is at that cache's flush point chunk " + std::to_string(r.flush_seq) +
            ", cut at " + FormatWallClockMs(r.flush_ms) + " (" + AgeText(r.flush_ms, now_ms) + " ago)";
  } else if (r.flush_seq != 0) {
    stale = "the image in the cluster is at that cache's flush point chunk " + std::to_string(r.flush_seq) +
            " (time unknown)";
  } else {
    stale = "nothing was written back from that cache since it took the image at " +
            (r.since_ms != 0 ? FormatWallClockMs(r.since_ms) + " (" + AgeText(r.since_ms, now_ms) + " ago)"
                             : std::string("an unknown time"));
  }
  return uri + " has data not yet written back in the cache " + Hex(r.cache_nonce) + " on host " + r.host +
         ", not in this one: " + stale + "; either, on host " + r.host +
         ", mount it with that cache, run `wbfs message MOUNTPOINT drop_caches` and unmount, or give that "
         "data up with `wbfs recover --backing " + uri + "`, which clears this record";
}

Status CheckOwnerRecord(Device& backing, Device& cache, const std::string& uri) {
  OwnerRecordStore* store = OwnerRecordOf(backing);
  if (store == nullptr) return Status::OK();
  OwnerRecord r;
  std::string raw;
  const Status st = store->GetOwnerRecord(&r, &raw);
  if (st.code() == Status::Code::kCorruption) {
    return Status::Busy(uri + " carries a record of a cache holding data for it that cannot be read ('" + raw +
                        "'): unmount the image cleanly on the host that wrote it, or give that data up with "
                        "`wbfs recover --backing " + uri + "`, which clears the record");
  }
  const CacheIdentity id = ReadCacheIdentity(cache);
  if (st.ok() && OwnerRecordBlocks(r, id)) return Status::Busy(DirtyElsewhereText(uri, r, WallClockMs()));
  if (!st.ok() && st.code() != Status::Code::kNotFound) return st;
  // A cache whose data recover gave up would write it back over newer
  // writes (its record is gone, so the check above lets it in).
  if (id.known) {
    std::vector<uint64_t> given_up;
    WBFS_RETURN_IF_ERROR(store->GetGivenUp(&given_up));
    if (std::find(given_up.begin(), given_up.end(), id.nonce) != given_up.end()) {
      return Status::Busy("the data of the cache " + Hex(id.nonce) + " (" + cache.Name() + ") for " + uri +
                          " was given up by `wbfs recover`: mounted as it is, it would write that old data over "
                          "newer writes; `wbfs format --force " + cache.Name() + "` first");
    }
  }
  return Status::OK();
}

Status ClearOwnerRecordForRecover(Device& backing, const std::string& uri, std::string* said) {
  said->clear();
  OwnerRecordStore* store = OwnerRecordOf(backing);
  if (store == nullptr) return Status::OK();
  OwnerRecord r;
  std::string raw;
  const Status st = store->GetOwnerRecord(&r, &raw);
  if (st.code() == Status::Code::kNotFound) return Status::OK();
  if (!st.ok() && st.code() != Status::Code::kCorruption) return st;
  if (st.ok()) {  // that cache must not come back unformatted (CheckOwnerRecord)
    std::vector<uint64_t> given_up;
    WBFS_RETURN_IF_ERROR(store->GetGivenUp(&given_up));
    if (std::find(given_up.begin(), given_up.end(), r.cache_nonce) == given_up.end()) {
      given_up.push_back(r.cache_nonce);
      WBFS_RETURN_IF_ERROR(store->SetGivenUp(given_up));
    }
  }
  WBFS_RETURN_IF_ERROR(store->ClearOwnerRecord());
  if (st.ok()) {
    *said = "cleared the record that the cache " + Hex(r.cache_nonce) + " on host " + r.host +
            " held data for " + uri + " not yet written back: that data is given up, and a mount with "
            "another cache is no longer refused (that cache is, until `wbfs format --force` makes it new)";
  } else {
    *said = "cleared an unreadable record of a cache holding data for " + uri + " ('" + raw +
            "'): that data is given up";
  }
  return Status::OK();
}

bool EngineClean(const EngineStats& s) {
  return s.nr_dirty_cache_blocks == 0 && s.pending_discards == 0 && s.oldest_unapplied_ms == 0;
}

OwnerRecorder::OwnerRecorder(OwnerRecordStore* store, std::function<void(int, const std::string&)> log)
    : store_(store), log_(std::move(log)) {}

OwnerRecorder::~OwnerRecorder() { Stop(); }

Status OwnerRecorder::Write(uint64_t seq, uint64_t ms) {
  OwnerRecord r = rec_;
  r.flush_seq = seq;
  r.flush_ms = ms;
  r.updated_ms = WallClockMs();
  WBFS_RETURN_IF_ERROR(store_->SetOwnerRecord(r));
  rec_ = r;
  return Status::OK();
}

Status OwnerRecorder::Mark(const Engine& e, uint64_t nonce) {
  if (store_ == nullptr) return Status::OK();
  OwnerRecord old;
  const bool same = store_->GetOwnerRecord(&old).ok() && old.cache_nonce == nonce;
  rec_ = OwnerRecord{};
  rec_.cache_nonce = nonce;
  rec_.host = HostName();
  rec_.since_ms = same && old.since_ms != 0 ? old.since_ms : WallClockMs();
  const EngineStats s = e.Stats();
  return Write(s.backing_point_seq, s.backing_point_ms);
}

void OwnerRecorder::Start(const Engine* e, uint64_t min_interval_ms) {
  if (store_ == nullptr || thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this, e, min_interval_ms] { Run(e, min_interval_ms); });
}

void OwnerRecorder::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OwnerRecorder::Run(const Engine* e, uint64_t min_interval_ms) {
  uint64_t last_write = MonotonicMs();
  bool failing = false;
  std::unique_lock<std::mutex> lk(mu_);
  while (!cv_.wait_for(lk, std::chrono::milliseconds(kPollMs), [&] { return stop_; })) {
    if (MonotonicMs() - last_write < min_interval_ms) continue;
    const EngineStats s = e->Stats();
    if (s.backing_point_seq == rec_.flush_seq && s.backing_point_ms == rec_.flush_ms) continue;
    lk.unlock();
    const Status st = Write(s.backing_point_seq, s.backing_point_ms);
    lk.lock();
    last_write = MonotonicMs();
    if (!st.ok() && !failing) {
      log_(LOG_WARNING, "cannot refresh the record of this cache's dirty data: " + st.message() +
                            " (another host is still refused; it is told an older flush point)");
    } else if (st.ok() && failing) {
      log_(LOG_INFO, "the record of this cache's dirty data is refreshed again");
    }
    failing = !st.ok();
  }
}

Status OwnerRecorder::Finish(const EngineStats& s, bool closed_ok, bool* cleared) {
  *cleared = false;
  if (store_ == nullptr) return Status::OK();
  Stop();
  if (closed_ok && EngineClean(s)) {
    WBFS_RETURN_IF_ERROR(store_->ClearOwnerRecord());
    *cleared = true;
    return Status::OK();
  }
  return Write(s.backing_point_seq, s.backing_point_ms);
}

}  // namespace wbfs::cli
