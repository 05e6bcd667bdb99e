// Wall-clock time as wbfs records it (chunk cut times, dirty ages).
#ifndef WBFS_UTIL_CLOCK_H_
#define WBFS_UTIL_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace wbfs {

// Milliseconds since the Unix epoch.
inline uint64_t WallClockMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace wbfs

#endif  // WBFS_UTIL_CLOCK_H_
