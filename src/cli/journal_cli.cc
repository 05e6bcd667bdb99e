// The journal as the commands see it: where it lives, opening (or
// creating) it for a mount or an offline writeback, and `wbfs recover`.
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "journal/journal.h"
#include "wbfs/device.h"

namespace wbfs::cli {
namespace {

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

std::string JournalPath(const std::string& setting, const std::string& backing_path) {
  if (setting == "none") return "";
  return setting.empty() ? journal::DefaultPath(backing_path) : setting;
}

Result<std::unique_ptr<Device>> OpenJournalFor(const std::string& setting,
                                               const std::string& backing_path,
                                               const std::string& cache_path, Device& backing,
                                               std::string* warning, bool* created) {
  *created = false;
  if (setting == "none") {
    // No journal, by choice. One left by an earlier mount still gets its
    // interrupted unit applied, and stops vouching for the backing.
    const std::string old = journal::DefaultPath(backing_path);
    struct stat st;
    if (::stat(old.c_str(), &st) == 0) {
      auto dev = OpenPosixDevice(old, DeviceOptions{});
      if (!dev.ok()) return dev.status();
      auto j = journal::Journal::Open(std::move(dev.value()), backing.Size());
      if (!j.ok()) return j.status();
      WBFS_RETURN_IF_ERROR(j.value()->Recover(backing).status());
      WBFS_RETURN_IF_ERROR(j.value()->Forget());
    }
    return std::unique_ptr<Device>();
  }
  struct stat bs;
  if (setting.empty() && ::stat(backing_path.c_str(), &bs) == 0 && S_ISBLK(bs.st_mode)) {
    return Status::InvalidArgument(
        "the backing " + backing_path + " is a block device, so the journal cannot go next to it: "
        "give journal=PATH (a file on a file system of the backing's disk) or journal=none");
  }
  const std::string path = JournalPath(setting, backing_path);
  if (SameFile(path, cache_path) || SameFile(path, backing_path)) {
    return Status::InvalidArgument("journal " + path + " is the cache or the backing itself");
  }
  DeviceOptions o;
  o.create = true;
  struct stat before;
  const bool existed = ::stat(path.c_str(), &before) == 0;
  auto dev = OpenPosixDevice(path, o);
  *created = dev.ok() && !existed;
  if (!dev.ok()) {
    if (dev.status().code() == Status::Code::kBusy) {
      return Status::Busy("journal " + path + " is in use by another wbfs mount or tool");
    }
    return dev.status().WithContext("journal");
  }
  struct stat sj, sc, sbk;
  if (warning != nullptr && ::stat(path.c_str(), &sj) == 0 && ::stat(cache_path.c_str(), &sc) == 0 &&
      ::stat(backing_path.c_str(), &sbk) == 0 && sj.st_dev == sc.st_dev && sbk.st_dev != sc.st_dev) {
    *warning = "journal " + path + " is on the cache's file system, not the backing's: losing "
               "the cache's disk loses the journal too";
  }
  return dev;
}

std::string FlushPointText(uint64_t seq, uint64_t ms) {
  if (seq == 0) return "unknown";
  std::string s = "chunk " + std::to_string(seq);
  if (ms != 0) {
    std::time_t t = static_cast<std::time_t>(ms / 1000);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    s += std::string(", cut at ") + buf;
  }
  return s;
}

int CmdRecover(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs recover --backing PATH [--journal PATH] [--json]\n"
      "\n"
      "Without the cache: applies the writeback unit a crash interrupted, if the\n"
      "journal holds one, so that the backing alone is the image as it was at the\n"
      "flush point the journal names. Use it when the cache is lost; a mount with\n"
      "the cache does the same by itself. The journal defaults to BACKING.wbfs-journal.\n";
  std::string backing_path, journal_path;
  bool json = false;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return kExitOk;
    } else if (a == "--json") {
      json = true;
    } else if ((a == "--backing" || a == "--journal") && i + 1 < args.size()) {
      (a == "--backing" ? backing_path : journal_path) = args[++i];
    } else if (a.rfind("--backing=", 0) == 0) {
      backing_path = a.substr(10);
    } else if (a.rfind("--journal=", 0) == 0) {
      journal_path = a.substr(10);
    } else {
      std::cerr << usage;
      return kExitUsage;
    }
  }
  if (backing_path.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  if (journal_path.empty()) journal_path = journal::DefaultPath(backing_path);
  auto backing = OpenPosixDevice(backing_path, DeviceOptions{});
  if (!backing.ok()) {
    if (backing.status().code() == Status::Code::kBusy) {
      return Fail(kExitFailure, "backing " + backing_path + " is in use by a mount; unmount it first");
    }
    return Fail(kExitUsage, backing.status().message());
  }
  struct stat st;
  if (::stat(journal_path.c_str(), &st) != 0) {
    return Fail(kExitUsage, "no journal at " + journal_path +
                                " (the mount ran without one: the backing cannot be vouched for)");
  }
  auto dev = OpenPosixDevice(journal_path, DeviceOptions{});
  if (!dev.ok()) return Fail(kExitFailure, "journal: " + dev.status().message());
  auto j = journal::Journal::Open(std::move(dev.value()), backing.value()->Size());
  if (!j.ok()) return Fail(kExitFailure, j.status().message());
  auto rep = j.value()->Recover(*backing.value());
  if (!rep.ok()) return Fail(kExitFailure, "recover: " + rep.status().message());
  const journal::RecoveryReport& r = rep.value();
  const format::FlushPoint& p = r.state.point;
  if (json) {
    nlohmann::json o;
    o["backing"] = backing_path;
    o["journal"] = journal_path;
    o["replayed"] = r.replayed;
    o["replayed_entry"] = r.entry_seq;
    o["replayed_bytes"] = r.bytes;
    o["torn_entry_dropped"] = r.torn_entry;
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
