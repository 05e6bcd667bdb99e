// The supervisor: what keeps a mount alive when its daemon dies or is
// replaced (wbfs restart, an upgrade).
//
// `wbfs mount` leaves two processes behind: the supervisor, which does no
// I/O of its own, and the daemon it starts. The supervisor holds
//   - a duplicate of the connection's /dev/fuse fd (the same open file:
//     while one is open the kernel keeps the connection, and requests a
//     dead daemon had read stay queued to be sent again);
//   - the ack log, a memfd the daemon's engine records every acknowledged
//     write in until it is on the cache device (EngineOptions::ack_log);
//   - the session memfd (SessionShared below): the connection's INIT
//     request, the backing's lock owner, and the restart counters.
// When the daemon dies without having unmounted, the supervisor starts
// the installed binary again on the same fds (`wbfs mount --handover ...`,
// never typed by a user): it replays the cache, rebuilds the acknowledged
// writes from the ack log, takes the connection over and serves. `wbfs
// restart` is the same with a handover first: the daemon stops answering,
// closes the cache cleanly, and exits.
//
// A crash loop is bounded (restart_limit crashes within restart_interval
// seconds): the supervisor then closes its fd, which aborts the connection
// (the consumer gets errors, not a hang), and exits. If the supervisor is
// killed, the daemon goes on serving; only if both die does the mount end.
#ifndef WBFS_CLI_SUPERVISOR_H_
#define WBFS_CLI_SUPERVISOR_H_

#include <cstdint>
#include <string>

#include "cli/config.h"

namespace wbfs::cli {

// Laid out once for every wbfs binary that may take over a mount (an
// upgrade runs a newer one): fields are only ever added at the end, and
// `version` says which exist.
struct SessionShared {
  static constexpr uint32_t kMagic = 0x57534553;  // "SESW"
  uint32_t magic;
  uint32_t version;
  // Written once by the first daemon, read by its successors.
  uint32_t init_len;
  char init[1024];          // the kernel's FUSE_INIT request, as read
  char lock_owner[256];     // the backing's lock owner (RBD), "" if none
  // Written by the supervisor.
  int32_t supervisor_pid;
  int32_t daemon_pid;
  uint64_t restarts;        // daemons started on this mount after the first
  int64_t last_death_ms;    // wall clock: the last death or handover
  char last_reason[200];    // e.g. "killed by signal 9 (Killed)"
  // Written by a successor once it serves: ms from last_death_ms.
  int64_t last_recovery_ms;
  // Version 2 on.
  // Set once the INIT's reply reached the kernel. Until then a successor
  // must not inject the kept INIT: the kernel still waits for its reply,
  // resends it, and it is answered as in a first mount.
  uint32_t init_replied;
};
inline constexpr uint32_t kSessionVersion = 2;

// Whether this kernel lets a new daemon take over a live connection
// (FUSE_NOTIFY_RESEND, Linux 6.9); `why` says what is missing.
bool KernelCanTakeOver(std::string* why);

// Runs the supervisor of a checked MountConfig in this process. It starts
// the first daemon, which mounts and reports readiness on `ready_fd` (the
// waiting `wbfs mount`, or -1 in the foreground); returns the exit code of
// the mount's end. `log` as the daemon's.
int Supervise(const MountConfig& c, int ready_fd, bool foreground,
              void (*log)(int prio, const std::string& msg));

// What a daemon started by a supervisor is given (parsed from the hidden
// `wbfs mount --handover` command line).
struct Handover {
  int config_fd = -1;   // the mount's ConfigJson
  int chan_fd = -1;     // to the supervisor (SOCK_SEQPACKET)
  int ack_fd = -1;      // the ack log memfd
  int session_fd = -1;  // SessionShared memfd
  int fuse_fd = -1;     // the connection (successors), else -1
  int ready_fd = -1;    // the waiting `wbfs mount` (first daemon), else -1
  bool foreground = false;
};
// "CFG,CHAN,ACK,SESSION,FUSE,READY,FG" <-> Handover.
std::string EncodeHandover(const Handover& h);
bool DecodeHandover(const std::string& s, Handover* h);

// The daemon's end of the channel: one message per call; false if the
// supervisor is gone.
bool TellSupervisor(int chan_fd, const std::string& msg, int pass_fd = -1);
// Whether the supervisor at the other end of `chan_fd` is alive.
bool SupervisorAlive(int chan_fd);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_SUPERVISOR_H_
