// The control protocol's two ends apart from the socket (see src/ctl/ctl.h):
// the daemon's request handler and the CLI's reading of a status reply.
#ifndef WBFS_CLI_CONTROL_H_
#define WBFS_CLI_CONTROL_H_

#include <cstdio>
#include <functional>
#include <string>

#include "cli/config.h"
#include "wbfs/engine.h"

namespace wbfs::cli {

struct ControlContext {
  const MountConfig* config;  // must outlive the server
  std::string log_target;     // "syslog", "stderr" or the log file (for status)
  std::function<void(int prio, const std::string& msg)> log;  // syslog priorities
};

// Maps one request line ("status", "pid", "set KEY VALUE", "clear_stat",
// "drop_caches"), any bytes at all, to one JSON reply line. Never throws: a
// failure is answered with {"error": ...} and logged.
std::string HandleControlRequest(Engine* e, const ControlContext& ctx, const std::string& request);

// Prints a status reply (an untrusted line from the daemon) to `out`, as
// JSON or as text; a malformed reply is one sentence on stderr. Returns the
// exit code.
int PrintStatusReply(const std::string& reply, bool json, FILE* out);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_CONTROL_H_
