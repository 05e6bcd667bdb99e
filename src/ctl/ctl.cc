#include "ctl/ctl.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <nlohmann/json.hpp>
#include <vector>

#include "ctl/protocol.h"

namespace wbfs::ctl {
namespace {

bool FillAddr(const std::string& path, sockaddr_un* a) {
  std::memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  if (path.size() >= sizeof(a->sun_path)) return false;
  std::memcpy(a->sun_path, path.c_str(), path.size() + 1);
  return true;
}

bool WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t Utf8SeqLen(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) n = 3;
  else if (c == 0xED) n = 3, hi = 0x9F;  // no surrogates
  else if (c >= 0xEE && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) n = 4, hi = 0x8F;
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; k++) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

void SetTimeouts(int fd, int secs) {
  timeval tv{secs, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

}  // namespace

bool IsValidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8SeqLen(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string TextForJson(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8SeqLen(s, i);
    if (n == 0) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02X", static_cast<unsigned char>(s[i]));
      out += hex;
      i++;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

void PutPath(nlohmann::json* j, const std::string& key, const std::string& path) {
  (*j)[key] = TextForJson(path);
  if (!IsValidUtf8(path)) {
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : path) {
      hex += kHex[c >> 4];
      hex += kHex[c & 15];
    }
    (*j)[key + "_hex"] = hex;
  }
}

bool ParseUint64(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    const uint64_t d = static_cast<uint64_t>(ch - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool ParseInt64(const std::string& s, int64_t* out) {
  const bool neg = !s.empty() && s[0] == '-';
  uint64_t v = 0;
  if (!ParseUint64(neg ? s.substr(1) : s, &v)) return false;
  if (neg ? v > static_cast<uint64_t>(INT64_MAX) + 1 : v > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
}

std::string SocketDir() {
  if (::geteuid() == 0) return "/run/wbfs";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/wbfs";
  return "/tmp/wbfs-" + std::to_string(::geteuid());
}

Status CheckSocketDir() {
  const std::string dir = SocketDir();
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound("no control socket directory " + dir);
    return PosixError(dir, errno);
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::NotPermitted("the control socket directory " + dir + " is unsafe (" +
                                (S_ISDIR(st.st_mode) ? "a directory" : "not a directory") +
                                ", owner uid " + std::to_string(st.st_uid) + ", mode " + mode +
                                "; it must be a directory of uid " + std::to_string(::geteuid()) +
                                " with mode 0700): remove it if you did not create it");
  }
  return Status::OK();
}

Status EnsureSocketDir() {
  const std::string dir = SocketDir();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return PosixError(dir, errno);
  return CheckSocketDir();
}

std::string SocketPath(const std::string& mountpoint) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : mountpoint) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char name[40];
  std::snprintf(name, sizeof(name), "/mnt-%016llx.sock", static_cast<unsigned long long>(h));
  return SocketDir() + name;
}

std::string LogPath(const std::string& mountpoint) {
  std::string p = SocketPath(mountpoint);
  return p.substr(0, p.size() - 5) + ".log";
}

Server::~Server() { Stop(); }

Status Server::Start(const std::string& path, Handler handler) {
  path_ = path;
  handler_ = std::move(handler);
  WBFS_RETURN_IF_ERROR(EnsureSocketDir());
  sockaddr_un a;
  if (!FillAddr(path, &a)) return Status::InvalidArgument("control socket path too long: " + path);
  // A live daemon answers; a stale socket (killed daemon) refuses.
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe >= 0) {
    bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 || errno == EAGAIN;
    ::close(probe);
    if (live) return Status::Busy("another wbfs daemon serves this mountpoint (" + path + ")");
  }
  ::unlink(path.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return PosixError("socket", errno);
  mode_t old = ::umask(0177);
  int r = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::umask(old);
  if (r != 0 || ::listen(fd_, 16) != 0) return PosixError("bind " + path, errno);
  if (::pipe2(wake_, O_CLOEXEC) != 0) return PosixError("pipe", errno);
  thread_ = std::thread([this] { Loop(); });
  return Status::OK();
}

void Server::Stop(const std::string& farewell) {
  if (thread_.joinable()) {
    farewell_ = farewell;  // read by Loop() after the wake byte
    char c = 0;
    (void)!::write(wake_[1], &c, 1);
    thread_.join();
  }
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
    fd_ = -1;
  }
  for (int& w : wake_) {
    if (w >= 0) ::close(w);
    w = -1;
  }
}

// Answers the complete request lines in c->in, unless the replies not yet
// taken by the client pile up: then the rest waits until it reads them.
void Server::Serve(Conn* c) {
  constexpr size_t kOutHigh = 64 << 10;
  size_t nl;
  while (!c->closing && c->out.size() < kOutHigh && (nl = c->in.find('\n')) != std::string::npos) {
    std::string req = c->in.substr(0, nl);
    c->in.erase(0, nl + 1);
    std::string reply;
    try {
      reply = handler_(req);
    } catch (...) {
      reply = ErrorReply("internal error while handling the request");
    }
    c->out += reply + "\n";
  }
  if (!c->closing && c->in.find('\n') == std::string::npos && c->in.size() > kMaxRequest) {
    c->out += ErrorReply("request too long") + "\n";
    c->in.clear();
    c->closing = true;
  }
}

void Server::Loop() {
  // Connections stay open (a waiting `wbfs umount`) until the process exits.
  std::list<Conn> conns;
  std::vector<pollfd> fds;
  std::vector<Conn*> owners;
  for (;;) {
    fds.assign({{wake_[0], POLLIN, 0}, {fd_, POLLIN, 0}});
    owners.assign(2, nullptr);
    for (Conn& c : conns) {
      short ev = 0;
      if (!c.closing && c.out.size() < (64u << 10)) ev |= POLLIN;
      if (!c.out.empty()) ev |= POLLOUT;
      fds.push_back({c.fd, ev, 0});
      owners.push_back(&c);
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    std::vector<Conn*> dead;
    for (size_t i = 2; i < fds.size(); i++) {
      Conn* c = owners[i];
      const short rev = fds[i].revents;
      if (!rev) continue;
      bool gone = (rev & (POLLERR | POLLNVAL)) != 0;
      if (!gone && (rev & (POLLIN | POLLHUP))) {
        char tmp[4096];
        ssize_t n = ::recv(c->fd, tmp, sizeof(tmp), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) gone = true;
        else if (n > 0) c->in.append(tmp, static_cast<size_t>(n));
      }
      if (!gone) Serve(c);
      if (!gone && !c->out.empty()) {
        ssize_t n = ::send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) c->out.erase(0, static_cast<size_t>(n));
        else if (n < 0 && errno != EAGAIN && errno != EINTR) gone = true;
        if (!gone) Serve(c);  // requests held back while replies piled up
      }
      if (!gone && c->closing && c->out.empty()) gone = true;
      if (gone) dead.push_back(c);
    }
    for (Conn* c : dead) {
      ::close(c->fd);
      conns.remove_if([c](const Conn& x) { return &x == c; });
    }
    if (fds[1].revents & POLLIN) {
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        ucred cred;
        socklen_t len = sizeof(cred);
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != 0 && cred.uid != ::geteuid())) {
          ::close(fd);
        } else if (conns.size() >= kMaxClients) {
          const std::string msg = ErrorReply("too many control connections; try again later") + "\n";
          (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          ::close(fd);
        } else {
          conns.push_back(Conn{fd, "", "", false});
        }
      }
    }
  }
  // Best effort: a client that reads gets the farewell; none can hold us.
  for (Conn& c : conns) {
    if (!farewell_.empty()) {
      c.out += farewell_ + "\n";
      (void)!::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(c.fd);
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Status Client::Connect(const std::string& mountpoint) {
  Status st = CheckSocketDir();
  if (st.code() == Status::Code::kNotFound) return Status::NotFound("no wbfs daemon serves " + mountpoint);
  WBFS_RETURN_IF_ERROR(st);
  std::string path = SocketPath(mountpoint);
  sockaddr_un a;
  if (!FillAddr(path, &a)) return Status::InvalidArgument("control socket path too long");
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return PosixError("socket", errno);
  // connect() on a Unix socket waits for room in the backlog at most this long.
  SetTimeouts(fd_, kReplyTimeoutSec);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    if (errno == EAGAIN || errno == ETIMEDOUT) {
      return Status::IOError("the wbfs daemon of " + mountpoint + " does not accept connections", errno);
    }
    return Status::NotFound("no wbfs daemon serves " + mountpoint);
  }
  ucred cred;
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return PosixError("SO_PEERCRED", errno);
  if (cred.uid != 0 && cred.uid != ::geteuid()) {
    return Status::NotPermitted("the control socket " + path + " is served by uid " +
                                std::to_string(cred.uid) + ", not by you or root: not trusting it");
  }
  return Status::OK();
}

Result<std::string> Client::Call(const std::string& request) {
  if (!WriteAll(fd_, request + "\n")) return PosixError("control socket", errno);
  for (;;) {
    size_t nl = pending_.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      return line;
    }
    if (pending_.size() > kMaxReply) return Status::Corruption("the daemon sent an oversized reply");
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      return Status::IOError("the daemon did not answer within " + std::to_string(kReplyTimeoutSec) + " s", ETIMEDOUT);
    }
    if (n <= 0) return Status::IOError("the daemon closed the control connection", EPIPE);
    pending_.append(tmp, static_cast<size_t>(n));
  }
}

std::string Client::WaitForExit() {
  SetTimeouts(fd_, 0);  // the daemon may take long to write its buffer out
  std::string got = pending_;
  char tmp[256];
  for (;;) {
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (got.size() < kMaxReply) got.append(tmp, static_cast<size_t>(n));
  }
  // The last complete line.
  while (!got.empty() && got.back() != '\n') got.pop_back();
  if (!got.empty()) got.pop_back();
  return got.substr(got.rfind('\n') == std::string::npos ? 0 : got.rfind('\n') + 1);
}

}  // namespace wbfs::ctl
