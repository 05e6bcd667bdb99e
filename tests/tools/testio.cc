// wbfs-testio: I/O patterns for the end-to-end tests.
//
//   random FILE SEED OPS MAXLEN ALIGN DIRECT MODEL
//       Random writes (offset and length multiples of ALIGN, 1 = any byte)
//       with reads checked along the way against an in-memory model that
//       starts as the file's content; verifies the whole file at the end
//       and saves the model to MODEL (compare with cmp later).
//   seqsync FILE SEED STATE
//       Writes 4 KiB block i = pattern(SEED, i) for i = 0, 1, ... with an
//       fsync after each; after each fsync returns, writes i+1 to STATE.
//       Runs until a write fails (the daemon was killed) or the file ends.
//   seqcheck FILE SEED STATE
//       Checks that blocks [0, count in STATE) hold their pattern.
// Exit 0 on success, 1 on a mismatch or error (with a message).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

int Die(const std::string& msg) {
  std::fprintf(stderr, "wbfs-testio: %s\n", msg.c_str());
  return 1;
}

void Pattern(uint64_t seed, uint64_t block, uint8_t* out) {
  std::mt19937_64 g(seed * 0x9E3779B97F4A7C15ull + block);
  for (int i = 0; i < 4096; i += 8) {
    uint64_t v = g();
    std::memcpy(out + i, &v, 8);
  }
}

struct Free {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, Free>;

Buffer Aligned(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, n + 4096) != 0) std::abort();
  return Buffer(static_cast<uint8_t*>(p));
}

bool PRead(int fd, uint8_t* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t r = pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

bool PWrite(int fd, const uint8_t* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t r = pwrite(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

int Random(const std::string& file, uint64_t seed, long ops, size_t maxlen, size_t align,
           bool direct, const std::string& model_path) {
  int fd = open(file.c_str(), O_RDWR | (direct ? O_DIRECT : 0));
  if (fd < 0) return Die(file + ": " + std::strerror(errno));
  struct stat st;
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  std::vector<uint8_t> model(size);
  Buffer owner = Aligned(size > maxlen ? size : maxlen);
  uint8_t* buf = owner.get();
  if (!PRead(fd, buf, size, 0)) return Die("initial read failed: " + std::string(std::strerror(errno)));
  std::memcpy(model.data(), buf, size);
  std::mt19937_64 g(seed);
  for (long i = 0; i < ops; i++) {
    size_t len = (1 + g() % maxlen + align - 1) / align * align;
    if (len > maxlen) len = maxlen / align * align;
    uint64_t off = (g() % (size - len + 1)) / align * align;
    if (g() % 4 == 0) {  // read back a random range
      if (!PRead(fd, buf, len, off)) return Die("read failed at " + std::to_string(off));
      if (std::memcmp(buf, model.data() + off, len) != 0) {
        return Die("mismatch reading " + std::to_string(len) + " bytes at " + std::to_string(off));
      }
      continue;
    }
    for (size_t k = 0; k < len; k++) buf[k] = static_cast<uint8_t>(g());
    if (!PWrite(fd, buf, len, off)) {
      return Die("write failed at " + std::to_string(off) + ": " + std::strerror(errno));
    }
    std::memcpy(model.data() + off, buf, len);
  }
  if (!PRead(fd, buf, size, 0)) return Die("final read failed");
  for (size_t k = 0; k < size; k++) {
    if (buf[k] != model[k]) return Die("final mismatch at byte " + std::to_string(k));
  }
  if (fsync(fd) != 0) return Die(std::string("fsync: ") + std::strerror(errno));
  close(fd);
  std::ofstream out(model_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(model.data()), static_cast<std::streamsize>(size));
  return out ? 0 : Die("cannot write " + model_path);
}

int SeqSync(const std::string& file, uint64_t seed, const std::string& state) {
  int fd = open(file.c_str(), O_RDWR);
  if (fd < 0) return Die(file + ": " + std::strerror(errno));
  struct stat st;
  fstat(fd, &st);
  uint8_t block[4096];
  for (uint64_t i = 0; (i + 1) * 4096 <= static_cast<uint64_t>(st.st_size); i++) {
    Pattern(seed, i, block);
    if (!PWrite(fd, block, 4096, i * 4096) || fsync(fd) != 0) return 0;  // daemon gone
    std::ofstream(state, std::ios::trunc) << i + 1 << "\n";
  }
  return 0;
}

int SeqCheck(const std::string& file, uint64_t seed, const std::string& state) {
  uint64_t count = 0;
  std::ifstream(state) >> count;
  int fd = open(file.c_str(), O_RDONLY);
  if (fd < 0) return Die(file + ": " + std::strerror(errno));
  uint8_t want[4096], got[4096];
  for (uint64_t i = 0; i < count; i++) {
    Pattern(seed, i, want);
    if (!PRead(fd, got, 4096, i * 4096)) return Die("read failed at block " + std::to_string(i));
    if (std::memcmp(want, got, 4096) != 0) {
      return Die("block " + std::to_string(i) + " of " + std::to_string(count) +
                 " fsynced blocks is wrong");
    }
  }
  std::printf("%llu fsynced blocks intact\n", static_cast<unsigned long long>(count));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 8 && a[0] == "random") {
    return Random(a[1], std::stoull(a[2]), std::stol(a[3]), std::stoul(a[4]), std::stoul(a[5]),
                  a[6] == "1", a[7]);
  }
  if (a.size() == 4 && a[0] == "seqsync") return SeqSync(a[1], std::stoull(a[2]), a[3]);
  if (a.size() == 4 && a[0] == "seqcheck") return SeqCheck(a[1], std::stoull(a[2]), a[3]);
  return Die("usage: see the comment at the top of tests/tools/testio.cc");
}
