// wbfs status: asks the daemon over the control socket.
#include <cstdio>

#include "cli/commands.h"
#include "cli/command_line.h"
#include "cli/control.h"

namespace wbfs::cli {

int CmdStatus(const std::vector<std::string>& args) {
  CommandLine cl("status",
                 "usage: wbfs status MOUNTPOINT [--json]\n"
                 "\n"
                 "Shows the state of a mounted cache: log ids, dirty blocks, bytes written\n"
                 "and the 16 dm-writeboost counters.\n",
                 1, 1);
  cl.Options()("json", "print one JSON object (its keys: see wbfs(8))");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  ctl::Client client;
  Status st = ConnectToDaemon(&client, MountpointPath(cl.words()[0]));
  if (!st.ok()) return Fail(kExitFailure, st.message());
  auto reply = client.Call(ctl::EncodeRequest({ctl::Verb::kStatus}));
  if (!reply.ok()) return Fail(kExitFailure, reply.status().message());
  return PrintStatusReply(reply.value(), cl.Has("json"), stdout);
}

}  // namespace wbfs::cli
