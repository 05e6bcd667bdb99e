// wbfs restart: replaces a mount's daemon by a new one started from the
// binary now installed, on the same FUSE connection, without unmounting
// (src/cli/supervisor.h). How wbfs is upgraded under running VMs.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "cli/command_line.h"
#include "cli/config.h"
#include "cli/control.h"
#include "util/clock.h"

namespace wbfs::cli {

int CmdRestart(const std::vector<std::string>& args) {
  CommandLine cl("restart",
                 "usage: wbfs restart MOUNTPOINT [--timeout SECONDS]\n"
                 "       wbfs restart --config FILE     (the config file's mountpoint)\n"
                 "\n"
                 "Replaces the mount's daemon with the wbfs binary installed now, without\n"
                 "unmounting: the daemon stops answering, makes every acknowledged write\n"
                 "durable on the cache and exits; the mount's supervisor starts the new\n"
                 "binary on the same connection, which replays the cache and answers the\n"
                 "waiting requests. Users of the image see a pause. Returns once the new\n"
                 "daemon serves, and says how long the pause took.\n",
                 0, 1);
  cl.Options()("config", boost::program_options::value<std::string>()->value_name("FILE"),
               "the JSON config file whose mountpoint to restart")(
      "timeout", boost::program_options::value<unsigned>()->default_value(120),
      "seconds to wait for the new daemon");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  std::string mp;
  if (int rc = MountpointOf(cl, &mp); rc >= 0) return rc;
  ctl::Client client;
  Status st = ConnectToDaemon(&client, mp);
  if (!st.ok()) return Fail(kExitFailure, st.message());
  auto before = AskStatus(client);
  if (!before.ok()) return Fail(kExitFailure, before.status().message());
  const int64_t old_pid = before.value().pid;
  const uint64_t start = MonotonicMs();
  auto reply = client.Call(ctl::EncodeRequest({ctl::Verb::kRestart}));
  // A daemon that had nothing to wait for may be gone before its reply
  // reaches us: then only a new daemon tells.
  if (reply.ok()) {
    st = ctl::DecodeReply(reply.value());
    if (!st.ok()) return Fail(kExitFailure, mp + ": " + st.message());
  }
  // The new daemon answers on the same socket once it serves.
  const uint64_t deadline = start + uint64_t{cl.Get<unsigned>("timeout")} * 1000;
  while (MonotonicMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ctl::Client c2;
    if (!c2.Connect(mp).ok()) continue;
    auto sr = AskStatus(c2);
    // A new daemon answers before it serves; it records its recovery time
    // as it starts serving.
    if (!sr.ok() || sr.value().pid == old_pid || (sr.value().supervisor_pid > 0 && sr.value().last_recovery_ms < 0)) {
      continue;
    }
    std::printf("%s: daemon %lld replaced by %lld; the image paused for about %llu ms\n", mp.c_str(),
                static_cast<long long>(old_pid), static_cast<long long>(sr.value().pid),
                static_cast<unsigned long long>(MonotonicMs() - start));
    return kExitOk;
  }
  return Fail(kExitFailure, mp + ": no new daemon answered within " + std::to_string(cl.Get<unsigned>("timeout")) +
                                " s (see the mount's log and 'wbfs status')");
}

}  // namespace wbfs::cli
