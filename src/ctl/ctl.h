// The control channel between the CLI and a running daemon: a Unix socket
// whose path derives from the mountpoint, so the mount itself shows only
// the image. One request line, one JSON reply line (what they hold: see
// protocol.h); the connection then stays open until the daemon exits, which
// lets `wbfs umount` wait for it.
//
// Socket directory: /run/wbfs for root, else $XDG_RUNTIME_DIR/wbfs (or
// /tmp/wbfs-UID), mode 0700; the socket is 0600 and the daemon also checks
// the peer's uid (SO_PEERCRED): only its own user and root get answers.
#ifndef WBFS_CTL_CTL_H_
#define WBFS_CTL_CTL_H_

#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <thread>
#include <vector>

#include "wbfs/status.h"

namespace wbfs::ctl {

// JSON strings must be UTF-8, file names need not be. TextForJson returns
// `s` with every byte that is not part of valid UTF-8 written as the four
// characters \xHH (a display form: readable, but ambiguous for a name that
// holds those four characters itself). PutPath stores a path under `key` in
// that form and, only when the path is not valid UTF-8, its exact bytes in
// hex under KEY_hex, so that the path is carried faithfully.
bool IsValidUtf8(const std::string& s);
std::string TextForJson(const std::string& s);
void PutPath(nlohmann::json* j, const std::string& key, const std::string& path);

// The directory of the control sockets (and of the daemons' log files when
// there is no syslog). EnsureSocketDir creates it mode 0700 and refuses one
// that is not a directory owned by us with no access for others (someone
// else may have created a predictable /tmp/wbfs-UID first, as ssh-agent
// and tmux refuse theirs). CheckSocketDir only checks; NotFound if absent.
std::string SocketDir();
Status EnsureSocketDir();
Status CheckSocketDir();

// The socket path for a canonical (absolute, resolved) mountpoint.
std::string SocketPath(const std::string& mountpoint);
// The daemon's log file when /dev/log is absent (next to the socket).
std::string LogPath(const std::string& mountpoint);

// Limits of the protocol: a request line longer than kMaxRequest is
// refused (and the connection closed); the server serves at most
// kMaxClients connections at once; a client takes at most kMaxReply bytes.
constexpr size_t kMaxRequest = 4096;
constexpr size_t kMaxClients = 64;
constexpr size_t kMaxReply = 1 << 20;

// Serves requests on the socket until Stop(). `handler` maps a request line
// to a reply line; it runs on the server's thread and must not throw (an
// exception becomes an error reply). The server never blocks on a client:
// sockets are non-blocking, and a client that does not read its replies
// only stops its own requests from being served.
class Server {
 public:
  using Handler = std::function<std::string(const std::string& request)>;
  ~Server();
  // Binds the socket (replacing a stale one left by a killed daemon);
  // Busy if a live daemon answers on it.
  Status Start(const std::string& path, Handler handler);
  // Sends `farewell` (one line, if not empty) to every connected client,
  // as best it can without blocking, closes them and removes the socket.
  void Stop(const std::string& farewell = "");

 private:
  struct Conn {
    int fd;
    std::string in, out;
    bool closing = false;  // close once `out` is sent
  };
  void Loop();
  void Serve(Conn* c);
  std::string path_;
  Handler handler_;
  std::string farewell_;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

// A client connection to a daemon. Replies are untrusted: the daemon must
// run as our user or root (SO_PEERCRED), and a reply is bounded in size and
// time (kMaxReply, kReplyTimeoutSec).
class Client {
 public:
  static constexpr int kReplyTimeoutSec = 30;
  ~Client();
  // NotFound when no daemon listens for this mountpoint.
  Status Connect(const std::string& mountpoint);
  Result<std::string> Call(const std::string& request);
  // Blocks until the daemon closes the connection (it exited); returns the
  // daemon's farewell line (see Server::Stop), empty if none came.
  std::string WaitForExit();

 private:
  int fd_ = -1;
  std::string pending_;
};

// Parses a decimal integer with nothing around it (no sign for unsigned,
// no spaces, no trailing characters, no overflow).
bool ParseInt64(const std::string& s, int64_t* out);
bool ParseUint64(const std::string& s, uint64_t* out);

}  // namespace wbfs::ctl

#endif  // WBFS_CTL_CTL_H_
