#include "cli/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <vector>

#include "util/clock.h"
#include "wbfs/engine.h"

namespace wbfs::cli {
namespace {

volatile sig_atomic_t g_signal = 0;
void OnSignal(int sig) { g_signal = sig; }

int MakeMemfd(const char* name, size_t size) {
  const int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The binary to start: the path this one was started from, which an
// upgrade has replaced by then (a replaced file shows as "PATH (deleted)").
std::string ExePath() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "/proc/self/exe";
  std::string p(buf, static_cast<size_t>(n));
  const std::string del = " (deleted)";
  if (p.size() > del.size() && p.compare(p.size() - del.size(), del.size(), del) == 0) {
    p.resize(p.size() - del.size());
  }
  return p;
}

std::string DeathText(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "killed by signal " + std::to_string(sig) + " (" + ::strsignal(sig) + ")" +
           (WCOREDUMP(status) ? ", core dumped" : "");
  }
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "ended (wait status " + std::to_string(status) + ")";
}

// Whether the connection on `fd` is still up (a dead one polls as an error).
bool Connected(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) >= 0 && (p.revents & (POLLERR | POLLNVAL)) == 0;
}

void CopyText(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// One message from the daemon: text and at most one fd. 0 on EOF (the
// daemon is gone), -1 on EAGAIN/EINTR, 1 otherwise.
int Receive(int fd, std::string* msg, int* passed) {
  char buf[256];
  iovec iov{buf, sizeof(buf)};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctrl;
  mh.msg_controllen = sizeof(ctrl);
  const ssize_t n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return (errno == EAGAIN || errno == EINTR) ? -1 : 0;
  if (n == 0) return 0;
  msg->assign(buf, static_cast<size_t>(n));
  *passed = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(passed, CMSG_DATA(c), sizeof(int));
  }
  return 1;
}

}  // namespace

bool KernelCanTakeOver(std::string* why) {
  utsname u;
  int major = 0, minor = 0;
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) {
    *why = "the kernel's version cannot be read";
    return false;
  }
  if (major > 6 || (major == 6 && minor >= 9)) return true;
  *why = std::string("Linux ") + u.release +
         " cannot hand a FUSE connection to a new daemon (FUSE_NOTIFY_RESEND needs 6.9)";
  return false;
}

std::string EncodeHandover(const Handover& h) {
  return std::to_string(h.config_fd) + "," + std::to_string(h.chan_fd) + "," + std::to_string(h.ack_fd) + "," +
         std::to_string(h.session_fd) + "," + std::to_string(h.fuse_fd) + "," + std::to_string(h.ready_fd) +
         "," + (h.foreground ? "1" : "0");
}

bool DecodeHandover(const std::string& s, Handover* h) {
  int fg = 0;
  char end = 0;
  return std::sscanf(s.c_str(), "%d,%d,%d,%d,%d,%d,%d%c", &h->config_fd, &h->chan_fd, &h->ack_fd,
                     &h->session_fd, &h->fuse_fd, &h->ready_fd, &fg, &end) == 7 &&
         h->config_fd >= 0 && h->chan_fd >= 0 && h->ack_fd >= 0 && h->session_fd >= 0 &&
         ((h->foreground = fg != 0), true);
}

bool SupervisorAlive(int chan_fd) {
  pollfd p{chan_fd, 0, 0};
  return chan_fd >= 0 && ::poll(&p, 1, 0) >= 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)) == 0;
}

bool TellSupervisor(int chan_fd, const std::string& msg, int pass_fd) {
  if (chan_fd < 0) return false;
  iovec iov{const_cast<char*>(msg.data()), msg.size()};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (pass_fd >= 0) {
    std::memset(ctrl, 0, sizeof(ctrl));
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof(ctrl);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  return ::sendmsg(chan_fd, &mh, MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size());
}

int Supervise(const MountConfig& c, int ready_fd, bool foreground,
              void (*log)(int prio, const std::string& msg)) {
  auto fail = [&](const std::string& why) {
    if (ready_fd >= 0) {
      const std::string s = "1 " + why;
      (void)!::write(ready_fd, s.data(), s.size());
    } else {
      log(LOG_ERR, why);
    }
    return 1;
  };
  std::string config = EncodeConfig(c);
  const int cfg = MakeMemfd("wbfs-config", 0);
  const int ack = MakeMemfd("wbfs-ack-log", AckLogBytes());
  const int sess = MakeMemfd("wbfs-session", sizeof(SessionShared));
  if (cfg < 0 || ack < 0 || sess < 0) return fail(std::string("memfd: ") + std::strerror(errno));
  if (::pwrite(cfg, config.data(), config.size(), 0) != static_cast<ssize_t>(config.size())) {
    return fail(std::string("memfd: ") + std::strerror(errno));
  }
  void* map = ::mmap(nullptr, sizeof(SessionShared), PROT_READ | PROT_WRITE, MAP_SHARED, sess, 0);
  if (map == MAP_FAILED) return fail(std::string("mmap: ") + std::strerror(errno));
  auto* shm = static_cast<SessionShared*>(map);
  shm->magic = SessionShared::kMagic;
  shm->version = kSessionVersion;
  shm->supervisor_pid = static_cast<int32_t>(::getpid());
  shm->last_recovery_ms = -1;

  // Signals a user sends to the mount (SIGTERM from systemd, ^C in the
  // foreground) go to the daemon, which unmounts; the supervisor then sees
  // it end cleanly.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  const std::string exe = ExePath();
  int fuse_fd = -1;
  bool served = false;  // a daemon has served this mount
  int stop_signal = 0;  // to pass on
  bool stopping = false;  // a stop was passed on: no more restarts
  std::deque<int64_t> crashes;  // steady ms of the recent crashes
  for (;;) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      const std::string why = std::string("socketpair: ") + std::strerror(errno);
      if (!served) return fail(why);
      log(LOG_ERR, why + "; giving the mount up");
      if (fuse_fd >= 0) ::close(fuse_fd);
      return 1;
    }
    Handover h;
    h.config_fd = cfg;
    h.chan_fd = sv[1];
    h.ack_fd = ack;
    h.session_fd = sess;
    h.fuse_fd = served ? fuse_fd : -1;
    h.ready_fd = served ? -1 : ready_fd;
    h.foreground = foreground;
    const std::string arg = EncodeHandover(h);
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (int fd : {h.config_fd, h.chan_fd, h.ack_fd, h.session_fd, h.fuse_fd, h.ready_fd}) {
        if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
      }
      for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
      // ^C on the terminal of a foreground mount reaches the supervisor
      // alone, which passes it on once.
      if (foreground) ::setpgid(0, 0);
      const char* argv[] = {"wbfs", "mount", "--handover", arg.c_str(), c.mountpoint.c_str(), nullptr};
      ::execv(exe.c_str(), const_cast<char**>(argv));
      // The installed binary is gone (a failed upgrade): this one, still
      // mapped, can serve.
      ::execv("/proc/self/exe", const_cast<char**>(argv));
      ::_exit(127);
    }
    ::close(sv[1]);
    if (pid < 0) {
      ::close(sv[0]);
      const std::string why = std::string("fork: ") + std::strerror(errno);
      if (!served) return fail(why);
      log(LOG_ERR, why + "; giving the mount up");
      if (fuse_fd >= 0) ::close(fuse_fd);
      return 1;
    }
    if (!served && ready_fd >= 0) {
      ::close(ready_fd);  // the daemon reports; its death closes the pipe
      ready_fd = -1;
    }
    shm->daemon_pid = static_cast<int32_t>(pid);
    bool handover = false, serving = false;
    int exit_code = -1;
    for (;;) {
      // A stop (SIGTERM, ^C) goes to a daemon that serves: one still
      // starting gets it once it serves (its handlers are not set before).
      if (g_signal != 0) {
        stop_signal = g_signal;
        g_signal = 0;
      }
      if (stop_signal != 0 && (serving || !served)) {
        ::kill(pid, stop_signal);
        stop_signal = 0;
        stopping = true;
      }
      pollfd p{sv[0], POLLIN, 0};
      if (::poll(&p, 1, 250) <= 0) continue;
      std::string msg;
      int passed = -1;
      const int r = Receive(sv[0], &msg, &passed);
      if (r == 0) break;
      if (r < 0) continue;
      if (msg == "fuse" && passed >= 0) {
        if (fuse_fd >= 0) ::close(fuse_fd);
        fuse_fd = passed;
      } else {
        if (passed >= 0) ::close(passed);
        if (msg == "serving") serving = true;
        else if (msg == "handover") handover = true;
        else if (msg.rfind("exit ", 0) == 0) exit_code = std::atoi(msg.c_str() + 5);
      }
    }
    ::close(sv[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const int64_t died = static_cast<int64_t>(WallClockMs());
    const std::string how = DeathText(status);
    // The end of a daemon that served: unmounted, and the cache closed (or
    // not). A successor that exits before it serves failed to start: a
    // crash like any other.
    if (exit_code >= 0 && (serving || !served)) {
      if (fuse_fd >= 0) ::close(fuse_fd);
      return exit_code;
    }
    if (!served && !serving) {
      // The first daemon failed before the image was ready: it said why
      // on the pipe (or died: `wbfs mount` says so).
      if (fuse_fd >= 0) ::close(fuse_fd);
      return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
    }
    if (!served && serving && c.accept_loss) {
      // The loss was accepted once, by the first daemon; a successor
      // replays the log that left, and must not accept a new one.
      MountConfig later = c;
      later.accept_loss = false;
      config = EncodeConfig(later);
      if (::ftruncate(cfg, 0) != 0 ||
          ::pwrite(cfg, config.data(), config.size(), 0) != static_cast<ssize_t>(config.size())) {
        log(LOG_ERR, std::string("rewriting the configuration for successors: ") + std::strerror(errno));
      }
    }
    served = served || serving;
    if (fuse_fd < 0 || !Connected(fuse_fd)) {
      log(LOG_ERR, "the daemon (pid " + std::to_string(pid) + ") " + how +
                       " and the FUSE connection is gone (unmounted or aborted); not restarting. "
                       "The next mount replays the cache");
      if (fuse_fd >= 0) ::close(fuse_fd);
      return 1;
    }
    if (stopping) {
      log(LOG_ERR, "the daemon (pid " + std::to_string(pid) + ") " + how +
                       " after it was told to stop; not restarting. The next mount replays the cache");
      ::close(fuse_fd);
      return 1;
    }
    if (!handover) {
      const int64_t now = static_cast<int64_t>(MonotonicMs());
      crashes.push_back(now);
      while (!crashes.empty() && crashes.front() < now - c.restart_interval * 1000) crashes.pop_front();
      if (static_cast<int64_t>(crashes.size()) > c.restart_limit) {
        log(LOG_ERR, "the daemon (pid " + std::to_string(pid) + ") " + how + "; that is " +
                         std::to_string(crashes.size()) + " crashes within " +
                         std::to_string(c.restart_interval) + " s (restart_limit " +
                         std::to_string(c.restart_limit) +
                         "): giving up and aborting the FUSE connection (its users get errors from now "
                         "on); the cache is left as after a crash and the next mount replays it");
        ::close(fuse_fd);
        return 1;
      }
    }
    const std::string reason = handover ? "handover (wbfs restart), old daemon " + how : how;
    shm->restarts++;
    shm->last_death_ms = died;
    shm->last_recovery_ms = -1;
    CopyText(shm->last_reason, sizeof(shm->last_reason), reason);
    log(handover ? LOG_INFO : LOG_ERR, "the daemon (pid " + std::to_string(pid) + ") " + how +
                                           (handover ? " after handing over" : "") +
                                           "; starting " + exe + " on the same connection (restart " +
                                           std::to_string(shm->restarts) + ")");
  }
}

}  // namespace wbfs::cli
