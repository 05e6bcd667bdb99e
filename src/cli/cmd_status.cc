// wbfs status: asks the daemon over the control socket.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/control.h"
#include "ctl/ctl.h"

namespace wbfs::cli {
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
  if (!st.ok()) {
    return Fail(kExitFailure, st.message() + (st.code() == Status::Code::kNotFound ? " (is it mounted with wbfs?)" : ""));
  }
  auto reply = client.Call("status");
  if (!reply.ok()) return Fail(kExitFailure, reply.status().message());
  return PrintStatusReply(reply.value(), json, stdout);
}

}  // namespace wbfs::cli
