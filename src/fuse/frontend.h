// The FUSE front end: one directory holding one regular file, the image,
// served by an Engine. It knows the Engine's public calls and nothing of
// segments or the log.
#ifndef WBFS_FUSE_FRONTEND_H_
#define WBFS_FUSE_FRONTEND_H_

#include <functional>
#include <memory>
#include <string>

#include "wbfs/engine.h"
#include "wbfs/status.h"

struct fuse_session;

namespace wbfs::fuse {

struct FrontendOptions {
  std::string mountpoint;  // absolute
  std::string image_name = "image";
  std::string fsname = "wbfs";  // shown by mount/findmnt
  bool allow_other = false;
  unsigned max_threads = 8;
  // Taking over a live connection (a restarted daemon; src/cli/supervisor.h):
  // the connection's /dev/fuse fd and the INIT request the kernel sent when
  // it was mounted. Mount() then mounts nothing: the session is initialised
  // from that INIT, whose reply is swallowed (the kernel had its reply long
  // ago), and the kernel is asked (FUSE_NOTIFY_RESEND) to queue again every
  // request that the dead daemon had read but not answered.
  int adopt_fd = -1;
  std::string adopt_init;
  // A first mount: called once with the INIT request as the kernel sent it,
  // so that a successor can adopt the connection; then once its reply has
  // reached the kernel. With adopt_fd and no adopt_init (the last daemon
  // died before it answered the INIT) the session asks the kernel to send
  // again what that daemon had read, the INIT among it, and answers it as
  // a first mount does.
  std::function<void(const std::string&)> on_init;
  std::function<void()> on_init_replied;
  // A warning for the daemon's log: FUSE_NOTIFY_RESEND failed (requests
  // the dead daemon held then wait), buffers that cannot be locked.
  std::function<void(const std::string&)> warn;
};

class Frontend {
 public:
  Frontend(Engine* engine, FrontendOptions opts);
  ~Frontend();
  // Creates the session and mounts it: the image is usable on return.
  // With adopt_fd, takes the connection over instead (see FrontendOptions).
  Status Mount();
  // The connection's /dev/fuse fd, after Mount().
  int fd() const;
  // Serves requests until the file system is unmounted or a SIGTERM,
  // SIGINT or SIGHUP arrives; then unmounts (if still mounted).
  Status Run();
  // A handover (wbfs restart): returns once every request being handled
  // has been answered (true), or after timeout_ms (false: a request stuck
  // in the engine, which the successor gets again); requests read later
  // are never answered by this process (they wait, and the successor gets
  // them again through FUSE_NOTIFY_RESEND). The daemon must exit after
  // this, not unmount.
  bool Quiesce(unsigned timeout_ms);

 private:
  Engine* engine_;
  FrontendOptions opts_;
  struct fuse_session* se_ = nullptr;
  bool mounted_ = false;
};

// The one mapping from Status to errno at the FUSE edge.
int ErrnoFor(const Status& st);

}  // namespace wbfs::fuse

#endif  // WBFS_FUSE_FRONTEND_H_
