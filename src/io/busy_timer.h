// BusyTimer: adds the time spent inside one device call to a counter, for
// Device::BusyMillis where the kernel's io_ticks are not available.
#ifndef WBFS_IO_BUSY_TIMER_H_
#define WBFS_IO_BUSY_TIMER_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace wbfs {

class BusyTimer {
 public:
  explicit BusyTimer(std::atomic<uint64_t>* ns) : ns_(ns), t0_(std::chrono::steady_clock::now()) {}
  ~BusyTimer() {
    auto d = std::chrono::steady_clock::now() - t0_;
    ns_->fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()),
                   std::memory_order_relaxed);
  }
  BusyTimer(const BusyTimer&) = delete;
  BusyTimer& operator=(const BusyTimer&) = delete;

 private:
  std::atomic<uint64_t>* ns_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace wbfs

#endif  // WBFS_IO_BUSY_TIMER_H_
