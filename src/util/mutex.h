// Mutex, MutexLock and CondVar: std::mutex, std::unique_lock and
// std::condition_variable with clang's thread-safety annotations, so that
// the lock rules written on fields and methods (GUARDED_BY, REQUIRES,
// EXCLUDES) are checked by the compiler (-Wthread-safety; scripts/test
// builds with clang and -Werror). Under gcc the annotations are empty.
//
// The names of the std types' methods are kept (lock, unlock, wait,
// notify_all...), so code reads as it would with the std types.
//
// What the analysis does not see: a wait's predicate runs with the lock
// held, but a lambda is analysed on its own: write it
// `[&]() REQUIRES(mu_) { ... }` instead of turning the analysis off.
#ifndef WBFS_UTIL_MUTEX_H_
#define WBFS_UTIL_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define WBFS_TSA(x) __attribute__((x))
#else
#define WBFS_TSA(x)
#endif

#define CAPABILITY(x) WBFS_TSA(capability(x))
#define SCOPED_CAPABILITY WBFS_TSA(scoped_lockable)
#define GUARDED_BY(x) WBFS_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) WBFS_TSA(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) WBFS_TSA(acquired_before(__VA_ARGS__))
#define REQUIRES(...) WBFS_TSA(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) WBFS_TSA(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) WBFS_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) WBFS_TSA(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS WBFS_TSA(no_thread_safety_analysis)

namespace wbfs {

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class MutexLock;
  friend class CondVar;
  std::mutex mu_;
};

// std::unique_lock over a Mutex: locked from construction, may be unlocked
// and locked again in between (the analysis follows both).
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : lk_(mu.mu_) {}
  ~MutexLock() RELEASE() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() ACQUIRE() { lk_.lock(); }
  void unlock() RELEASE() { lk_.unlock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lk_;
};

// The lock is held again when a wait returns. Predicates run with it held.
// A function that REQUIRES a mutex (and so has no MutexLock of its own)
// waits on the Mutex itself.
class CondVar {
 public:
  void wait(Mutex& mu) REQUIRES(mu) {
    Adopted lk(mu);
    cv_.wait(lk.lk);
  }
  template <typename Pred>
  void wait(Mutex& mu, Pred pred) REQUIRES(mu) {
    Adopted lk(mu);
    cv_.wait(lk.lk, std::move(pred));
  }
  template <typename Rep, typename Period, typename Pred>
  bool wait_for(Mutex& mu, const std::chrono::duration<Rep, Period>& d, Pred pred) REQUIRES(mu) {
    Adopted lk(mu);
    return cv_.wait_for(lk.lk, d, std::move(pred));
  }

  void notify_all() { cv_.notify_all(); }
  void notify_one() { cv_.notify_one(); }
  void wait(MutexLock& lk) { cv_.wait(lk.lk_); }
  template <typename Pred>
  void wait(MutexLock& lk, Pred pred) {
    cv_.wait(lk.lk_, std::move(pred));
  }
  template <typename Rep, typename Period>
  std::cv_status wait_for(MutexLock& lk, const std::chrono::duration<Rep, Period>& d) {
    return cv_.wait_for(lk.lk_, d);
  }
  template <typename Rep, typename Period, typename Pred>
  bool wait_for(MutexLock& lk, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return cv_.wait_for(lk.lk_, d, std::move(pred));
  }
  template <typename Clock, typename Duration, typename Pred>
  bool wait_until(MutexLock& lk, const std::chrono::time_point<Clock, Duration>& t, Pred pred) {
    return cv_.wait_until(lk.lk_, t, std::move(pred));
  }

 private:
  // The caller's hold on `mu`, lent to std::condition_variable for a wait
  // and handed back (still held) at the end.
  struct Adopted {
    explicit Adopted(Mutex& mu) : lk(mu.mu_, std::adopt_lock) {}
    ~Adopted() { lk.release(); }
    std::unique_lock<std::mutex> lk;
  };
  std::condition_variable cv_;
};

}  // namespace wbfs

#endif  // WBFS_UTIL_MUTEX_H_
