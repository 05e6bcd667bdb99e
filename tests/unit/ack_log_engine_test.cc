// The ack log through the engine: a child process writes through an Engine
// with a shared region (MAP_SHARED, as a supervisor's memfd) over file
// devices and is killed without Close; a new Engine on the same files and
// region must hold every write the child had acknowledged.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "log/ack_log.h"
#include "wbfs/engine.h"

using namespace wbfs;

namespace {

constexpr uint64_t kImage = 8 << 20;
constexpr uint64_t kCache = 8 << 20;

// A temp dir with a backing and a cache file, and a shared region.
struct Setup {
  explicit Setup(size_t region_bytes = AckLogBytes()) : region_size(region_bytes) {
    char tmpl[] = "/tmp/wbfs-acklog-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    MakeFile(dir + "/backing", kImage);
    MakeFile(dir + "/cache", kCache);
    region =
        ::mmap(nullptr, region_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(region != MAP_FAILED);
  }
  ~Setup() {
    ::munmap(region, region_size);
    for (const char* f : {"/backing", "/cache", "/backing2", "/cache2"})
      ::unlink((dir + f).c_str());
    ::rmdir(dir.c_str());
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  static void MakeFile(const std::string& path, uint64_t size) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
    ::close(fd);
  }

  Result<std::unique_ptr<Engine>> Open(const std::string& suffix = "") const {
    DeviceOptions o;
    auto b = OpenPosixDevice(dir + "/backing" + suffix, o);
    if (!b.ok()) return b.status();
    o.direct = true;
    auto c = OpenPosixDevice(dir + "/cache" + suffix, o);
    if (!c.ok()) return c.status();
    EngineOptions opts;
    opts.ack_log = {region, region_size};
    return Engine::Open(opts, std::move(b.value()), std::move(c.value()));
  }

  // What a new engine would find in the region (without changing it).
  size_t LiveRecords() const {
    log::AckLog a(region, region_size);
    if (!a.Attach().ok() || !a.formatted()) return 0;
    std::vector<log::AckRecord> r;
    a.Scan(&r);
    return r.size();
  }

  std::string dir;
  size_t region_size;
  void* region;
};

// One step of a workload: a write of `len` bytes of pattern `seed` at
// `off`, or a discard.
struct Op {
  bool discard;
  uint64_t off, len, seed;
};

Op MakeOp(std::mt19937_64& g) {
  Op op;
  op.discard = g() % 20 == 0;
  switch (g() % 4) {
    case 0:
      op.len = 4096 * (1 + g() % 8);
      op.off = 4096 * (g() % (kImage / 4096 - 8));
      break;  // whole blocks
    case 1:
      op.len = 1 + g() % 4095;
      op.off = g() % (kImage - 4096);
      break;  // inside a block
    case 2:
      op.len = 1 + g() % 20000;
      op.off = g() % (kImage - 20000);
      break;  // unaligned, spans
    default:
      op.len = 4096;
      op.off = 4096 * (g() % 64);
      break;  // overwrites of a few hot blocks
  }
  if (op.discard) op.len = std::max<uint64_t>(op.len, 3 * 4096);
  op.seed = g();
  return op;
}

void Apply(const Op& op, std::vector<uint8_t>* model) {
  if (op.discard) {
    std::memset(model->data() + op.off, 0, op.len);
    return;
  }
  std::mt19937 g(static_cast<uint32_t>(op.seed));
  for (uint64_t i = 0; i < op.len; i++) (*model)[op.off + i] = static_cast<uint8_t>(g());
}

Status Do(Engine& e, const Op& op) {
  if (op.discard) return e.Discard(op.off, op.len);
  std::vector<uint8_t> m(op.len);
  std::mt19937 g(static_cast<uint32_t>(op.seed));
  for (auto& b : m) b = static_cast<uint8_t>(g());
  return e.Write(op.off, m.data(), m.size());
}

std::vector<uint8_t> ReadAll(Engine& e) {
  std::vector<uint8_t> img(kImage);
  REQUIRE(e.Read(0, img.data(), img.size()).ok());
  return img;
}

// The child: opens the engine, runs ops[seed] (reporting each acknowledged
// one on `fd` when fd >= 0) and kills itself after `n` of them (never
// returns). `last_write`: one more write after them (so that a record is
// surely left: a workload that ends in a discard leaves none).
[[noreturn]] void Child(const Setup& s, uint64_t seed, uint64_t n, int fd,
                        bool last_write = false) {
  auto r = s.Open();
  if (!r.ok()) ::_exit(3);
  Engine& e = *r.value();
  std::mt19937_64 g(seed);
  for (uint32_t i = 0; i < n; i++) {
    if (!Do(e, MakeOp(g)).ok()) ::_exit(4);
    if (fd >= 0 && ::write(fd, &i, sizeof(i)) != sizeof(i)) ::_exit(5);
  }
  if (fd >= 0) ::close(fd);
  if (last_write) {
    std::vector<uint8_t> b(4096, 0x77);
    if (!e.Write(0, b.data(), b.size()).ok()) ::_exit(7);
  }
  ::raise(SIGKILL);
  ::_exit(6);
}

void ExpectKilled(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE_MESSAGE(WIFSIGNALED(status), "child exit status " << WEXITSTATUS(status));
  CHECK(WTERMSIG(status) == SIGKILL);
}

// First differing byte of a and b, or -1.
int64_t FirstDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace

TEST_CASE(
    "ack log: a killed daemon's acknowledged writes and discards are all there after reopen") {
  // The default region; one of 16 slots (full all the time: writers wait
  // for the flusher, and the ring wraps); and the default region where a
  // second daemon rebuilds and is killed as soon as its Open returns.
  struct Case {
    size_t region;
    bool second_dies;
  };
  for (Case c : {Case{AckLogBytes(), false}, Case{log::AckLog::BytesFor(16), false},
                 Case{AckLogBytes(), true}}) {
    CAPTURE(c.region);
    CAPTURE(c.second_dies);
    Setup s(c.region);
    const uint64_t seed = 11, n = 1500;
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) Child(s, seed, n, -1);
    ExpectKilled(pid);
    std::vector<uint8_t> model(kImage, 0);
    std::mt19937_64 g(seed);
    for (uint64_t i = 0; i < n; i++) Apply(MakeOp(g), &model);
    CHECK(s.LiveRecords() > 0);  // what the child left
    if (c.second_dies) {
      // What it rebuilt is durable on the cache before it empties the region.
      const pid_t pid2 = ::fork();
      REQUIRE(pid2 >= 0);
      if (pid2 == 0) Child(s, seed, 0, -1);
      ExpectKilled(pid2);
      CHECK(s.LiveRecords() == 0);
    }

    auto r = s.Open();
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    Engine& e = *r.value();
    CHECK((e.Stats().ack_log_rebuilt > 0) == !c.second_dies);
    CHECK(e.Stats().ack_log_records == 0);
    CHECK(FirstDiff(ReadAll(e), model) == -1);
    // Now logging: a write leaves a record; Close leaves none.
    std::vector<uint8_t> b(4096, 0x5a);
    REQUIRE(e.Write(4096, b.data(), b.size()).ok());
    CHECK(e.Stats().ack_log_records == 1);
    REQUIRE(e.Close().ok());
    r.value().reset();
    CHECK(s.LiveRecords() == 0);
    std::memcpy(model.data() + 4096, b.data(), b.size());
    auto r2 = s.Open();
    REQUIRE(r2.ok());
    CHECK(r2.value()->Stats().ack_log_rebuilt == 0);
    CHECK(FirstDiff(ReadAll(*r2.value()), model) == -1);
  }
}

// The child reports each acknowledged op through a pipe and is killed at a
// random moment. Every reported op is there; the op in flight (if any) is,
// per 4 KiB block, wholly there or wholly not.
TEST_CASE("ack log: a daemon killed at random points keeps every write it acknowledged") {
  Setup s;
  std::vector<uint8_t> model(kImage, 0);
  std::mt19937 pick(2026);
  uint64_t total_rebuilt = 0;
  for (int round = 0; round < 6; round++) {
    CAPTURE(round);
    const uint64_t seed = 100 + static_cast<uint64_t>(round);
    int p[2];
    REQUIRE(::pipe(p) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(p[0]);
      Child(s, seed, 1u << 30, p[1]);
    }
    ::close(p[1]);
    // Wait for a random number of acknowledgements, then kill.
    const uint32_t kill_after = 200 + pick() % 2000;
    uint32_t last = 0, got = 0;
    bool any = false;
    while (got < kill_after && ::read(p[0], &last, sizeof(last)) == sizeof(last)) {
      any = true;
      got++;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(pick() % 3000));
    ::kill(pid, SIGKILL);
    ExpectKilled(pid);
    while (::read(p[0], &last, sizeof(last)) == sizeof(last)) any = true;
    ::close(p[0]);
    REQUIRE(any);
    // The model after every reported op, and the op that may have been in flight.
    std::mt19937_64 g(seed);
    for (uint32_t i = 0; i <= last; i++) Apply(MakeOp(g), &model);
    const Op next = MakeOp(g);
    std::vector<uint8_t> with_next = model;
    Apply(next, &with_next);

    auto r = s.Open();
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    Engine& e = *r.value();
    total_rebuilt += e.Stats().ack_log_rebuilt;
    const std::vector<uint8_t> img = ReadAll(e);
    for (uint64_t b = 0; b < kImage / 4096; b++) {
      const uint64_t at = b * 4096;
      const bool old_block = std::memcmp(img.data() + at, model.data() + at, 4096) == 0;
      const bool new_block = std::memcmp(img.data() + at, with_next.data() + at, 4096) == 0;
      if (!old_block && !new_block) {
        FAIL("block " << b << " (op " << last
                      << " acknowledged last) is neither before nor after op " << last + 1);
      }
    }
    model = img;  // the next round starts from what is there
    REQUIRE(e.Close().ok());
    r.value().reset();
    CHECK(s.LiveRecords() == 0);
  }
  CHECK(total_rebuilt > 0);
}

TEST_CASE("ack log: a region holding another cache's writes is refused, unchanged") {
  Setup s;
  Setup::MakeFile(s.dir + "/backing2", kImage);
  Setup::MakeFile(s.dir + "/cache2", kCache);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) Child(s, 5, 300, -1, true);
  ExpectKilled(pid);
  REQUIRE(s.LiveRecords() > 0);
  const std::vector<uint8_t> before(static_cast<uint8_t*>(s.region),
                                    static_cast<uint8_t*>(s.region) + s.region_size);
  {
    auto r = s.Open("2");  // a blank cache: formatting it would give it a new identity
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("belongs to another cache") != std::string::npos);
  }
  CHECK(std::memcmp(before.data(), s.region, s.region_size) == 0);
  // Its own cache takes it.
  auto r = s.Open();
  REQUIRE(r.ok());
  CHECK(r.value()->Stats().ack_log_rebuilt > 0);
  REQUIRE(r.value()->Close().ok());
  r.value().reset();
  // An empty region of another cache is taken over.
  auto r2 = s.Open("2");
  REQUIRE_MESSAGE(r2.ok(), r2.status().ToString());
  REQUIRE(r2.value()->Close().ok());
}
