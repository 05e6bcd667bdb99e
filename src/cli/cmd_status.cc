// wbfs status: asks the daemon over the control socket.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "ctl/ctl.h"

namespace wbfs::cli {
namespace {

int PrintStatus(nlohmann::json j);

}  // namespace

int CmdStatus(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs status MOUNTPOINT [--json]\n"
      "\n"
      "Shows the state of a mounted cache: log ids, dirty blocks, bytes written\n"
      "and the 16 dm-writeboost counters. --json prints one JSON object.\n";
  bool json = false;
  std::string mp;
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return kExitOk;
    }
    if (a == "--json") json = true;
    else if (!a.empty() && a[0] == '-') return Fail(kExitUsage, "status: unknown option " + a);
    else if (mp.empty()) mp = a;
    else return Fail(kExitUsage, "status: give one MOUNTPOINT");
  }
  if (mp.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  mp = MountpointPath(mp);
  ctl::Client client;
  Status st = client.Connect(mp);
  if (!st.ok()) return Fail(kExitFailure, st.message() + " (is it mounted with wbfs?)");
  auto reply = client.Call("status");
  if (!reply.ok()) return Fail(kExitFailure, reply.status().message());
  // The reply is untrusted input: anything but the object we expect is
  // reported, never a crash.
  nlohmann::json j = nlohmann::json::parse(reply.value(), nullptr, false);
  if (j.is_object() && !j.contains("pid") && j.contains("error") && j["error"].is_string()) {
    return Fail(kExitFailure, "the daemon refused 'status': " + j["error"].get<std::string>());
  }
  if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer()) {
    return Fail(kExitFailure, "the daemon sent a malformed reply to 'status'");
  }
  if (json) {
    std::cout << reply.value() << "\n";
    return kExitOk;
  }
  try {
    return PrintStatus(j);
  } catch (const nlohmann::json::exception& e) {
    std::fflush(stdout);
    return Fail(kExitFailure, std::string("the daemon sent a malformed reply to 'status': ") + e.what());
  }
}

namespace {

// `j` by value: operator[] on a missing key then yields null, whose get<>
// throws, where the const operator[] would be undefined behaviour.
int PrintStatus(nlohmann::json j) {
  auto row = [](const std::string& k, const std::string& v) {
    std::printf("%-24s %s\n", k.c_str(), v.c_str());
  };
  auto n = [&](const char* k) { return std::to_string(j[k].get<uint64_t>()); };
  row("mountpoint", j["mountpoint"].get<std::string>());
  row("daemon pid", std::to_string(j["pid"].get<int64_t>()));
  row("backing", j["backing"].get<std::string>());
  row("cache", j["cache"].get<std::string>());
  if (j.contains("log")) row("log", j["log"].get<std::string>());
  row("state", j["failed"].get<bool>() ? "FAILED: " + j["error"].get<std::string>() : "ok");
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
  if (j["writeback_failing"].get<bool>()) wb += ", FAILING (retrying; see the log)";
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
  std::printf("\ncounters (per 4 KiB piece)       hit-buffer  hit-cache   miss\n");
  for (const char* op : {"write", "read"}) {
    for (const char* size : {"full", "partial"}) {
      auto c = [&](const char* what) {
        return j["stat"][std::string(op) + "_" + what + "_" + size].get<uint64_t>();
      };
      std::printf("  %-5s %-7s %21llu %10llu %10llu\n", op, size,
                  static_cast<unsigned long long>(c("hit_buffer")),
                  static_cast<unsigned long long>(c("hit_cache")),
                  static_cast<unsigned long long>(c("miss_cache")));
    }
  }
  std::printf("\ntunables\n");
  for (auto& [k, v] : j["tunables"].items()) std::printf("  %-26s %lld\n", k.c_str(), static_cast<long long>(v.get<int64_t>()));
  return kExitOk;
}

}  // namespace
}  // namespace wbfs::cli
