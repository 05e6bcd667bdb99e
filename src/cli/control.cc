// The daemon's side of the control protocol (requests to replies) and the
// CLI's reading of a status reply, apart from sockets and FUSE so that a
// fuzzer can drive both (tests/fuzz/ctl_fuzz.cc).
#include "cli/control.h"

#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "cli/commands.h"
#include "ctl/ctl.h"
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

std::string StatsJson(const EngineStats& s, const MountConfig& c, const std::string& log_target) {
  nlohmann::json j;
  j["pid"] = ::getpid();
  ctl::PutPath(&j, "mountpoint", c.mountpoint);
  ctl::PutPath(&j, "backing", c.backing);
  ctl::PutPath(&j, "cache", c.cache);
  ctl::PutPath(&j, "log", log_target);
  j["image_size"] = s.image_size;
  j["segment_size"] = s.segment_size;
  j["nr_segments"] = s.nr_segments;
  j["nr_cache_blocks"] = s.nr_cache_blocks;
  j["current_id"] = s.current_id;
  j["last_flushed_id"] = s.last_flushed_id;
  j["last_writeback_id"] = s.last_writeback_id;
  j["nr_dirty_cache_blocks"] = s.nr_dirty_cache_blocks;
  j["nr_partial_flushed"] = s.nr_partial_flushed;
  j["nr_cached_blocks"] = s.nr_cached_blocks;
  j["nr_cur_batched_writeback"] = s.nr_cur_batched_writeback;
  j["nr_writeback_waits"] = s.nr_writeback_waits;
  j["backing_utilization"] = s.backing_utilization;
  j["utilization_source"] = s.utilization_source;
  j["dropping_caches"] = s.dropping_caches;
  j["writeback_failing"] = s.writeback_failing;
  j["writeback_error"] = ctl::TextForJson(s.writeback_error);
  j["nr_staged_blocks"] = s.nr_staged_blocks;
  j["nr_staging"] = s.nr_staging;
  j["discarded_bytes"] = s.discarded_bytes;
  j["pending_discards"] = s.pending_discards;
  j["nr_writeback_units"] = s.nr_writeback_units;
  ctl::PutPath(&j, "journal", s.journal ? s.journal_name : "none");
  j["journal_bytes_written"] = s.journal_bytes_written;
  j["journal_replayed"] = s.journal_replayed;
  // What losing the cache now would cost.
  j["dirty_bytes"] = s.nr_dirty_cache_blocks * 4096;
  j["oldest_dirty_age_ms"] = s.oldest_unapplied_ms == 0 ? 0 : std::max<int64_t>(0, static_cast<int64_t>(WallClockMs() - s.oldest_unapplied_ms));
  j["backing_flush_point"] = {{"chunk_seq", s.backing_point_seq}, {"time_ms", s.backing_point_ms}};
  nlohmann::json stat;
  for (unsigned i = 0; i < 16; i++) stat[StatName(i)] = s.stat[i];
  j["stat"] = stat;
  j["user_bytes_written"] = s.user_bytes_written;
  j["cache_bytes_written"] = s.cache_bytes_written;
  j["backing_bytes_written"] = s.backing_bytes_written;
  j["backing_fill_bytes"] = s.backing_fill_bytes;
  nlohmann::json tun;
  for (const auto& d : kTunableDefs) tun[d.key] = s.tunables.*(d.field);
  j["tunables"] = tun;
  j["replayed_chunks"] = s.replayed_chunks;
  j["dropped_chunks"] = s.dropped_chunks;
  j["nr_checksum_errors"] = s.nr_checksum_errors;
  j["formatted"] = s.formatted;
  j["prefilling"] = s.prefilling;
  j["cache_prefill_bytes"] = s.cache_prefill_bytes;
  if (!s.prefill_stopped.empty()) j["prefill_stopped"] = ctl::TextForJson(s.prefill_stopped);
  j["failed"] = s.failed;
  if (s.failed) j["error"] = ctl::TextForJson(s.error);
  return j.dump();
}

// One control request (see src/ctl/ctl.h): "status", "pid",
// "set KEY VALUE", "clear_stat", "drop_caches". Any bytes may arrive here:
// what is echoed back is made valid UTF-8 first.
std::string HandleRequest(Engine* e, const ControlContext& ctx, const std::string& req) {
  const MountConfig& c = *ctx.config;
  using nlohmann::json;
  std::vector<std::string> words;
  std::istringstream in(req);
  for (std::string w; in >> w;) words.push_back(w);
  const std::string verb = words.empty() ? "" : words[0];
  auto one = [&](const char* v) { return verb == v && words.size() == 1; };
  if (one("status")) return StatsJson(e->Stats(), c, ctx.log_target);
  if (one("pid")) return json{{"pid", ::getpid()}}.dump();
  if (one("clear_stat")) {
    e->ClearStats();
    return json{{"ok", true}}.dump();
  }
  if (one("drop_caches")) {
    e->StartDropCaches();
    return json{{"ok", true}}.dump();
  }
  if (verb == "set") {
    int64_t value = 0;
    if (words.size() != 3 || !ctl::ParseInt64(words[2], &value)) {
      return json{{"error", "set needs KEY VALUE (a decimal integer)"}}.dump();
    }
    Status st = e->SetTunable(words[1], value);
    if (!st.ok()) return json{{"error", ctl::TextForJson(st.message())}}.dump();
    ctx.log(LOG_INFO, "tunable " + words[1] + " set to " + std::to_string(value));
    return json{{"ok", true}}.dump();
  }
  return json{{"error", "unknown request '" + ctl::TextForJson(req.substr(0, 64)) + "'"}}.dump();
}

int PrintStatus(nlohmann::json j, FILE* out);

}  // namespace

std::string HandleControlRequest(Engine* e, const ControlContext& ctx, const std::string& req) {
  try {
    return HandleRequest(e, ctx, req);
  } catch (const std::exception& ex) {
    ctx.log(LOG_ERR, "control request '" + ctl::TextForJson(req.substr(0, 64)) + "' failed: " + ex.what());
    return nlohmann::json{{"error", "internal error: " + ctl::TextForJson(ex.what())}}.dump();
  }
}

int PrintStatusReply(const std::string& reply, bool json, FILE* out) {
  // The reply is untrusted input: anything but the object we expect is
  // reported, never a crash.
  nlohmann::json j = nlohmann::json::parse(reply, nullptr, false);
  if (j.is_object() && !j.contains("pid") && j.contains("error") && j["error"].is_string()) {
    return Fail(kExitFailure, "the daemon refused 'status': " + j["error"].get<std::string>());
  }
  if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer()) {
    return Fail(kExitFailure, "the daemon sent a malformed reply to 'status'");
  }
  if (json) {
    std::fprintf(out, "%s\n", reply.c_str());
    return kExitOk;
  }
  try {
    return PrintStatus(j, out);
  } catch (const nlohmann::json::exception& e) {
    std::fflush(out);
    return Fail(kExitFailure, std::string("the daemon sent a malformed reply to 'status': ") + e.what());
  }
}

namespace {

// `j` by value: operator[] on a missing key then yields null, whose get<>
// throws, where the const operator[] would be undefined behaviour.
int PrintStatus(nlohmann::json j, FILE* out) {
  auto row = [out](const std::string& k, const std::string& v) {
    std::fprintf(out, "%-24s %s\n", k.c_str(), v.c_str());
  };
  auto n = [&](const char* k) { return std::to_string(j[k].get<uint64_t>()); };
  row("mountpoint", j["mountpoint"].get<std::string>());
  row("daemon pid", std::to_string(j["pid"].get<int64_t>()));
  row("backing", j["backing"].get<std::string>());
  row("cache", j["cache"].get<std::string>());
  if (j.contains("log")) row("log", j["log"].get<std::string>());
  row("state", j["failed"].get<bool>() ? "FAILED: " + j["error"].get<std::string>() : "ok");
  // Found at mount or since: data the cache could not give back.
  if (j.contains("nr_checksum_errors") && j["nr_checksum_errors"].get<uint64_t>() > 0) {
    row("checksum errors", n("nr_checksum_errors") + " cached blocks failed their checksum (see the log)");
  }
  if (j.contains("dropped_chunks") && j["dropped_chunks"].get<uint64_t>() > 0) {
    row("dropped at mount", n("dropped_chunks") + " chunks (a torn tail, or a loss accepted)");
  }
  row("image size", HumanBytes(j["image_size"].get<uint64_t>()));
  row("segments", n("nr_segments") + " x " + HumanBytes(j["segment_size"].get<uint64_t>()));
  const uint64_t cache_blocks = j["nr_cache_blocks"].get<uint64_t>();
  auto pct = [&](const char* k) {
    return std::to_string(cache_blocks ? j[k].get<uint64_t>() * 100 / cache_blocks : 0) + "%";
  };
  row("cache blocks", n("nr_cache_blocks") + " (" + HumanBytes(cache_blocks * 4096) + ")");
  row("cached blocks", n("nr_cached_blocks") + " (" + pct("nr_cached_blocks") + " of the cache)");
  row("dirty blocks", n("nr_dirty_cache_blocks") + " (" +
                          HumanBytes(j["nr_dirty_cache_blocks"].get<uint64_t>() * 4096) + ", " +
                          pct("nr_dirty_cache_blocks") + ")");
  row("current id", n("current_id"));
  row("last flushed id", n("last_flushed_id"));
  row("last writeback id", n("last_writeback_id"));
  row("partial flushes", n("nr_partial_flushed"));
  const int64_t util = j["backing_utilization"].get<int64_t>();
  row("backing utilization", (util < 0 ? std::string("not sampled yet") : std::to_string(util) + "%") +
                                 " (" + j["utilization_source"].get<std::string>() + ")");
  std::string wb = "batch " + n("nr_cur_batched_writeback");
  if (j["dropping_caches"].get<bool>()) wb += ", drop_caches in progress";
  if (j["writeback_failing"].get<bool>()) {
    const std::string why = j.contains("writeback_error") ? j["writeback_error"].get<std::string>() : "";
    wb += ", FAILING (retrying): " + (why.empty() ? std::string("see the log") : why);
  }
  row("writeback", wb);
  row("writes that waited", n("nr_writeback_waits") + " (log full)");
  row("staged reads", n("nr_staged_blocks") + " blocks (" + n("nr_staging") + " pending)");
  row("discarded", HumanBytes(j["discarded_bytes"].get<uint64_t>()) + " (" + n("pending_discards") +
                      " discards not yet on the backing)");
  // What is at risk if the cache device dies now.
  const uint64_t age = j["oldest_dirty_age_ms"].get<uint64_t>();
  row("if the cache dies now", "lost: " + HumanBytes(j["dirty_bytes"].get<uint64_t>()) + " dirty, " +
                                   (age == 0 ? std::string("nothing unwritten")
                                             : "changes of the last " + std::to_string(age / 1000) + "." +
                                                   std::to_string(age % 1000 / 100) + " s"));
  const auto& fp = j["backing_flush_point"];
  row("backing flush point", FlushPointText(fp["chunk_seq"].get<uint64_t>(), fp["time_ms"].get<uint64_t>()));
  std::string jr = j["journal"].get<std::string>();
  if (jr == "none") jr += " (the backing alone may be a mix of two flush points)";
  else jr += " (" + HumanBytes(j["journal_bytes_written"].get<uint64_t>()) + " written)";
  row("journal", jr);
  row("written by users", HumanBytes(j["user_bytes_written"].get<uint64_t>()));
  row("written to cache", HumanBytes(j["cache_bytes_written"].get<uint64_t>()));
  const bool stopped = j.contains("prefill_stopped");
  if (j["prefilling"].get<bool>() || j["cache_prefill_bytes"].get<uint64_t>() > 0 || stopped) {
    row("new cache prefill", HumanBytes(j["cache_prefill_bytes"].get<uint64_t>()) + " of zeros" +
                                 (j["prefilling"].get<bool>() ? ", in progress"
                                  : stopped ? ", stopped: " + j["prefill_stopped"].get<std::string>()
                                            : ", done"));
  }
  row("written to backing", HumanBytes(j["backing_bytes_written"].get<uint64_t>()) + " (" +
                                HumanBytes(j["backing_fill_bytes"].get<uint64_t>()) + " of it gaps filled)");
  std::fprintf(out, "\ncounters (per 4 KiB piece)       hit-buffer  hit-cache   miss\n");
  for (const char* op : {"write", "read"}) {
    for (const char* size : {"full", "partial"}) {
      auto c = [&](const char* what) {
        return j["stat"][std::string(op) + "_" + what + "_" + size].get<uint64_t>();
      };
      std::fprintf(out, "  %-5s %-7s %21llu %10llu %10llu\n", op, size,
                  static_cast<unsigned long long>(c("hit_buffer")),
                  static_cast<unsigned long long>(c("hit_cache")),
                  static_cast<unsigned long long>(c("miss_cache")));
    }
  }
  std::fprintf(out, "\ntunables\n");
  for (auto& [k, v] : j["tunables"].items()) std::fprintf(out, "  %-26s %lld\n", k.c_str(), static_cast<long long>(v.get<int64_t>()));
  return kExitOk;
}

}  // namespace
}  // namespace wbfs::cli
