// The offline tools that write the backing: writeback (with the cache)
// and recover (without it). Both take the backing's lock as a mount does
// and write nothing until every check has passed.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "cli/commands.h"
#include "cli/offline.h"
#include "cli/owner_record.h"
#include "ctl/ctl.h"
#include "journal/journal.h"
#include "log/log_reader.h"
#include "wbfs/device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

namespace wbfs::cli {

namespace po = boost::program_options;

// ------------------------------------------------------------------ writeback

namespace {
volatile sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }
}  // namespace

int CmdWriteback(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs writeback --backing PATH|rbd:POOL/IMAGE --cache PATH [--journal PATH|none]\n"
      "                      [--ceph-conf FILE] [--ceph-client-id ID] [--accept-loss]\n"
      "\n"
      "Offline: replays the log and writes every dirty block to the backing (sorted\n"
      "and merged, through the journal as a mount does), syncs it, then marks the\n"
      "cache clean. Afterwards the backing alone is the complete image: the way to\n"
      "detach a cache, or to recover an image when the machine that ran the mount\n"
      "is gone. Safe to interrupt (Ctrl-C) and run again. Without the cache, see\n"
      "'wbfs recover'.\n"
      "\n"
      "A cache that lost synced data (see 'wbfs check') is refused, unchanged;\n"
      "--accept-loss writes back what survives instead (skipping blocks that fail\n"
      "their checksum), rolling the image back to the last intact flush point.\n";
  CommandLine cl("writeback", usage, 0, 0);
  cl.Options()("backing", po::value<std::string>(), "the backing file, block device or rbd: image")(
      "cache", po::value<std::string>(), "the cache file or block device")(
      "journal", po::value<std::string>(), "the journal (default: the mount's)")(
      "accept-loss", "write back what survives of a cache that lost synced data");
  AddCephOptions(&cl);
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const std::string bpath = cl.Value("backing"), cpath = cl.Value("cache");
  if (bpath.empty() || cpath.empty()) return cl.UsageError();
  BackingOptions bo = CephOptions(cl);
  const std::string bspec = IsRbdUri(bpath) ? bpath : AbsolutePath(bpath);
  DeviceOptions co;
  co.direct = true;
  auto cache = OpenPosixDevice(cpath, co);
  if (!cache.ok()) {
    if (cache.status().code() == Status::Code::kBusy) {
      return Fail(kExitFailure, "cache " + cpath + " is in use by a mount; unmount it first");
    }
    return OpenFail(cache.status());
  }
  // Another cache's data still owed to a shared backing (RBD): writing
  // this cache's over it would go back in time (cli/owner_record.h).
  // Refused as the image's lock is taken, before anything is written.
  Status refused;
  bo.admit = [&](Device& b) { return refused = CheckOwnerRecord(b, *cache.value(), bpath); };
  auto backing = OpenBackingOffline(bpath, bo);
  if (!refused.ok()) return Fail(kExitFailure, "writeback: " + refused.message());
  if (!backing.ok()) return OpenFail(backing.status());
  OwnerRecordStore* const owner_store = OwnerRecordOf(*backing.value());  // the engine owns the device from below
  // Read before the engine takes the device: a blank cache has nothing to
  // write back (the engine refuses it, after applying an interrupted
  // journal unit).
  log::CacheMeta cmeta;
  const bool blank = log::ReadCacheMeta(*cache.value(), &cmeta).ok() && cmeta.blank;
  std::string warning;
  bool created = false;
  auto journal = OpenJournalFor(cl.Value("journal"), bspec, AbsolutePath(cpath), bo, *backing.value(),
                                &warning, &created);
  if (!journal.ok()) return Fail(kExitFailure, "writeback: " + journal.status().message());
  if (!warning.empty()) std::cerr << "wbfs: " << warning << "\n";
  EngineOptions eo;
  eo.background = false;
  eo.format_blank_cache = false;
  eo.accept_loss = cl.Has("accept-loss");
  eo.log = [](const std::string& m) { std::cerr << "wbfs: " << m << "\n"; };
  auto engine = Engine::Open(eo, std::move(backing.value()), std::move(cache.value()),
                             std::move(journal.value()));
  if (!engine.ok()) {
    if (created) RemoveCreatedJournal(cl.Value("journal"), bspec, bo);
    // NotFound: the engine's refusal of a blank cache, after it applied an
    // interrupted journal unit (any other refusal, e.g. a backing of the
    // wrong size or another backing's journal, is a failure).
    if (blank && engine.status().code() == Status::Code::kNotFound) {
      std::printf("%s is blank: nothing to write back\n", cpath.c_str());
      return kExitOk;
    }
    return Fail(kExitFailure, "writeback: " + engine.status().message());
  }
  Engine* e = engine.value().get();
  const EngineStats before = e->Stats();
  const uint64_t total = before.dirty_bytes;
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::atomic<bool> done{false};
  Status wst;
  std::thread worker([&] {
    wst = e->WritebackAll();
    done = true;
  });
  const bool tty = ::isatty(STDOUT_FILENO);
  auto start = std::chrono::steady_clock::now();
  auto last = start;
  bool stopping = false;
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (g_stop && !stopping) {
      stopping = true;
      (void)e->Close();  // stops the batch in flight at once; the log stays valid
    }
    const uint64_t left = e->Stats().dirty_bytes;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = secs > 0 ? static_cast<double>(total - std::min(total, left)) / secs : 0;
    if (tty) {
      int filled = total ? static_cast<int>(30 * (total - std::min(total, left)) / total) : 30;
      std::printf("\r\033[Kwriteback [%s%s] %s left, %s/s", std::string(filled, '#').c_str(),
                  std::string(30 - filled, '.').c_str(), HumanBytes(left).c_str(),
                  HumanBytes(static_cast<uint64_t>(rate)).c_str());
      std::fflush(stdout);
    } else if (std::chrono::steady_clock::now() - last >= std::chrono::seconds(5)) {
      std::printf("writeback: %s left\n", HumanBytes(left).c_str());
      std::fflush(stdout);
      last = std::chrono::steady_clock::now();
    }
  }
  worker.join();
  if (tty) std::printf("\r\033[K");
  if (stopping) {
    std::printf("writeback: interrupted with %s left; run it again to finish\n",
                HumanBytes(e->Stats().dirty_bytes).c_str());
    return 130;
  }
  if (!wst.ok()) return Fail(kExitFailure, "writeback: " + wst.message());
  Status cs = e->CloseClean();
  if (!cs.ok()) return Fail(kExitFailure, "writeback: " + cs.message());
  // Nothing is owed to the backing any more: no cache blocks another now.
  if (owner_store != nullptr) {
    if (Status os = owner_store->ClearOwnerRecord(); !os.ok()) {
      return Fail(kExitFailure, "writeback: the cache is clean, but the image's dirty record could not be "
                                "removed: " + os.message());
    }
  }
  std::printf("writeback: %llu dirty blocks (%s) written; the cache is clean and %s alone is "
              "the image\n",
              static_cast<unsigned long long>(before.nr_dirty_cache_blocks), HumanBytes(total).c_str(),
              bpath.c_str());
  return kExitOk;
}

// ------------------------------------------------------------------ recover

int CmdRecover(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs recover --backing PATH|rbd:POOL/IMAGE [--journal PATH|rbd:POOL/IMAGE]\n"
      "                    [--ceph-conf FILE] [--ceph-client-id ID] [--break-lock] [--json]\n"
      "\n"
      "Without the cache: applies the writeback unit a crash interrupted, if the\n"
      "journal holds one, so that the backing alone is the image as it was at the\n"
      "flush point the journal names. Use it when the cache is lost; a mount with\n"
      "the cache does the same by itself. The journal defaults to BACKING.wbfs-journal\n"
      "(for an rbd: backing, the image IMAGE.wbfs-journal next to it: any host with\n"
      "access to the cluster can recover).\n"
      "\n"
      "--break-lock (rbd: only): when another client holds the image's exclusive\n"
      "lock (a dead host's mount, until librbd breaks it by itself about 30 s after\n"
      "its death), break it: that client is blocklisted and can never write to the\n"
      "image again, and what its cache held that was not written back is lost.\n";
  CommandLine cl("recover", usage, 0, 0);
  cl.Options()("backing", po::value<std::string>(), "the backing file, block device or rbd: image")(
      "journal", po::value<std::string>(), "the journal (default: next to the backing)")(
      "break-lock", "rbd: break a dead client's exclusive lock")("json", "print one JSON object");
  AddCephOptions(&cl);
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const bool json = cl.Has("json");
  const std::string backing_path = cl.Value("backing");
  std::string journal_path = cl.Value("journal");
  if (backing_path.empty()) return cl.UsageError();
  BackingOptions bo = CephOptions(cl);
  const bool rbd = IsRbdUri(backing_path);
  if (!rbd && IsRbdUri(journal_path)) return Fail(kExitUsage, "recover: an rbd: journal needs an rbd: backing");
  if (!rbd && cl.Has("break-lock")) return Fail(kExitUsage, "recover: --break-lock is for an rbd: backing");
  std::string broken;
  bo.break_lock = cl.Has("break-lock");
  bo.broken_holder = &broken;
  auto backing = OpenBackingOffline(backing_path, bo);
  if (!backing.ok()) return OpenFail(backing.status());
  if (!broken.empty()) {
    std::fprintf(json ? stderr : stdout,
                 "recover: broke the exclusive lock of %s: that client can no longer write to %s, and "
                 "what its cache held that was not written back is not in the image\n",
                 broken.c_str(), backing_path.c_str());
  }
  Result<std::unique_ptr<Device>> dev = std::unique_ptr<Device>();
  if (rbd) {
    auto spec = RbdJournalSpec(journal_path, backing_path);
    if (!spec.ok()) return Fail(kExitUsage, spec.status().message());
    journal_path = RbdUri(spec.value());
    bool created = false;
    dev = OpenRbdJournal(spec.value(), bo, backing.value()->Identity(), false, &created);
    if (!dev.ok() && dev.status().code() == Status::Code::kNotFound) {
      return Fail(kExitUsage, "no journal image " + journal_path +
                                  " (the mount ran without one: the backing cannot be vouched for)");
    }
  } else {
    if (journal_path.empty()) journal_path = journal::DefaultPath(backing_path);
    struct stat st;
    if (::stat(journal_path.c_str(), &st) != 0) {
      return Fail(kExitUsage, "no journal at " + journal_path +
                                  " (the mount ran without one: the backing cannot be vouched for)");
    }
    dev = OpenPosixDevice(journal_path, DeviceOptions{});
  }
  if (!dev.ok()) return Fail(kExitFailure, "journal: " + dev.status().message());
  auto j = journal::Journal::Open(std::move(dev.value()), backing.value()->Size());
  if (!j.ok()) return Fail(kExitFailure, j.status().message());
  auto rep = j.value()->Recover(*backing.value());
  if (!rep.ok()) return Fail(kExitFailure, "recover: " + rep.status().message());
  const journal::RecoveryReport& r = rep.value();
  const format::FlushPoint& p = r.state.point;
  // The loss is accepted: another cache may mount the image (cli/owner_record.h).
  std::string given_up;
  Status cs = ClearOwnerRecordForRecover(*backing.value(), backing_path, &given_up);
  if (!cs.ok()) return Fail(kExitFailure, "recover: " + cs.message());
  if (!given_up.empty()) std::fprintf(json ? stderr : stdout, "recover: %s\n", given_up.c_str());
  if (json) {
    nlohmann::json o;
    ctl::PutPath(&o, "backing", backing_path);
    ctl::PutPath(&o, "journal", journal_path);
    o["replayed"] = r.replayed;
    o["replayed_entry"] = r.entry_seq;
    o["replayed_bytes"] = r.bytes;
    o["torn_entry_dropped"] = r.torn_entry;
    o["owner_record_cleared"] = !given_up.empty();
    o["applied_entries"] = r.state.applied_entry;
    o["flush_point"] = {{"known", p.chunk_seq != 0},
                        {"cache_nonce", p.cache_nonce},
                        {"chunk_seq", p.chunk_seq},
                        {"segment_id", p.segment_id},
                        {"time_ms", p.time_ms}};
    std::printf("%s\n", o.dump(2).c_str());
    return kExitOk;
  }
  if (r.replayed) {
    std::printf("recover: applied the interrupted writeback unit %llu again (%s)\n",
                static_cast<unsigned long long>(r.entry_seq), HumanBytes(r.bytes).c_str());
  } else if (r.torn_entry) {
    std::printf("recover: dropped a unit that never became durable (the backing was not touched)\n");
  } else {
    std::printf("recover: no interrupted writeback unit\n");
  }
  if (p.chunk_seq != 0) {
    std::printf("%s is the image as of flush point %s (cache %016llx)\n", backing_path.c_str(),
                FlushPointText(p.chunk_seq, p.time_ms).c_str(),
                static_cast<unsigned long long>(p.cache_nonce));
  } else if (r.state.applied_entry == 0) {
    std::printf("%s: nothing was ever written back through this journal; the backing is as it "
                "was before the cache took writes\n", backing_path.c_str());
  } else {
    std::printf("%s: the backing was last written without the journal (write_around_mode or "
                "journal none); no flush point can be vouched for\n", backing_path.c_str());
  }
  return kExitOk;
}

}  // namespace wbfs::cli
