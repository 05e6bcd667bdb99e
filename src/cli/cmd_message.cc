// wbfs message: dm-writeboost's `dmsetup message` words for a mount.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "ctl/ctl.h"
#include "wbfs/tunables.h"

namespace wbfs::cli {
namespace {

volatile sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

Result<nlohmann::json> Ask(ctl::Client& client, const std::string& req) {
  auto reply = client.Call(req);
  if (!reply.ok()) return reply.status();
  nlohmann::json j = nlohmann::json::parse(reply.value(), nullptr, false);
  if (j.is_discarded()) return Status::Corruption("the daemon sent a malformed reply");
  if (!j.is_object()) return Status::Corruption("the daemon sent a malformed reply");
  if (j.contains("error")) {
    return Status::InvalidArgument(j["error"].is_string() ? j["error"].get<std::string>() : j["error"].dump());
  }
  return j;
}

// Waits until no dirty block or pending discard remains, showing progress: a bar on a
// terminal, a plain line every 5 s otherwise. Ctrl-C stops the waiting,
// not the writeback.
int WaitForCleanUnsafe(ctl::Client& client);

// Replies are untrusted input: a reply without the expected fields ends
// the wait with a message.
int WaitForClean(ctl::Client& client) {
  try {
    return WaitForCleanUnsafe(client);
  } catch (const nlohmann::json::exception& e) {
    return Fail(kExitFailure, std::string("the daemon sent a malformed reply to 'status': ") + e.what());
  }
}

int WaitForCleanUnsafe(ctl::Client& client) {
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigaction(SIGINT, &sa, nullptr);
  const bool tty = ::isatty(STDOUT_FILENO);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_line = start - std::chrono::seconds(10);
  uint64_t first_dirty = 0;
  bool have_first = false;
  for (;;) {
    auto j = Ask(client, "status");
    if (!j.ok()) return Fail(kExitFailure, j.status().message());
    if (j.value()["failed"].get<bool>()) {
      if (tty) std::printf("\n");
      return Fail(kExitFailure, "the cache failed: " + j.value()["error"].get<std::string>());
    }
    const uint64_t dirty = j.value()["nr_dirty_cache_blocks"].get<uint64_t>();
    if (!have_first) {
      first_dirty = dirty;
      have_first = true;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const double done = static_cast<double>(first_dirty > dirty ? first_dirty - dirty : 0) * 4096;
    const double rate = secs > 0 ? done / secs : 0;
    const std::string left = HumanBytes(dirty * 4096);
    const std::string note =
        j.value()["writeback_failing"].get<bool>()
            ? "  (writeback failing, retrying: " + j.value().value("writeback_error", std::string("see the log")) + ")"
            : "";
    // Discards not yet punched on the backing are dirty state too.
    if (dirty == 0 && j.value().value("pending_discards", uint64_t{0}) == 0) {
      if (tty) std::printf("\r\033[K");
      std::printf("drop_caches: every dirty block is on the backing (%s in %.1f s)\n",
                  HumanBytes(static_cast<uint64_t>(done)).c_str(), secs);
      return kExitOk;
    }
    if (g_interrupted) {
      if (tty) std::printf("\n");
      std::printf("drop_caches: stopped waiting; writeback goes on (%s left)\n", left.c_str());
      return 130;
    }
    if (tty) {
      const int width = 30;
      int filled = first_dirty ? static_cast<int>(width * (first_dirty - dirty) / first_dirty) : 0;
      std::printf("\r\033[Kdrop_caches [%s%s] %s left, %s/s%s", std::string(filled, '#').c_str(),
                  std::string(width - filled, '.').c_str(), left.c_str(), HumanBytes(static_cast<uint64_t>(rate)).c_str(), note.c_str());
      std::fflush(stdout);
    } else if (Clock::now() - last_line >= std::chrono::seconds(5)) {
      std::printf("drop_caches: %s left, %s/s%s\n", left.c_str(), HumanBytes(static_cast<uint64_t>(rate)).c_str(), note.c_str());
      std::fflush(stdout);
      last_line = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

int CmdMessage(const std::vector<std::string>& args) {
  // The list comes from the tunables' table, so that it cannot go stale.
  std::string online;
  size_t line = 38;  // "KEY VALUE sets an online tunable (" and the first key's room
  for (const TunableDef& d : kTunableDefs) {
    if (!d.online) continue;
    if (!online.empty()) {
      const bool wrap = line + 2 + std::strlen(d.key) > 78;
      online += wrap ? ",\n" : ", ";
      line = wrap ? 0 : line + 2;
    }
    online += d.key;
    line += std::strlen(d.key);
  }
  const std::string usage =
      "usage: wbfs message MOUNTPOINT KEY VALUE\n"
      "       wbfs message MOUNTPOINT clear_stat\n"
      "       wbfs message MOUNTPOINT drop_caches\n"
      "\n"
      "KEY VALUE sets an online tunable (" + online + ").\n"
      "clear_stat zeroes the counters. drop_caches writes every dirty block and\n"
      "pending discard back and returns when none is left (Ctrl-C stops the\n"
      "waiting, not the writeback).\n";
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << usage;
    return kExitOk;
  }
  if (args.size() < 2 || args.size() > 3) {
    std::cerr << usage;
    return kExitUsage;
  }
  std::string req;
  if (args.size() == 3) {
    const std::string& key = args[1];
    const TunableDef* d = FindTunable(key);
    if (d == nullptr) return Fail(kExitUsage, "message: unknown tunable '" + key + "'");
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(args[2].c_str(), &end, 10);
    if (args[2].empty() || *end != '\0' || errno != 0) {
      return Fail(kExitUsage, "message: " + key + ": '" + args[2] + "' is not an integer");
    }
    Tunables scratch;
    Status st = SetTunable(&scratch, key, v);
    if (!st.ok()) return Fail(kExitUsage, "message: " + st.message());
    if (!d->online) {
      return Fail(kExitUsage, "message: " + key + " cannot be changed on a mounted cache; remount with -o " +
                                  key + "=" + args[2]);
    }
    req = "set " + key + " " + std::to_string(v);
  } else if (args[1] == "clear_stat" || args[1] == "drop_caches") {
    req = args[1];
  } else {
    return Fail(kExitUsage, "message: unknown message '" + args[1] + "'; see 'wbfs message --help'");
  }
  const std::string mp = MountpointPath(args[0]);
  ctl::Client client;
  Status st = client.Connect(mp);
  if (!st.ok()) {
    return Fail(kExitFailure, st.message() + (st.code() == Status::Code::kNotFound ? " (is it mounted with wbfs?)" : ""));
  }
  auto j = Ask(client, req);
  if (!j.ok()) {
    return Fail(j.status().code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure,
                "message: " + j.status().message());
  }
  if (req == "drop_caches") return WaitForClean(client);
  return kExitOk;
}

}  // namespace wbfs::cli
