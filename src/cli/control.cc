// The daemon's side of the control protocol (requests to replies) and the
// CLI's reading of a status reply, apart from sockets and FUSE so that a
// fuzzer can drive both (tests/fuzz/ctl_fuzz.cc); the command line and the
// connection of the online commands.
#include "cli/control.h"

#include <syslog.h>
#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "io/backing.h"
#include "util/clock.h"

namespace wbfs::cli {

int Fail(int code, const std::string& message) {
  std::cerr << "wbfs: " << message << "\n";
  return code;
}

std::string HumanBytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string FlushPointText(uint64_t seq, uint64_t ms) {
  if (seq == 0) return "unknown";
  std::string s = "chunk " + std::to_string(seq);
  if (ms != 0) s += ", cut at " + FormatWallClockMs(ms);
  return s;
}

namespace {

// One control request (see src/ctl/protocol.h). Any bytes may arrive here:
// what is echoed back is made valid UTF-8 first.
std::string HandleRequest(Engine* e, const ControlContext& ctx, const std::string& line) {
  auto req = ctl::ParseRequest(line);
  if (!req.ok()) return ctl::ErrorReply(req.status().message());
  const ctl::Request& r = req.value();
  switch (r.verb) {
    case ctl::Verb::kStatus: {
      const MountConfig& c = *ctx.config;
      ctl::StatusReply reply = ctl::MakeStatusReply(e->Stats(), ::getpid(), c.mountpoint, c.backing, c.cache,
                                                    ctx.log_target, WallClockMs());
      if (ctx.owner != nullptr) {
        reply.backing_lock = ctx.owner->LockHolderText();
        OwnerRecord rec;
        std::string raw;
        const Status st = ctx.owner->GetOwnerRecord(&rec, &raw);
        reply.owner_record = st.code() == Status::Code::kNotFound ? "none"
                             : st.ok() || st.code() == Status::Code::kCorruption ? raw
                                                                                  : "unknown: " + st.message();
      }
      if (ctx.supervision) {
        const SupervisionInfo sv = ctx.supervision();
        reply.supervisor_pid = sv.supervisor_pid;
        reply.no_supervisor = sv.none_why;
        reply.restarts = sv.restarts;
        reply.last_restart = sv.last_reason;
        const int64_t now = static_cast<int64_t>(WallClockMs());
        reply.last_restart_age_ms = sv.last_death_ms > 0 && now > sv.last_death_ms
                                        ? static_cast<uint64_t>(now - sv.last_death_ms)
                                        : 0;
        reply.last_recovery_ms = sv.last_recovery_ms;
      }
      return ctl::EncodeStatus(reply);
    }
    case ctl::Verb::kRestart: {
      const std::string why = ctx.restart ? ctx.restart() : "this daemon cannot be restarted";
      if (!why.empty()) return ctl::ErrorReply(why);
      ctx.log(LOG_INFO, "restart requested: handing over to a new daemon");
      return ctl::PidReply(::getpid());
    }
    case ctl::Verb::kPid:
      return ctl::PidReply(::getpid());
    case ctl::Verb::kClearStat:
      e->ClearStats();
      return ctl::OkReply();
    case ctl::Verb::kDropCaches:
      e->StartDropCaches();
      return ctl::OkReply();
    case ctl::Verb::kSet: {
      Status st = e->SetTunable(r.key, r.value);
      if (!st.ok()) return ctl::ErrorReply(st.message());
      ctx.log(LOG_INFO, "tunable " + r.key + " set to " + std::to_string(r.value));
      return ctl::OkReply();
    }
  }
  return ctl::ErrorReply("unknown request");  // unreachable
}

// The text form of a status reply.
void PrintStatus(const ctl::StatusReply& r, FILE* out) {
  const EngineStats& s = r.stats;
  auto row = [out](const std::string& k, const std::string& v) {
    std::fprintf(out, "%-24s %s\n", k.c_str(), v.c_str());
  };
  auto n = [](uint64_t v) { return std::to_string(v); };
  row("mountpoint", ctl::TextForJson(r.mountpoint));
  row("daemon pid", std::to_string(r.pid));
  if (r.supervisor_pid > 0) {
    row("supervisor pid", std::to_string(r.supervisor_pid));
    std::string restarts = std::to_string(r.restarts);
    if (r.restarts > 0) {
      restarts += "; the last " + std::to_string(r.last_restart_age_ms / 1000) + " s ago: " +
                  ctl::TextForJson(r.last_restart);
      if (r.last_recovery_ms >= 0) restarts += "; serving again after " + std::to_string(r.last_recovery_ms) + " ms";
    }
    row("daemon restarts", restarts);
  } else if (!r.no_supervisor.empty()) {
    row("supervisor", "none: " + ctl::TextForJson(r.no_supervisor));
  }
  row("backing", ctl::TextForJson(r.backing));
  // The daemon takes the image's exclusive lock at mount and holds it
  // until it exits (src/io/rbd_device.cc).
  if (!r.backing_lock.empty()) {
    row("backing lock", "RBD exclusive lock, held by " + ctl::TextForJson(r.backing_lock));
  } else if (IsRbdUri(r.backing)) {
    row("backing lock", "RBD exclusive lock, taken by this daemon at mount");
  }
  // Kept by the daemon while it runs (src/cli/owner_record.h).
  if (!r.owner_record.empty()) row("dirty record", ctl::TextForJson(r.owner_record));
  row("cache", ctl::TextForJson(r.cache));
  if (!r.log.empty()) row("log", ctl::TextForJson(r.log));
  row("state", s.failed ? "FAILED: " + s.error : "ok");
  // Found at mount or since: data the cache could not give back.
  if (s.nr_checksum_errors > 0) {
    row("checksum errors", n(s.nr_checksum_errors) + " cached blocks failed their checksum (see the log)");
  }
  if (s.dropped_chunks > 0) {
    row("dropped at mount", n(s.dropped_chunks) + " chunks (a torn tail, or a loss accepted)");
  }
  row("image size", HumanBytes(s.image_size));
  row("segments", n(s.nr_segments) + " x " + HumanBytes(s.segment_size));
  auto pct = [&](uint64_t blocks) {
    return std::to_string(s.nr_cache_blocks ? blocks * 100 / s.nr_cache_blocks : 0) + "%";
  };
  row("cache blocks", n(s.nr_cache_blocks) + " (" + HumanBytes(s.cache_data_bytes) + ")");
  row("cached blocks", n(s.nr_cached_blocks) + " (" + HumanBytes(s.cached_bytes) + ", " +
                           pct(s.nr_cached_blocks) + " of the cache)");
  row("dirty blocks", n(s.nr_dirty_cache_blocks) + " (" + HumanBytes(s.dirty_bytes) + ", " +
                          pct(s.nr_dirty_cache_blocks) + ")");
  row("current id", n(s.current_id));
  row("last flushed id", n(s.last_flushed_id));
  row("last writeback id", n(s.last_writeback_id));
  row("partial flushes", n(s.nr_partial_flushed));
  const int64_t util = s.backing_utilization;
  row("backing utilization", (util < 0 ? std::string("not sampled yet") : std::to_string(util) + "%") +
                                 " (" + s.utilization_source + ")");
  std::string wb = "batch " + n(s.nr_cur_batched_writeback);
  if (s.dropping_caches) wb += ", drop_caches in progress";
  if (s.writeback_failing) {
    wb += ", FAILING (retrying): " + (s.writeback_error.empty() ? std::string("see the log") : s.writeback_error);
  }
  row("writeback", wb);
  row("writes that waited", n(s.nr_writeback_waits) + " (log full)");
  row("staged reads", n(s.nr_staged_blocks) + " blocks (" + n(s.nr_staging) + " pending)");
  row("discarded", HumanBytes(s.discarded_bytes) + " (" + n(s.pending_discards) +
                      " discards not yet on the backing)");
  // What is at risk if the cache device dies now.
  const uint64_t age = r.oldest_dirty_age_ms;
  row("if the cache dies now", "lost: " + HumanBytes(s.dirty_bytes) + " dirty, " +
                                   (age == 0 ? std::string("nothing unwritten")
                                             : "changes of the last " + std::to_string(age / 1000) + "." +
                                                   std::to_string(age % 1000 / 100) + " s"));
  row("backing flush point", FlushPointText(s.backing_point_seq, s.backing_point_ms));
  row("journal", s.journal ? ctl::TextForJson(s.journal_name) + " (" + HumanBytes(s.journal_bytes_written) + " written)"
                           : std::string("none (the backing alone may be a mix of two flush points)"));
  row("written by users", HumanBytes(s.user_bytes_written));
  row("written to cache", HumanBytes(s.cache_bytes_written));
  const bool stopped = !s.prefill_stopped.empty();
  if (s.prefilling || s.cache_prefill_bytes > 0 || stopped) {
    row("new cache prefill", HumanBytes(s.cache_prefill_bytes) + " of zeros" +
                                 (s.prefilling ? ", in progress"
                                  : stopped    ? ", stopped: " + s.prefill_stopped
                                               : ", done"));
  }
  row("written to backing", HumanBytes(s.backing_bytes_written) + " (" + HumanBytes(s.backing_fill_bytes) +
                                " of it gaps filled)");
  std::fprintf(out, "\ncounters (per 4 KiB piece)       hit-buffer  hit-cache   miss\n");
  for (const unsigned op : {kStatWrite, 0u}) {
    for (const unsigned size : {kStatFull, 0u}) {
      auto c = [&](unsigned what) { return static_cast<unsigned long long>(s.stat[op | what | size]); };
      std::fprintf(out, "  %-5s %-7s %21llu %10llu %10llu\n", op ? "write" : "read", size ? "full" : "partial",
                   c(kStatHit | kStatBuffer), c(kStatHit), c(0));
    }
  }
  std::fprintf(out, "\ntunables\n");
  for (const auto& [k, v] : r.tunables) std::fprintf(out, "  %-26s %lld\n", k.c_str(), static_cast<long long>(v));
}

// A status reply line; a refusal is said to be one.
Result<ctl::StatusReply> ReadStatus(const std::string& reply) {
  auto r = ctl::DecodeStatus(reply);
  if (r.status().code() == Status::Code::kInvalidArgument) {
    return Status::InvalidArgument("the daemon refused 'status': " + r.status().message());
  }
  return r;
}

}  // namespace

std::string HandleControlRequest(Engine* e, const ControlContext& ctx, const std::string& req) {
  try {
    return HandleRequest(e, ctx, req);
  } catch (const std::exception& ex) {
    ctx.log(LOG_ERR, "control request '" + ctl::TextForJson(req.substr(0, 64)) + "' failed: " + ex.what());
    return ctl::ErrorReply(std::string("internal error: ") + ex.what());
  }
}

int PrintStatusReply(const std::string& reply, bool json, FILE* out) {
  // The reply is untrusted input: anything but the object we expect is
  // reported, never a crash.
  auto r = ReadStatus(reply);
  if (!r.ok()) return Fail(kExitFailure, r.status().message());
  if (json) std::fprintf(out, "%s\n", reply.c_str());
  else PrintStatus(r.value(), out);
  return kExitOk;
}

Status ConnectToDaemon(ctl::Client* client, const std::string& mountpoint) {
  Status st = client->Connect(mountpoint);
  if (st.code() == Status::Code::kNotFound) return Status::NotFound(st.message() + " (is it mounted with wbfs?)");
  return st;
}

Result<ctl::StatusReply> AskStatus(ctl::Client& client) {
  auto reply = client.Call(ctl::EncodeRequest({ctl::Verb::kStatus}));
  if (!reply.ok()) return reply.status();
  return ReadStatus(reply.value());
}

}  // namespace wbfs::cli
