// The "dirty elsewhere" record of a shared backing (an RBD image), as the
// mount and recover commands use it: the refusal of a mount with another
// cache while the record says a cache holds data not yet written back, the
// record's upkeep by a running mount, and its removal by recover. The
// record itself and where it lives are the backing device's business
// (OwnerRecordStore, src/io/backing.h): nothing here knows about Ceph, and
// backings without a store (files, block devices) are left alone.
#ifndef WBFS_CLI_OWNER_RECORD_H_
#define WBFS_CLI_OWNER_RECORD_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "io/backing.h"
#include "wbfs/device.h"
#include "wbfs/engine.h"
#include "wbfs/status.h"

namespace wbfs::cli {

// What a cache device is, as far as the record is concerned.
struct CacheIdentity {
  bool blank = false;  // all zeros: a mount formats it (a new nonce)
  bool known = false;  // the superblock decodes: `nonce` is its identity
  uint64_t nonce = 0;
};
// Reads the cache's superblock (4 KiB at 0); an unreadable or undecodable
// one gives known = false (the engine refuses such a cache on its own).
CacheIdentity ReadCacheIdentity(Device& cache);

// Does `r` keep a mount with cache `c` out? Only the cache that holds the
// data (the same nonce) may mount while the record exists.
bool OwnerRecordBlocks(const OwnerRecord& r, const CacheIdentity& c);

// "2 h 5 min", "40 s", "3 d 4 h": the age of a wall-clock time.
std::string AgeText(uint64_t then_ms, uint64_t now_ms);

// The refusal: one sentence naming the host, how stale the image in the
// cluster is, and the two ways out.
std::string DirtyElsewhereText(const std::string& uri, const OwnerRecord& r, uint64_t now_ms);

// At mount, before the cache, the journal or the backing is written:
// FailedPrecondition-like Busy with DirtyElsewhereText when the backing's
// record names another cache (or cannot be read); OK otherwise, and for
// backings that keep no record.
Status CheckOwnerRecord(Device& backing, Device& cache, const std::string& uri);

// For recover, after the journal step: removes the backing's record. `said`
// receives one sentence on what was given up ("" when there was none).
Status ClearOwnerRecordForRecover(Device& backing, const std::string& uri, std::string* said);

// Keeps a running mount's record. All calls from the mount's main thread;
// the refresher runs on a thread of its own.
class OwnerRecorder {
 public:
  // `store` may be null (a backing without a record): every call is then a
  // no-op. `log` reports failures of the refresher (syslog priorities).
  OwnerRecorder(OwnerRecordStore* store, std::function<void(int, const std::string&)> log);
  ~OwnerRecorder();
  OwnerRecorder(const OwnerRecorder&) = delete;
  OwnerRecorder& operator=(const OwnerRecorder&) = delete;

  // Writes the record for the cache with `nonce` (keeping the time of an
  // earlier record of the same cache) with the engine's backing flush
  // point. Called after Engine::Open, before the image accepts a write.
  Status Mark(const Engine& e, uint64_t nonce);
  // Refreshes the flush point while the mount runs: polls the engine once
  // a second and writes when the backing's flush point moved, at most once
  // per `min_interval_ms`.
  void Start(const Engine* e, uint64_t min_interval_ms = 5000);
  void Stop();
  // After Engine::Close (`closed_ok`: it succeeded): removes the record
  // when nothing is left to write back, else records the final flush
  // point. `cleared` says which.
  Status Finish(const EngineStats& s, bool closed_ok, bool* cleared);

 private:
  void Run(const Engine* e, uint64_t min_interval_ms);
  Status Write(uint64_t seq, uint64_t ms);

  OwnerRecordStore* const store_;
  const std::function<void(int, const std::string&)> log_;
  OwnerRecord rec_;  // as last written
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

// Is nothing of the engine's left to write back (no dirty block, no
// pending discard, no change only on the cache)?
bool EngineClean(const EngineStats& s);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_OWNER_RECORD_H_
