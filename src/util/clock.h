// Wall-clock time as wbfs records it (chunk cut times, dirty ages).
#ifndef WBFS_UTIL_CLOCK_H_
#define WBFS_UTIL_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>

namespace wbfs {

// Milliseconds since the Unix epoch.
inline uint64_t WallClockMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// Milliseconds on a monotonic clock (intervals, retry times).
inline uint64_t MonotonicMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// "2026-12-02 12:31:14", local time, of a WallClockMs value.
inline std::string FormatWallClockMs(uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  char buf[64];
  if (localtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0) {
    return std::to_string(ms / 1000) + " s since the epoch";
  }
  return buf;
}

}  // namespace wbfs

#endif  // WBFS_UTIL_CLOCK_H_
