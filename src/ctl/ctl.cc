#include "ctl/ctl.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace wbfs::ctl {
namespace {

std::string SocketDir() {
  if (::geteuid() == 0) return "/run/wbfs";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/wbfs";
  return "/tmp/wbfs-" + std::to_string(::geteuid());
}

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

}  // namespace

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

Server::~Server() { Stop(); }

Status Server::Start(const std::string& path, Handler handler) {
  path_ = path;
  handler_ = std::move(handler);
  std::string dir = path.substr(0, path.rfind('/'));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return PosixError(dir, errno);
  sockaddr_un a;
  if (!FillAddr(path, &a)) return Status::InvalidArgument("control socket path too long: " + path);
  // A live daemon answers; a stale socket (killed daemon) refuses.
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe >= 0) {
    bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(probe);
    if (live) return Status::Busy("another wbfs daemon serves this mountpoint (" + path + ")");
  }
  ::unlink(path.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return PosixError("socket", errno);
  mode_t old = ::umask(0177);
  int r = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::umask(old);
  if (r != 0 || ::listen(fd_, 16) != 0) return PosixError("bind " + path, errno);
  if (::pipe2(wake_, O_CLOEXEC) != 0) return PosixError("pipe", errno);
  thread_ = std::thread([this] { Loop(); });
  return Status::OK();
}

void Server::Stop() {
  if (thread_.joinable()) {
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

void Server::Loop() {
  // Connections stay open (a waiting `wbfs umount`) until the process exits.
  std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {fd_, POLLIN, 0}};
  std::vector<std::string> bufs(2);
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents) return;
    if (fds[1].revents & POLLIN) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        ucred cred;
        socklen_t len = sizeof(cred);
        if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != 0 && cred.uid != ::geteuid())) {
          ::close(c);
        } else {
          fds.push_back({c, POLLIN, 0});
          bufs.emplace_back();
        }
      }
    }
    for (size_t i = 2; i < fds.size(); i++) {
      if (!fds[i].revents) continue;
      char tmp[4096];
      ssize_t n = ::recv(fds[i].fd, tmp, sizeof(tmp), 0);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds.erase(fds.begin() + static_cast<long>(i));
        bufs.erase(bufs.begin() + static_cast<long>(i));
        i--;
        continue;
      }
      bufs[i].append(tmp, static_cast<size_t>(n));
      size_t nl;
      while ((nl = bufs[i].find('\n')) != std::string::npos) {
        std::string req = bufs[i].substr(0, nl);
        bufs[i].erase(0, nl + 1);
        (void)WriteAll(fds[i].fd, handler_(req) + "\n");
      }
    }
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Status Client::Connect(const std::string& mountpoint) {
  std::string path = SocketPath(mountpoint);
  sockaddr_un a;
  if (!FillAddr(path, &a)) return Status::InvalidArgument("control socket path too long");
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return PosixError("socket", errno);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return Status::NotFound("no wbfs daemon serves " + mountpoint);
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
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IOError("the daemon closed the control connection", EPIPE);
    pending_.append(tmp, static_cast<size_t>(n));
  }
}

void Client::WaitForExit() {
  char tmp[256];
  for (;;) {
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
  }
}

}  // namespace wbfs::ctl
