// CrashModel: what an image may hold after a crash.
//
// Per 512-byte sector: its value at the last completed flush, or any value
// written to it since (a write that failed counts: it may have landed).
// Anything else (a sector from an earlier lap of the log, a mix of two
// writes inside a sector, a lost flushed write) is a violation.
#ifndef WBFS_TESTS_SUPPORT_CRASH_MODEL_H_
#define WBFS_TESTS_SUPPORT_CRASH_MODEL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace wbfs::test {

class CrashModel {
 public:
  explicit CrashModel(const std::vector<uint8_t>& image)
      : durable_(image), since_(image.size() / 512) {}

  // `image` is the expected content after a write of [off, off+len).
  void Wrote(const std::vector<uint8_t>& image, uint64_t off, size_t len) {
    for (uint64_t s = off / 512; s * 512 < off + len; s++) {
      since_[s].push_back(Hash(image.data() + s * 512));
    }
  }
  void Flushed(const std::vector<uint8_t>& image) {
    durable_ = image;
    for (auto& v : since_) v.clear();
  }
  // The first sector holding an impossible value, or -1.
  int64_t Check(const std::vector<uint8_t>& got) const {
    for (uint64_t s = 0; s < since_.size(); s++) {
      const uint8_t* g = got.data() + s * 512;
      if (std::memcmp(g, durable_.data() + s * 512, 512) == 0) continue;
      const auto& c = since_[s];
      if (std::find(c.begin(), c.end(), Hash(g)) == c.end()) return static_cast<int64_t>(s);
    }
    return -1;
  }

 private:
  static uint64_t Hash(const uint8_t* p) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 512; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
  std::vector<uint8_t> durable_;
  std::vector<std::vector<uint64_t>> since_;
};

}  // namespace wbfs::test

#endif  // WBFS_TESTS_SUPPORT_CRASH_MODEL_H_
