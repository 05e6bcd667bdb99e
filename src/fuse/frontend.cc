// Low-level libfuse (3.14) server for one image file.
//
// Configuration (see shared fuse-perf notes): every open is direct_io (no
// second page cache, requests arrive as issued) and noflush (close() is not
// a durability point); splice and the writeback cache are off; max_write is
// 1 MiB; max_background is raised so asynchronous direct I/O (loop devices,
// VMs) reaches the engine with a real queue depth. fsync is the flush and
// never answers ENOSYS (which would make the kernel skip every later one).
// Every handler ends in exactly one fuse_reply_*; exceptions never unwind
// into libfuse.
//
// Taking over a live connection (a restarted daemon): libfuse 3.14 has no
// call for it, and its session answers every request before INIT with
// EIO. So every session reads and writes the device through
// fuse_session_custom_io: a first mount's read hook keeps the kernel's INIT
// request for a successor (FrontendOptions::on_init); a successor's read
// hook hands libfuse that INIT once, as if the kernel had sent it again,
// and its writev hook swallows the reply (the kernel negotiated long ago;
// the same request gives libfuse the same protocol minor, buffer size and
// max_write). Until that reply, other worker threads wait instead of
// reading; right after it, FUSE_NOTIFY_RESEND makes the kernel queue again
// every request the dead daemon had read but not answered. Speaking the
// protocol directly was the other way; it would mean owning every
// request's layout for the sake of one request at start.
#define FUSE_USE_VERSION 314
#include "fuse/frontend.h"

#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "util/aligned_buffer.h"

namespace wbfs::fuse {
namespace {

constexpr fuse_ino_t kImageIno = 2;
constexpr double kTimeout = 86400.0;  // only wbfs changes anything here
// FUSE_NOTIFY_RESEND (Linux 6.9); Debian 12's uapi header predates it.
constexpr int32_t kNotifyResend = 7;

// What the device hooks share (see the top of the file).
struct Io {
  int fd = -1;
  bool adopting = false;     // a successor: inject adopt_init first
  std::mutex mu;
  std::condition_variable cv;
  bool injected = false;     // guarded by mu
  std::atomic<bool> init_done{false};
  std::atomic<bool> init_seen{false};  // a first mount: on_init called
  std::atomic<bool> init_replied{false};
  std::atomic<bool> lock_warned{false};
};

// FUSE_NOTIFY_RESEND on `fd`: "" or why it failed.
std::string NotifyResend(int fd) {
  fuse_out_header resend;
  std::memset(&resend, 0, sizeof(resend));
  resend.len = sizeof(resend);
  resend.error = kNotifyResend;
  resend.unique = 0;
  const ssize_t w = ::write(fd, &resend, sizeof(resend));
  if (w == static_cast<ssize_t>(sizeof(resend))) return "";
  return std::string("FUSE_NOTIFY_RESEND failed (") + (w < 0 ? std::strerror(errno) : "a short write") +
         "): the requests the dead daemon had read wait for the kernel's own timeout, if any";
}

// Quiesce's gate: handlers count themselves in; once closed, a handler
// that arrives waits for the process to end.
struct Gate {
  std::atomic<bool> closed{false};
  std::atomic<int> inflight{0};
  std::mutex mu;
  std::condition_variable cv;
};

struct Ctx {
  Engine* engine;
  const FrontendOptions* opts;
  uid_t uid;
  gid_t gid;
  time_t start;
  Io* io;
  Gate* gate;
};

Ctx* Get(fuse_req_t req) { return static_cast<Ctx*>(fuse_req_userdata(req)); }

// Counts a handler in; false (after waiting forever) once the gate closed.
class GatePass {
 public:
  explicit GatePass(Gate* g) : g_(g) {
    g_->inflight.fetch_add(1);
    if (g_->closed.load()) {
      Leave();
      std::unique_lock<std::mutex> lk(g_->mu);
      for (;;) g_->cv.wait(lk);  // the process exits without answering
    }
  }
  ~GatePass() { Leave(); }
  GatePass(const GatePass&) = delete;
  GatePass& operator=(const GatePass&) = delete;

 private:
  void Leave() {
    if (g_->inflight.fetch_sub(1) == 1 && g_->closed.load()) {
      std::lock_guard<std::mutex> lk(g_->mu);
      g_->cv.notify_all();
    }
  }
  Gate* g_;
};

void FillAttr(const Ctx* c, fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_uid = c->uid;
  st->st_gid = c->gid;
  st->st_atime = st->st_mtime = st->st_ctime = c->start;
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(c->engine->Size());
    st->st_blksize = 4096;
    st->st_blocks = st->st_size / 512;
  }
}

template <typename F>
void Guard(fuse_req_t req, F&& f) {
  GatePass pass(Get(req)->gate);
  try {
    f();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (...) {
    fuse_reply_err(req, EIO);
  }
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  (void)userdata;
  conn->max_write = 1 << 20;
  conn->max_background = 128;
  conn->congestion_threshold = 96;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                  FUSE_CAP_WRITEBACK_CACHE);
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, [&] {
    Ctx* c = Get(req);
    if (parent != FUSE_ROOT_ID || c->opts->image_name != name) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_entry_param e;
    std::memset(&e, 0, sizeof(e));
    e.ino = kImageIno;
    e.attr_timeout = kTimeout;
    e.entry_timeout = kTimeout;
    FillAttr(c, kImageIno, &e.attr);
    fuse_reply_entry(req, &e);
  });
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guard(req, [&] {
    if (ino != FUSE_ROOT_ID && ino != kImageIno) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    struct stat st;
    FillAttr(Get(req), ino, &st);
    fuse_reply_attr(req, &st, kTimeout);
  });
}

// Size, mode and owner are fixed; times may be "set" (ignored) so that
// touch and cp -p do not fail.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  Guard(req, [&] {
    Ctx* c = Get(req);
    if ((to_set & FUSE_SET_ATTR_SIZE) &&
        (ino != kImageIno || static_cast<uint64_t>(attr->st_size) != c->engine->Size())) {
      fuse_reply_err(req, EPERM);
      return;
    }
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    struct stat st;
    FillAttr(c, ino, &st);
    fuse_reply_attr(req, &st, kTimeout);
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guard(req, [&] {
    if (ino != FUSE_ROOT_ID) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    Ctx* c = Get(req);
    const char* names[3] = {".", "..", c->opts->image_name.c_str()};
    const fuse_ino_t inos[3] = {FUSE_ROOT_ID, FUSE_ROOT_ID, kImageIno};
    std::vector<char> buf(size);
    size_t used = 0;
    for (off_t i = off; i < 3; i++) {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = inos[i];
      st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
      size_t n = fuse_add_direntry(req, buf.data() + used, size - used, names[i], &st, i + 1);
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    if (ino != kImageIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (fi->flags & O_TRUNC) {
      fuse_reply_err(req, EPERM);
      return;
    }
    fi->direct_io = 1;
    fi->noflush = 1;
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
  });
}

void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  Guard(req, [&] {
    Engine* e = Get(req)->engine;
    uint64_t uoff = static_cast<uint64_t>(off);
    if (off < 0 || uoff >= e->Size()) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, e->Size() - uoff));
    // 4 KiB-aligned, so that the cache's O_DIRECT reads land in it without
    // a bounce buffer (a vector's memory is not aligned).
    thread_local AlignedBuffer buf;
    if (buf.size() < n) buf.Reset(n);
    Status st = e->Read(uoff, buf.data(), n);
    if (!st.ok()) {
      fuse_reply_err(req, ErrnoFor(st));
      return;
    }
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), n);
  });
}

// A write the application asked to be synchronous (O_DSYNC or O_SYNC on the
// file, or RWF_DSYNC on the call) is a flush before its reply: on a
// direct_io file the kernel passes the flag in the request (fi->flags)
// instead of sending an fsync after it, so without this such writes were
// acknowledged from the RAM buffer.
void OpWrite(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off,
             fuse_file_info* fi) {
  Guard(req, [&] {
    Engine* e = Get(req)->engine;
    uint64_t uoff = static_cast<uint64_t>(off);
    if (off < 0 || (uoff >= e->Size() && size > 0)) {
      fuse_reply_err(req, ENOSPC);  // the image never grows
      return;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, e->Size() - uoff));
    Status st = e->Write(uoff, data, n);
    if (st.ok() && fi != nullptr && (fi->flags & (O_DSYNC | O_SYNC)) != 0) st = e->Flush();
    if (!st.ok()) {
      fuse_reply_err(req, ErrnoFor(st));
      return;
    }
    fuse_reply_write(req, n);
  });
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  Guard(req, [&] {
    if (ino != kImageIno) {
      fuse_reply_err(req, 0);
      return;
    }
    fuse_reply_err(req, ErrnoFor(Get(req)->engine->Flush()));
  });
}

void OpFlush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
void OpRelease(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
void OpFsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

// PUNCH_HOLE|KEEP_SIZE (a loop device's discard) and ZERO_RANGE (its
// write-zeroes) make the range read as zeros; a plain allocation inside the
// image is a no-op; anything that would grow the image is ENOSPC; other
// modes are EOPNOTSUPP (never ENOSYS, which the kernel would remember).
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Guard(req, [&] {
    Engine* e = Get(req)->engine;
    if (ino != kImageIno || off < 0 || len <= 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    const uint64_t size = e->Size(), uoff = static_cast<uint64_t>(off);
    const uint64_t ulen = static_cast<uint64_t>(len);
    const bool keep = mode & FALLOC_FL_KEEP_SIZE;
    const int kind = mode & ~FALLOC_FL_KEEP_SIZE;
    if (kind != 0 && kind != FALLOC_FL_PUNCH_HOLE && kind != FALLOC_FL_ZERO_RANGE) {
      fuse_reply_err(req, EOPNOTSUPP);
      return;
    }
    if (kind == FALLOC_FL_PUNCH_HOLE && !keep) {
      fuse_reply_err(req, EOPNOTSUPP);  // as the kernel requires for files
      return;
    }
    if (uoff >= size || ulen > size - uoff) {
      if (!keep) {
        fuse_reply_err(req, ENOSPC);  // the image never grows
        return;
      }
      if (uoff >= size) {
        fuse_reply_err(req, 0);
        return;
      }
    }
    if (kind == 0) {  // allocate: every byte of the image already exists
      fuse_reply_err(req, 0);
      return;
    }
    fuse_reply_err(req, ErrnoFor(e->Discard(uoff, std::min(ulen, size - uoff))));
  });
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  Guard(req, [&] {
    struct statvfs sv;
    std::memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = Get(req)->engine->Size() / 4096;
    sv.f_files = 2;
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
  });
}

void DenyEntry(fuse_req_t req) { fuse_reply_err(req, EPERM); }
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { DenyEntry(req); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { DenyEntry(req); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { DenyEntry(req); }
void OpRmdir(fuse_req_t req, fuse_ino_t, const char*) { DenyEntry(req); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { DenyEntry(req); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  DenyEntry(req);
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { DenyEntry(req); }
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { DenyEntry(req); }

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.readdir = OpReaddir;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.fsync = OpFsync;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsyncdir = OpFsyncdir;
  ops.fallocate = OpFallocate;
  ops.statfs = OpStatfs;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.create = OpCreate;
  return ops;
}

// Mount options take commas as separators: keep fsname readable but safe.
std::string OptionValue(std::string s) {
  for (char& ch : s) {
    if (ch == ',' || ch == '\\' || ch == ' ') ch = '_';
  }
  return s;
}

Ctx g_ctx;
Io g_io;
Gate g_gate;

ssize_t IoRead(int fd, void* buf, size_t len, void* userdata) {
  Io* io = static_cast<Ctx*>(userdata)->io;
  if (io->adopting && !io->init_done.load(std::memory_order_acquire)) {
    std::unique_lock<std::mutex> lk(io->mu);
    if (!io->injected) {
      io->injected = true;
      const std::string& init = g_ctx.opts->adopt_init;
      if (len < init.size()) {
        errno = EIO;
        return -1;
      }
      std::memcpy(buf, init.data(), init.size());
      return static_cast<ssize_t>(init.size());
    }
    io->cv.wait(lk, [io] { return io->init_done.load(); });
  }
  // The kernel copies a request into this buffer page by page, and a page
  // that is not present has to be faulted in, which fails once this
  // process has been sent SIGKILL: the kernel then ends that request with
  // EIO instead of leaving it for a successor (seen as write errors under
  // fio while the daemon was being killed). So each thread's buffer
  // (libfuse keeps one per worker) is locked in memory at its first read.
  thread_local void* locked = nullptr;
  if (locked != buf) {
    locked = buf;  // tried once per buffer
    if (::mlock(buf, len) != 0 && !io->lock_warned.exchange(true) && g_ctx.opts->warn) {
      g_ctx.opts->warn(std::string("cannot lock the FUSE receive buffers in memory (") +
                            std::strerror(errno) +
                            "; raise RLIMIT_MEMLOCK): a request being read when the daemon is killed may "
                            "fail with EIO instead of going to its successor");
    }
  }
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header)) && !io->adopting &&
      !io->init_seen.load(std::memory_order_relaxed) &&
      static_cast<const fuse_in_header*>(buf)->opcode == FUSE_INIT) {
    const int saved = errno;
    io->init_seen.store(true);
    if (g_ctx.opts->on_init) g_ctx.opts->on_init(std::string(static_cast<const char*>(buf), static_cast<size_t>(n)));
    errno = saved;
  }
  return n;
}

ssize_t IoWritev(int fd, struct iovec* iov, int count, void* userdata) {
  Io* io = static_cast<Ctx*>(userdata)->io;
  if (io->adopting && !io->init_done.load(std::memory_order_acquire)) {
    // The reply to the injected INIT: the only reply before init_done,
    // as no other request is read until then.
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    const std::string why = NotifyResend(fd);
    {
      std::lock_guard<std::mutex> lk(io->mu);
      io->init_done.store(true, std::memory_order_release);
    }
    io->cv.notify_all();
    if (!why.empty() && g_ctx.opts->warn) g_ctx.opts->warn(why);
    return static_cast<ssize_t>(total);
  }
  const ssize_t n = ::writev(fd, iov, count);
  // The first reply after the INIT was read is its reply (nothing else is
  // read before it). Every reply passes here: a plain load first, so that
  // the exchange (a write to a line all workers share) happens once.
  if (n >= 0 && !io->adopting && !io->init_replied.load(std::memory_order_relaxed) && io->init_seen.load() &&
      !io->init_replied.exchange(true) && g_ctx.opts->on_init_replied) {
    g_ctx.opts->on_init_replied();
  }
  return n;
}

// Whether the connection on `fd` is still up (the kernel reports a dead
// one as an error on poll).
bool Connected(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) >= 0 && (p.revents & (POLLERR | POLLNVAL)) == 0;
}

// Unmounts an adopted connection (libfuse does not know its mountpoint):
// lazily, as libfuse does for its own mounts.
void UnmountAdopted(const std::string& mountpoint) {
  if (::geteuid() == 0) {
    (void)::umount2(mountpoint.c_str(), MNT_DETACH);
    return;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (pid > 0) (void)::waitpid(pid, &status, 0);
}

}  // namespace

int ErrnoFor(const Status& st) {
  switch (st.code()) {
    case Status::Code::kOk:
      return 0;
    case Status::Code::kOutOfRange:
      return ENOSPC;
    case Status::Code::kNotPermitted:
      return EPERM;
    case Status::Code::kInvalidArgument:
      return EINVAL;
    case Status::Code::kIOError:
      return (st.err() == ENOSPC || st.err() == EROFS) ? st.err() : EIO;
    default:
      return EIO;
  }
}

Frontend::Frontend(Engine* engine, FrontendOptions opts) : engine_(engine), opts_(std::move(opts)) {}

Frontend::~Frontend() {
  if (se_ != nullptr) {
    if (mounted_) fuse_session_unmount(se_);
    fuse_session_destroy(se_);
  }
}

Status Frontend::Mount() {
  g_ctx = Ctx{engine_, &opts_, ::getuid(), ::getgid(), ::time(nullptr), &g_io, &g_gate};
  std::string o = "default_permissions,fsname=" + OptionValue(opts_.fsname) + ",subtype=wbfs";
  if (opts_.allow_other) o += ",allow_other";
  const char* argv[] = {"wbfs", "-o", o.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  static const fuse_lowlevel_ops ops = MakeOps();
  se_ = fuse_session_new(&args, &ops, sizeof(ops), &g_ctx);
  if (se_ == nullptr) return Status::IOError("cannot create the FUSE session", EIO);
  static const fuse_custom_io io = {IoWritev, IoRead, nullptr, nullptr};
  if (opts_.adopt_fd >= 0 && opts_.adopt_init.empty()) {
    // The last daemon never answered the INIT: it comes again.
    g_io.fd = opts_.adopt_fd;
    if (fuse_session_custom_io(se_, &io, opts_.adopt_fd) != 0) {
      return Status::IOError("cannot take over the FUSE connection", EIO);
    }
    const std::string why = NotifyResend(opts_.adopt_fd);
    if (!why.empty() && opts_.warn) opts_.warn(why);
    return Status::OK();
  }
  if (opts_.adopt_fd >= 0) {
    if (opts_.adopt_init.size() < sizeof(fuse_in_header) + 16 ||  // major, minor, readahead, flags
        reinterpret_cast<const fuse_in_header*>(opts_.adopt_init.data())->opcode != FUSE_INIT) {
      return Status::InvalidArgument("the kept INIT request of the connection is not one");
    }
    g_io.fd = opts_.adopt_fd;
    g_io.adopting = true;
    if (fuse_session_custom_io(se_, &io, opts_.adopt_fd) != 0) {
      return Status::IOError("cannot take over the FUSE connection", EIO);
    }
    return Status::OK();  // mounted_ stays false: this process mounted nothing
  }
  if (fuse_session_mount(se_, opts_.mountpoint.c_str()) != 0) {
    return Status::IOError("cannot mount on " + opts_.mountpoint +
                           " (is /dev/fuse available, and may this user mount?)",
                           EIO);
  }
  mounted_ = true;
  g_io.fd = fuse_session_fd(se_);
  if (fuse_session_custom_io(se_, &io, g_io.fd) != 0) {
    return Status::IOError("cannot set the FUSE session's device calls", EIO);
  }
  return Status::OK();
}

int Frontend::fd() const { return se_ == nullptr ? -1 : fuse_session_fd(se_); }

bool Frontend::Quiesce(unsigned timeout_ms) {
  g_gate.closed.store(true);
  std::unique_lock<std::mutex> lk(g_gate.mu);
  return g_gate.cv.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                            [] { return g_gate.inflight.load() == 0; });
}



Status Frontend::Run() {
  if (fuse_set_signal_handlers(se_) != 0) return Status::IOError("cannot set signal handlers", EIO);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, opts_.max_threads);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  int r = fuse_session_loop_mt(se_, cfg);
  fuse_loop_cfg_destroy(cfg);
  fuse_remove_signal_handlers(se_);
  if (mounted_) {
    fuse_session_unmount(se_);
  } else if (opts_.adopt_fd >= 0 && Connected(opts_.adopt_fd)) {
    UnmountAdopted(opts_.mountpoint);  // a signal ended the loop
  }
  mounted_ = false;
  if (r < 0) return Status::IOError("the FUSE session failed", -r);
  return Status::OK();
}

}  // namespace wbfs::fuse
