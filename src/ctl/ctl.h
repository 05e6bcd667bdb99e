// The control channel between the CLI and a running daemon: a Unix socket
// whose path derives from the mountpoint, so the mount itself shows only
// the image. One request line, one JSON reply line; the connection then
// stays open until the daemon exits, which lets `wbfs umount` wait for it.
//
// Socket directory: /run/wbfs for root, else $XDG_RUNTIME_DIR/wbfs (or
// /tmp/wbfs-UID), mode 0700; the socket is 0600 and the daemon also checks
// the peer's uid (SO_PEERCRED): only its own user and root get answers.
#ifndef WBFS_CTL_CTL_H_
#define WBFS_CTL_CTL_H_

#include <functional>
#include <string>
#include <thread>

#include "wbfs/status.h"

namespace wbfs::ctl {

// The socket path for a canonical (absolute, resolved) mountpoint.
std::string SocketPath(const std::string& mountpoint);

// Serves requests on the socket until Stop(). `handler` maps a request line
// to a reply line; it runs on the server's thread.
class Server {
 public:
  using Handler = std::function<std::string(const std::string& request)>;
  ~Server();
  // Binds the socket (replacing a stale one left by a killed daemon);
  // Busy if a live daemon answers on it.
  Status Start(const std::string& path, Handler handler);
  void Stop();

 private:
  void Loop();
  std::string path_;
  Handler handler_;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

// A client connection to a daemon.
class Client {
 public:
  ~Client();
  // NotFound when no daemon listens for this mountpoint.
  Status Connect(const std::string& mountpoint);
  Result<std::string> Call(const std::string& request);
  // Blocks until the daemon closes the connection (it exited).
  void WaitForExit();

 private:
  int fd_ = -1;
  std::string pending_;
};

}  // namespace wbfs::ctl

#endif  // WBFS_CTL_CTL_H_
