// The CLI's parts of the control protocol (src/ctl/protocol.h) apart from
// the socket: the daemon's request handler, the reading and printing of a
// status reply, and what status, message and umount share (the connection
// to the daemon; their command line is cli/command_line.h).
#ifndef WBFS_CLI_CONTROL_H_
#define WBFS_CLI_CONTROL_H_

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cli/config.h"
#include "ctl/ctl.h"
#include "ctl/protocol.h"
#include "io/backing.h"
#include "wbfs/engine.h"

namespace wbfs::cli {

// What the daemon knows of its supervisor (src/cli/supervisor.h).
struct SupervisionInfo {
  int64_t supervisor_pid = 0;  // 0: none
  std::string none_why;        // then: why not
  uint64_t restarts = 0;
  std::string last_reason;
  int64_t last_death_ms = 0;   // wall clock
  int64_t last_recovery_ms = -1;
};

struct ControlContext {
  const MountConfig* config;  // must outlive the server
  std::string log_target;     // "syslog", "stderr" or the log file (for status)
  std::function<void(int prio, const std::string& msg)> log;  // syslog priorities
  // The backing's record store (an RBD image), for status; null otherwise.
  OwnerRecordStore* owner = nullptr;
  // The supervisor's state, for status; null: none.
  std::function<SupervisionInfo()> supervision;
  // `restart`: starts a handover to a new daemon once the reply is sent;
  // returns "" or why it cannot. Null: no supervisor.
  std::function<std::string()> restart;
};

// Maps one request line (see ctl::kVerbs), any bytes at all, to one JSON
// reply line. Never throws: a failure is answered with {"error": ...} and
// logged.
std::string HandleControlRequest(Engine* e, const ControlContext& ctx, const std::string& request);

// Prints a status reply (an untrusted line from the daemon) to `out`, as
// JSON (the line as it came) or as text; a malformed reply is one sentence
// on stderr. Returns the exit code.
int PrintStatusReply(const std::string& reply, bool json, FILE* out);

// Connects to the daemon of a mountpoint (resolved); the failure says what
// to check.
Status ConnectToDaemon(ctl::Client* client, const std::string& mountpoint);
// Asks for the status; a refusal or a malformed reply is a sentence.
Result<ctl::StatusReply> AskStatus(ctl::Client& client);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_CONTROL_H_
