// wbfs mount: parse and check everything, then (unless -f) fork; the child
// opens the devices, replays the cache, mounts, and only then tells the
// parent through a pipe that the image is ready (libfuse 3.14 would
// daemonize before mounting, so wbfs does its own readiness signal).
// With a supervisor (src/cli/supervisor.h, the default on Linux 6.9 and
// later) the child is the supervisor, and the daemon its child, started
// as `wbfs mount --handover ...`.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <sstream>
#include <system_error>
#include <thread>

#include "cli/commands.h"
#include "cli/config.h"
#include "cli/command_line.h"
#include "cli/control.h"
#include "cli/owner_record.h"
#include "cli/supervisor.h"
#include "ctl/ctl.h"
#include "ctl/protocol.h"
#include "fuse/frontend.h"
#include "util/clock.h"
#include "wbfs/device.h"
#include "wbfs/engine.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace po = boost::program_options;

namespace wbfs::cli {
namespace {

bool g_foreground = false;
// Where a background daemon logs: syslog when /dev/log exists (g_log_fd
// < 0), else the file g_log_path next to the control socket (containers
// often have no syslog).
int g_log_fd = -1;
std::string g_log_path;

void Log(int prio, const std::string& msg) {
  if (g_foreground) {
    std::cerr << "wbfs: " << msg << "\n";
  } else if (g_log_fd >= 0) {
    char when[32];
    time_t now = ::time(nullptr);
    struct tm tm;
    ::gmtime_r(&now, &tm);
    ::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const std::string line = std::string(when) + " wbfs[" + std::to_string(::getpid()) + "] " +
                             (prio <= LOG_ERR ? "error: " : prio == LOG_WARNING ? "warning: " : "") +
                             msg + "\n";
    (void)!::write(g_log_fd, line.data(), line.size());  // O_APPEND: one write, one line
  } else {
    ::syslog(prio, "%s", msg.c_str());
  }
}

// Opens the log of a background daemon (see g_log_fd).
void OpenLog(const std::string& mountpoint) {
  struct stat st;
  if (::stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::openlog("wbfs", LOG_PID, LOG_DAEMON);
    return;
  }
  if (!ctl::EnsureSocketDir().ok()) {  // the control server reports this
    ::openlog("wbfs", LOG_PID, LOG_DAEMON);
    return;
  }
  g_log_path = ctl::LogPath(mountpoint);
  g_log_fd = ::open(g_log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (g_log_fd < 0) {
    g_log_path.clear();
    ::openlog("wbfs", LOG_PID, LOG_DAEMON);
  }
}

// A mount refused before it logged anything leaves no empty log file.
void CloseLog() {
  struct stat st;
  if (g_log_fd >= 0 && ::fstat(g_log_fd, &st) == 0 && st.st_size == 0) ::unlink(g_log_path.c_str());
}

std::string LogTarget() {
  if (g_foreground) return "stderr";
  return g_log_fd >= 0 ? g_log_path : "syslog";
}

// A background process lets go of the terminal and the directory it was
// started from.
void Detach() {
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::close(null);
  }
  (void)!::chdir("/");
}

// What the child tells the parent: "OK" or "<exit code> <message>".
void Report(int fd, int code, const std::string& msg) {
  if (fd < 0) {
    if (code != kExitOk) std::cerr << "wbfs: " << msg << "\n";
    return;
  }
  std::string s = code == kExitOk ? "OK" : std::to_string(code) + " " + msg;
  (void)!::write(fd, s.data(), s.size());
  ::close(fd);
}

// A daemon's link to its supervisor (null: none; a dead daemon then ends
// the mount).
struct SupervisorLink {
  Handover h;
  SessionShared* shm = nullptr;
  AckLogRegion ack;
  bool successor() const { return h.fuse_fd >= 0; }
};

// Runs in the daemon (or in the foreground). `ready_fd` is the pipe to
// the waiting parent, or -1.
int RunDaemonInner(const MountConfig& c, int ready_fd, const SupervisorLink* sup);
int RunDaemon(const MountConfig& c, int ready_fd, const SupervisorLink* sup = nullptr) {
  const int code = RunDaemonInner(c, ready_fd, sup);
  if (sup != nullptr) TellSupervisor(sup->h.chan_fd, "exit " + std::to_string(code));
  CloseLog();
  return code;
}

int RunDaemonInner(const MountConfig& c, int ready_fd, const SupervisorLink* sup) {
  if (!g_foreground) OpenLog(c.mountpoint);
  // The daemon must not recurse into the I/O it serves when memory is
  // short (a loop device or VM above it), nor be the OOM killer's pick.
  (void)::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  // The FUSE receive buffers are locked in memory (src/fuse/frontend.cc),
  // about 1 MiB per worker: more than the usual 8 MiB limit allows.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
    if (::geteuid() == 0) rl.rlim_max = RLIM_INFINITY;
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_MEMLOCK, &rl);
  }
  // Writeback's buffers (up to 16 MiB each) come and go: keep them out of
  // the heap, or glibc's adaptive threshold keeps them resident for good.
  (void)::mallopt(M_MMAP_THRESHOLD, 256 << 10);
  if (int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); fd >= 0) {
    (void)!::write(fd, "-1000", 5);
    ::close(fd);
  }
  DeviceOptions co;
  co.direct = true;
  auto cache = OpenPosixDevice(c.cache, co);
  if (!cache.ok()) {
    Report(ready_fd, kExitFailure, "cache: " + cache.status().message());
    return kExitFailure;
  }
  BackingOptions bo;
  bo.ceph_conf = c.ceph_conf;
  bo.ceph_client_id = c.ceph_client_id;
  // A shared backing (RBD) whose newest data is in another host's cache is
  // refused as its lock is taken, before anything is written (see
  // cli/owner_record.h); files and block devices keep no record.
  Status refused;
  bo.admit = [&](Device& b) { return refused = CheckOwnerRecord(b, *cache.value(), c.backing); };
  // A successor breaks the lock its dead predecessor held (and only that
  // owner's: the supervisor saw it die), or it would wait for Ceph to
  // time the dead client out.
  if (sup != nullptr && sup->successor()) {
    bo.break_lock_of = std::string(sup->shm->lock_owner, strnlen(sup->shm->lock_owner, sizeof(sup->shm->lock_owner)));
  }
  auto backing = OpenBackingDevice(c.backing, bo);
  if (!refused.ok()) {
    Report(ready_fd, kExitFailure, refused.message());
    return kExitFailure;
  }
  if (!backing.ok()) {
    // A wrong pool or image name (or a size no image can have) is a usage
    // error, as a missing backing file is caught before the fork.
    const int code = backing.status().code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure;
    Report(ready_fd, code, "backing: " + backing.status().message());
    return code;
  }
  Device* const cache_dev = cache.value().get();  // owned by the engine from here on
  OwnerRecordStore* const owner_store = OwnerRecordOf(*backing.value());  // null for files and block devices
  OwnerRecorder recorder(owner_store, [](int prio, const std::string& m) { Log(prio, m); });
  std::string warning;
  bool created = false;
  auto journal = OpenJournalFor(c.journal, c.backing, c.cache, bo, *backing.value(), &warning, &created);
  if (!journal.ok()) {
    const int code = journal.status().code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure;
    Report(ready_fd, code, journal.status().message());
    return code;
  }
  // Who owns the locks now, before anything that may die half-way (a
  // successor breaks exactly these).
  if (sup != nullptr) {
    const std::string me = owner_store != nullptr ? owner_store->LockOwner() : "";
    std::memset(sup->shm->lock_owner, 0, sizeof(sup->shm->lock_owner));
    std::memcpy(sup->shm->lock_owner, me.data(), std::min(me.size(), sizeof(sup->shm->lock_owner) - 1));
  }
  if (!warning.empty()) Log(LOG_WARNING, warning);
  if (!journal.value()) {
    Log(LOG_WARNING, "no journal (journal none): if the cache is lost, the backing may be a mix "
                     "of two flush points");
  }
  EngineOptions eo;
  eo.tunables = c.tunables;
  eo.accept_loss = c.accept_loss;
  eo.log = [](const std::string& m) { Log(LOG_ERR, m); };
  if (sup != nullptr) eo.ack_log = sup->ack;
  // A new cache file is written once over (see EngineOptions).
  struct stat cst;
  eo.prefill_new_cache = ::stat(c.cache.c_str(), &cst) == 0 && S_ISREG(cst.st_mode);
  auto engine = Engine::Open(eo, std::move(backing.value()), std::move(cache.value()),
                             std::move(journal.value()));
  if (!engine.ok()) {
    if (created) RemoveCreatedJournal(c.journal, c.backing, bo);  // leave nothing behind
    std::string msg = engine.status().message();
    if (engine.status().code() == Status::Code::kCorruption && !c.accept_loss &&
        msg.find("--accept-loss") == std::string::npos) {
      msg += "; the cache was refused and left untouched (to use it as a new cache, zero its "
             "first 4 KiB, which discards what it holds)";
    }
    Report(ready_fd, kExitFailure, msg);
    return kExitFailure;
  }
  Engine* e = engine.value().get();
  // Before the image takes a write: the record says this cache may hold
  // data the backing lacks until an unmount finds it clean.
  const CacheIdentity cid = ReadCacheIdentity(*cache_dev);
  Status mst = cid.known ? recorder.Mark(*e, cid.nonce)
                         : Status::Corruption("the cache's superblock cannot be read back");
  if (!mst.ok()) {
    (void)e->Close();
    Report(ready_fd, kExitFailure, "cannot record that this cache holds the image's newest data: " +
                                       mst.message());
    return kExitFailure;
  }
  // Ends the record's upkeep once the engine is closed: removes it when
  // nothing is left to write back, else leaves the final flush point.
  auto finish_record = [&](bool closed_ok) {
    bool cleared = false;
    const Status fst = recorder.Finish(e->Stats(), closed_ok, &cleared);
    if (!fst.ok()) {
      Log(LOG_ERR, "the record of this cache's dirty data: " + fst.message());
    } else if (cleared) {
      Log(LOG_INFO, "the cache is clean: removed the record of its dirty data from the backing");
    }
  };
  ControlContext ctx{&c, LogTarget(), [](int prio, const std::string& m) { Log(prio, m); }, owner_store, nullptr,
                     nullptr};
  fuse::FrontendOptions fo;
  fo.mountpoint = c.mountpoint;
  fo.image_name = c.image_name;
  fo.fsname = c.backing;
  fo.allow_other = c.allow_other;
  fo.warn = [](const std::string& m) { Log(LOG_WARNING, m); };
  if (sup != nullptr) {
    SessionShared* shm = sup->shm;
    // A version 1 region (an older supervisor) has no init_replied: an
    // INIT kept there counts as answered.
    const bool replied = shm->version >= 2 ? shm->init_replied != 0 : shm->init_len > 0;
    if (sup->successor()) fo.adopt_fd = sup->h.fuse_fd;
    if (sup->successor() && replied) {
      fo.adopt_init.assign(shm->init, std::min<size_t>(shm->init_len, sizeof(shm->init)));
    } else {
      fo.on_init = [shm](const std::string& init) {
        if (init.size() > sizeof(shm->init)) return;  // a successor then takes the INIT again
        shm->init_replied = 0;
        std::memcpy(shm->init, init.data(), init.size());
        __atomic_store_n(&shm->init_len, static_cast<uint32_t>(init.size()), __ATOMIC_RELEASE);
      };
      fo.on_init_replied = [shm] {
        if (shm->init_len > 0) __atomic_store_n(&shm->init_replied, 1u, __ATOMIC_RELEASE);
      };
    }
  }
  fuse::Frontend frontend(e, fo);
  ctx.supervision = [sup, &c]() {
    SupervisionInfo s;
    if (sup == nullptr) {
      s.none_why = "restart_limit is 0: if the daemon dies, the mount ends with it";
      if (c.restart_limit > 0 && !KernelCanTakeOver(&s.none_why)) s.none_why += ": if the daemon dies, the mount ends with it";
      return s;
    }
    if (!SupervisorAlive(sup->h.chan_fd)) {
      s.none_why = "the supervisor (pid " + std::to_string(sup->shm->supervisor_pid) +
                   ") is gone: if the daemon dies, the mount ends with it";
      return s;
    }
    s.supervisor_pid = sup->shm->supervisor_pid;
    s.restarts = sup->shm->restarts;
    s.last_reason.assign(sup->shm->last_reason, strnlen(sup->shm->last_reason, sizeof(sup->shm->last_reason)));
    s.last_death_ms = sup->shm->last_death_ms;
    s.last_recovery_ms = sup->shm->last_recovery_ms;
    return s;
  };
  std::atomic<bool> handing_over{false};
  ctx.restart = [&, sup]() -> std::string {
    if (sup == nullptr) return "this mount has no supervisor to start a new daemon (see 'wbfs status')";
    // Without its supervisor this daemon holds the connection's last fd:
    // exiting would end the mount.
    if (!SupervisorAlive(sup->h.chan_fd)) {
      return "the mount's supervisor (pid " + std::to_string(sup->shm->supervisor_pid) +
             ") is gone: a restart would end the mount; unmount and mount again instead";
    }
    if (handing_over.exchange(true)) return "a restart is already under way";
    if (!TellSupervisor(sup->h.chan_fd, "handover")) {
      handing_over = false;
      return "the mount's supervisor does not answer: not restarting";
    }
    // After the reply: stop answering, make every acknowledged write
    // durable on the cache, and exit without unmounting. Requests read
    // from now on wait for the successor (FUSE_NOTIFY_RESEND).
    auto hand_over = [&frontend, e] {
      if (!frontend.Quiesce(10000)) {
        Log(LOG_WARNING, "handing over: requests still in the engine after 10 s are left to the new daemon");
      }
      const Status fs = e->Flush();
      if (!fs.ok()) {
        Log(LOG_ERR, "handing over: flushing the cache failed (" + fs.message() +
                         "); the new daemon rebuilds the acknowledged writes from the ack log");
      }
      Log(LOG_INFO, "handed the mount over (wbfs restart); exiting");
      ::_exit(kExitOk);
    };
    try {
      std::thread(hand_over).detach();
    } catch (const std::system_error& ex) {
      // The supervisor was told: it counts this daemon's later death as
      // a handover, which is harmless.
      handing_over = false;
      return std::string("cannot start the handover: ") + ex.what();
    }
    return "";
  };
  ctl::Server server;
  Status st = server.Start(ctl::SocketPath(c.mountpoint), [&](const std::string& req) {
    return HandleControlRequest(e, ctx, req);
  });
  if (!st.ok()) {
    finish_record(e->Close().ok());
    Report(ready_fd, kExitFailure, st.message());
    return kExitFailure;
  }
  st = frontend.Mount();
  if (!st.ok()) {
    finish_record(e->Close().ok());
    Report(ready_fd, kExitFailure, st.message());
    return kExitFailure;
  }
  if (sup != nullptr && !sup->successor()) TellSupervisor(sup->h.chan_fd, "fuse", frontend.fd());
  recorder.Start(e);
  EngineStats s0 = e->Stats();
  const std::string opened = s0.formatted ? "cache formatted"
                                          : std::to_string(s0.replayed_chunks) + " chunks replayed, " +
                                                std::to_string(s0.dropped_chunks) + " torn dropped";
  if (sup != nullptr && sup->successor()) {
    const int64_t took = static_cast<int64_t>(WallClockMs()) - sup->shm->last_death_ms;
    sup->shm->last_recovery_ms = took;
    Log(LOG_INFO, "took over " + c.mountpoint + " after the last daemon's " +
                      std::string(sup->shm->last_reason, strnlen(sup->shm->last_reason, sizeof(sup->shm->last_reason))) +
                      ", " + std::to_string(took) + " ms after its end (" + opened + ", " +
                      std::to_string(s0.ack_log_rebuilt) + " acknowledged writes rebuilt from the ack log)");
  } else {
    Log(LOG_INFO, "mounted " + c.mountpoint + "/" + c.image_name + " (" + opened + ")");
  }
  if (sup == nullptr && c.restart_limit > 0) {
    std::string why;
    if (!KernelCanTakeOver(&why)) Log(LOG_WARNING, why + ": if this daemon dies, the mount ends with it");
  }
  Report(ready_fd, kExitOk, "");
  if (sup != nullptr) TellSupervisor(sup->h.chan_fd, "serving");
  if (!g_foreground) Detach();
  st = frontend.Run();
  // A handover under way ends this process itself (_exit), with the engine
  // still open.
  while (handing_over) ::pause();
  if (!st.ok()) Log(LOG_ERR, st.message());
  recorder.Stop();
  Status cs = engine.value()->Close();
  finish_record(cs.ok());
  // A waiting `wbfs umount` learns how the daemon ended.
  if (!cs.ok()) {
    Log(LOG_ERR, "closing the cache: " + cs.message());
    server.Stop(ctl::FarewellReply(kExitFailure, "closing the cache: " + cs.message()));
    return kExitFailure;
  }
  Log(LOG_INFO, "unmounted " + c.mountpoint + "; cache closed cleanly");
  if (!st.ok()) {
    server.Stop(ctl::FarewellReply(kExitFailure, st.message()));
    return kExitFailure;
  }
  server.Stop(ctl::FarewellReply(kExitOk));
  return kExitOk;
}

// Resolves an existing file's path, or explains what is wrong with it.
Status ResolveFile(const std::string& what, std::string* path) {
  char buf[PATH_MAX];
  if (::realpath(path->c_str(), buf) == nullptr) {
    return Status::InvalidArgument(what + " " + *path + ": " + std::strerror(errno));
  }
  *path = buf;
  return Status::OK();
}

// Options mount(8) and mount.fuse3 pass along that mean nothing to wbfs
// (the FUSE mount is always nosuid,nodev).
bool IsGenericMountOption(const std::string& o) {
  static const char* kIgnored[] = {"rw", "defaults", "dev", "nodev", "suid", "nosuid", "exec",
                                   "noexec", "auto", "noauto", "user", "nouser", "users", "atime",
                                   "noatime", "relatime", "strictatime", "nodiratime", "_netdev",
                                   "nofail", "async", "sync"};
  for (const char* k : kIgnored) {
    if (o == k) return true;
  }
  return o.rfind("x-", 0) == 0 || o.rfind("comment=", 0) == 0;
}

// `wbfs mount --handover SPEC MOUNTPOINT`: a daemon started by the
// supervisor (never by hand): the mount's configuration, the channel and
// the shared memory come as inherited fds (see Handover).
int ServeHandover(const std::vector<std::string>& args) {
  Handover h;
  if (args.size() != 3 || !DecodeHandover(args[1], &h)) {
    return Fail(kExitUsage, "mount --handover is how wbfs's supervisor starts a daemon, not a user command");
  }
  g_foreground = h.foreground;
  MountConfig c;
  std::string text;
  char buf[4096];
  ssize_t n;
  off_t off = 0;
  while ((n = ::pread(h.config_fd, buf, sizeof(buf), off)) > 0) {
    text.append(buf, static_cast<size_t>(n));
    off += n;
  }
  ::close(h.config_fd);
  Status st = n < 0 ? Status::IOError("the configuration cannot be read", errno) : DecodeConfig(text, &c);
  auto map = [](int fd, size_t* size) -> void* {
    struct stat sb;
    if (::fstat(fd, &sb) != 0 || sb.st_size <= 0) return nullptr;
    *size = static_cast<size_t>(sb.st_size);
    void* p = ::mmap(nullptr, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
  };
  SupervisorLink link;
  link.h = h;
  // Nothing this daemon starts (fusermount3, say) inherits them.
  for (int fd : {h.chan_fd, h.ack_fd, h.session_fd, h.fuse_fd, h.ready_fd}) {
    if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  // An older supervisor's region may be shorter: grown, its new fields
  // read as zeros.
  struct stat ss;
  if (::fstat(h.session_fd, &ss) == 0 && ss.st_size >= static_cast<off_t>(offsetof(SessionShared, init_replied)) &&
      ss.st_size < static_cast<off_t>(sizeof(SessionShared))) {
    (void)::ftruncate(h.session_fd, sizeof(SessionShared));
  }
  size_t sess_size = 0;
  link.shm = static_cast<SessionShared*>(map(h.session_fd, &sess_size));
  link.ack.base = map(h.ack_fd, &link.ack.size);
  if (st.ok() && (link.shm == nullptr || sess_size < sizeof(SessionShared) ||
                  link.shm->magic != SessionShared::kMagic || link.ack.base == nullptr)) {
    st = Status::Corruption("the supervisor's shared memory cannot be mapped or is not wbfs's");
  }
  if (!st.ok()) {
    if (!g_foreground) OpenLog(c.mountpoint);
    Log(LOG_ERR, "the supervisor's handover: " + st.message());
    Report(h.ready_fd, kExitFailure, "the supervisor's handover: " + st.message());
    return kExitFailure;
  }
  // Test switch (tests/e2e/test_restart_loop.sh): every daemon after the
  // first dies at once, as a daemon that crashes at start would.
  if (link.successor() && std::getenv("WBFS_TEST_CRASH_AT_TAKEOVER") != nullptr) std::abort();
  return RunDaemon(c, h.ready_fd, &link);
}

}  // namespace

int CmdMountHelper(const std::vector<std::string>& args) {
  // BACKING MOUNTPOINT [-o OPTIONS]... (mount(8) may put -o first, and
  // adds -n or -s, which mean nothing here).
  std::vector<std::string> pos, rest;
  for (size_t i = 0; i < args.size(); i++) {
    if (args[i] == "-o" && i + 1 < args.size()) {
      rest.push_back("-o");
      rest.push_back(args[++i]);
    } else if (args[i] == "-n" || args[i] == "-s" || args[i] == "-v" || args[i] == "-f") {
      if (args[i] == "-f") rest.push_back("-f");
    } else {
      pos.push_back(args[i]);
    }
  }
  if (pos.size() != 2) {
    return Fail(kExitUsage, "usage as a mount helper: wbfs BACKING MOUNTPOINT -o cache=CACHE[,...]");
  }
  std::vector<std::string> margs = {"--backing", pos[0]};
  margs.insert(margs.end(), rest.begin(), rest.end());
  margs.push_back(pos[1]);
  return CmdMount(margs);
}

int CmdMount(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "--handover") return ServeHandover(args);
  // MOUNTPOINT may also come from the config file; several are refused below.
  CommandLine cl("mount",
                 "usage: wbfs mount [--config FILE] [--backing PATH|rbd:POOL/IMAGE] [--cache PATH]\n"
                 "                  [--ceph-conf FILE] [--ceph-client-id ID]\n"
                 "                  [-o KEY=VALUE[,KEY=VALUE...]]... [-f] [--allow-other]\n"
                 "                  [--accept-loss] [MOUNTPOINT]\n"
                 "\n"
                 "Mounts the image: MOUNTPOINT/image (or image_name) is the backing file as\n"
                 "seen through the cache. A zeroed cache is formatted; a wbfs cache is\n"
                 "replayed. -o takes any config-file key (backing, cache, journal, image_name,\n"
                 "allow_other, ceph_conf, ceph_client_id and the tunables); the command line\n"
                 "overrides the file. The backing may be a Ceph RBD image, rbd:POOL/IMAGE or\n"
                 "rbd:POOL/NAMESPACE/IMAGE: its journal is then the image IMAGE.wbfs-journal.\n",
                 0, SIZE_MAX);
  cl.Options()("config,c", po::value<std::string>(), "JSON config file (see wbfs.json(5))")(
      "backing", po::value<std::string>(), "backing file or block device (HDD), or rbd:POOL/IMAGE")(
      "ceph-conf", po::value<std::string>(), "ceph.conf for an rbd: backing (default: librados's search)")(
      "ceph-client-id", po::value<std::string>(), "Ceph client id for an rbd: backing (default admin)")(
      "cache", po::value<std::string>(), "cache file or block device (SSD)")(
      "option,o", po::value<std::vector<std::string>>()->composing(), "KEY=VALUE[,KEY=VALUE...]")(
      "foreground,f", po::bool_switch(), "stay in the foreground")(
      "allow-other", po::bool_switch(), "let other users open the image")(
      "journal", po::value<std::string>(),
      "writeback journal file (default BACKING.wbfs-journal; 'none' = no journal)")(
      "no-journal", po::bool_switch(), "write back without a journal (same as --journal none)")(
      "accept-loss", po::bool_switch(),
      "mount a cache that lost synced data: write back what survives (a block that fails its "
      "checksum is skipped) and roll the image back to the last intact flush point");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  MountConfig c;
  std::vector<std::string> items;  // every -o item, in order
  if (cl.Has("option")) {
    for (const std::string& group : cl.Get<std::vector<std::string>>("option")) {
      size_t start = 0;
      while (start <= group.size()) {
        size_t comma = group.find(',', start);
        std::string item = group.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!item.empty()) items.push_back(item);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
  }
  std::string config = cl.Has("config") ? cl.Get<std::string>("config") : "";
  for (const std::string& item : items) {
    if (item.rfind("config=", 0) == 0) config = item.substr(7);
  }
  if (!config.empty()) {
    Status st = LoadConfigFile(config, &c);
    if (!st.ok()) return Fail(kExitUsage, st.message());
  }
  for (const std::string& item : items) {
    if (item.rfind("config=", 0) == 0 || IsGenericMountOption(item)) continue;
    if (item == "ro") {
      return Fail(kExitUsage, "-o ro: wbfs mounts are read-write (open the image read-only instead)");
    }
    Status st = ApplyOption(item, &c);
    if (!st.ok()) return Fail(kExitUsage, st.message());
  }
  if (cl.Has("backing")) c.backing = cl.Get<std::string>("backing");
  if (cl.Has("cache")) c.cache = cl.Get<std::string>("cache");
  if (cl.Has("ceph-conf")) c.ceph_conf = cl.Get<std::string>("ceph-conf");
  if (cl.Has("ceph-client-id")) c.ceph_client_id = cl.Get<std::string>("ceph-client-id");
  if (cl.Get<bool>("allow-other")) c.allow_other = true;
  c.accept_loss = cl.Get<bool>("accept-loss");
  if (cl.Has("journal")) c.journal = cl.Get<std::string>("journal");
  if (cl.Get<bool>("no-journal")) {
    if (cl.Has("journal") && c.journal != "none") {
      return Fail(kExitUsage, "mount: --journal and --no-journal contradict each other");
    }
    c.journal = "none";
  }
  if (!cl.words().empty()) {
    const auto& mps = cl.words();
    if (mps.size() > 1) return Fail(kExitUsage, "mount: give one MOUNTPOINT, not " + std::to_string(mps.size()));
    c.mountpoint = mps[0];
  }
  g_foreground = cl.Get<bool>("foreground");
  Status st = Validate(c);
  if (!st.ok()) return Fail(kExitUsage, st.message());
  if (!IsRbdUri(c.backing)) st = ResolveFile("backing", &c.backing);
  if (st.ok()) st = ResolveFile("cache", &c.cache);
  if (st.ok() && !c.ceph_conf.empty()) st = ResolveFile("ceph_conf", &c.ceph_conf);
  if (st.ok()) st = ResolveFile("mountpoint", &c.mountpoint);
  if (!st.ok()) return Fail(kExitUsage, st.message());
  if (!c.journal.empty() && c.journal != "none" && !IsRbdUri(c.journal)) c.journal = AbsolutePath(c.journal);
  struct stat mst;
  if (::stat(c.mountpoint.c_str(), &mst) != 0 || !S_ISDIR(mst.st_mode)) {
    return Fail(kExitUsage, "mountpoint " + c.mountpoint + " is not a directory");
  }
  if (SameFile(c.backing, c.cache)) {
    return Fail(kExitUsage, "backing and cache are the same file: " + c.backing);
  }
  if (IsMountPoint(c.mountpoint)) {
    return Fail(kExitFailure, c.mountpoint + " is already a mount point; unmount it first");
  }
  // With a supervisor unless the user said restart_limit=0 or the kernel
  // cannot hand the connection over (the daemon then says so in its log).
  std::string no_takeover;
  const bool supervised = c.restart_limit > 0 && KernelCanTakeOver(&no_takeover);
  if (g_foreground) return supervised ? Supervise(c, -1, true, Log) : RunDaemon(c, -1);

  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Fail(kExitFailure, std::string("pipe: ") + std::strerror(errno));
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) return Fail(kExitFailure, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(p[0]);
    ::setsid();
    if (!supervised) ::_exit(RunDaemon(c, p[1]));
    // The supervisor: its errors go to the daemon's log, never to the
    // terminal of the `wbfs mount` that started it.
    OpenLog(c.mountpoint);
    Detach();
    const int code = Supervise(c, p[1], false, Log);
    CloseLog();
    ::_exit(code);
  }
  ::close(p[1]);
  std::string reply;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(p[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  if (reply == "OK") return kExitOk;
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (reply.empty()) return Fail(kExitFailure, "the daemon exited before the image was ready");
  size_t sp = reply.find(' ');
  int code = std::atoi(reply.substr(0, sp).c_str());
  return Fail(code == 0 ? kExitFailure : code, reply.substr(sp + 1));
}

}  // namespace wbfs::cli
