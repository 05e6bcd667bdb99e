// The journal as the commands see it: where it lives, opening (or
// creating) it for a mount or an offline writeback, and how a flush
// point reads (`wbfs recover` is in cmd_offline.cc).
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "cli/commands.h"
#include "io/backing.h"
#include "journal/journal.h"
#include "util/clock.h"
#include "wbfs/device.h"

namespace wbfs::cli {

std::string JournalPath(const std::string& setting, const std::string& backing_path) {
  if (setting == "none") return "";
  return setting.empty() ? journal::DefaultPath(backing_path) : setting;
}

Result<RbdSpec> RbdJournalSpec(const std::string& setting, const std::string& backing_uri) {
  if (!setting.empty() && setting != "none") return ParseRbdUri(setting);
  auto b = ParseRbdUri(backing_uri);
  if (!b.ok()) return b.status();
  RbdSpec j = b.value();
  j.image += ".wbfs-journal";
  return j;
}

namespace {

// journal=none with a journal left by an earlier mount: its interrupted
// unit is applied, then it stops vouching for the backing.
Status RetireJournal(std::unique_ptr<Device> dev, Device& backing) {
  auto j = journal::Journal::Open(std::move(dev), backing.Size());
  if (!j.ok()) return j.status();
  WBFS_RETURN_IF_ERROR(j.value()->Recover(backing).status());
  return j.value()->Forget();
}

// The journal of an rbd: backing: an image in the cluster (see
// OpenRbdJournal), never a file on this host.
Result<std::unique_ptr<Device>> OpenRbdJournalFor(const std::string& setting, const std::string& backing_uri,
                                                  const BackingOptions& bo, Device& backing, bool* created) {
  auto spec = RbdJournalSpec(setting, backing_uri);
  if (!spec.ok()) return spec.status();
  if (setting == "none") {
    // As for a file: one left by an earlier mount still gets its
    // interrupted unit applied, and stops vouching for the backing.
    Status ex = RbdImageExists(spec.value(), bo);
    if (ex.code() == Status::Code::kNotFound) return std::unique_ptr<Device>();
    WBFS_RETURN_IF_ERROR(ex);
    bool made = false;
    auto dev = OpenRbdJournal(spec.value(), bo, backing.Identity(), false, &made);
    if (!dev.ok()) return dev.status();
    WBFS_RETURN_IF_ERROR(RetireJournal(std::move(dev.value()), backing));
    return std::unique_ptr<Device>();
  }
  return OpenRbdJournal(spec.value(), bo, backing.Identity(), true, created);
}

}  // namespace

void RemoveCreatedJournal(const std::string& setting, const std::string& backing_path, const BackingOptions& bo) {
  if (!IsRbdUri(backing_path)) {
    ::unlink(JournalPath(setting, backing_path).c_str());
    return;
  }
  auto spec = RbdJournalSpec(setting, backing_path);
  if (spec.ok()) (void)RemoveRbdJournal(spec.value(), bo);
}

Result<std::unique_ptr<Device>> OpenJournalFor(const std::string& setting,
                                               const std::string& backing_path,
                                               const std::string& cache_path, const BackingOptions& bo,
                                               Device& backing, std::string* warning, bool* created) {
  *created = false;
  if (IsRbdUri(backing_path)) return OpenRbdJournalFor(setting, backing_path, bo, backing, created);
  if (setting == "none") {
    // No journal, by choice. One left by an earlier mount still gets its
    // interrupted unit applied, and stops vouching for the backing.
    const std::string old = journal::DefaultPath(backing_path);
    struct stat st;
    if (::stat(old.c_str(), &st) == 0) {
      auto dev = OpenPosixDevice(old, DeviceOptions{});
      if (!dev.ok()) return dev.status();
      WBFS_RETURN_IF_ERROR(RetireJournal(std::move(dev.value()), backing));
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

}  // namespace wbfs::cli
