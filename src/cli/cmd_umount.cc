// wbfs umount: unmount, then wait for the daemon to seal its buffer, make
// the cache durable and exit.
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cli/commands.h"
#include "cli/config.h"
#include "cli/command_line.h"
#include "cli/control.h"

namespace wbfs::cli {

int MountpointOf(const CommandLine& cl, std::string* mp) {
  if (cl.Has("config") == !cl.words().empty()) return cl.UsageError();  // one or the other
  std::string target;
  if (cl.Has("config")) {
    const std::string& file = cl.Get<std::string>("config");
    MountConfig c;
    Status st = LoadConfigFile(file, &c);
    if (!st.ok()) return Fail(kExitUsage, st.message());
    if (c.mountpoint.empty()) return Fail(kExitUsage, "config file " + file + ": no \"mountpoint\"");
    target = c.mountpoint;
  } else {
    target = cl.words()[0];
  }
  *mp = MountpointPath(target);
  return -1;
}

int CmdUmount(const std::vector<std::string>& args) {
  CommandLine cl("umount",
                 "usage: wbfs umount MOUNTPOINT\n"
                 "       wbfs umount --config FILE     (the config file's mountpoint)\n"
                 "\n"
                 "Unmounts a wbfs mount and waits until the daemon has sealed its RAM buffer,\n"
                 "made the cache durable and recorded the superblock. Dirty data stays in\n"
                 "the cache for the next mount. 'fusermount3 -u' and 'umount' are as safe,\n"
                 "but return before the daemon has finished. Exits 1 if the daemon could not\n"
                 "close the cache cleanly. A mount that is not fuse.wbfs is refused.\n",
                 0, 1);
  cl.Options()("config", boost::program_options::value<std::string>()->value_name("FILE"),
               "the JSON config file whose mountpoint to unmount");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  std::string mp;
  if (int rc = MountpointOf(cl, &mp); rc >= 0) return rc;
  if (!IsMountPoint(mp)) return Fail(kExitFailure, mp + " is not mounted");
  const std::string type = MountFsType(mp);
  if (type != "fuse.wbfs") {
    return Fail(kExitFailure, mp + " is a " + type + " mount, not a wbfs one; not unmounting it");
  }
  // The connection lets us wait for the daemon's end, and learn how it went;
  // without it (no daemon, or one that does not answer) we still unmount.
  ctl::Client client;
  bool live = client.Connect(mp).ok();
  if (::geteuid() == 0) {
    if (::umount2(mp.c_str(), 0) != 0) {
      if (errno == EBUSY) {
        return Fail(kExitFailure, mp + " is busy: the image is still open (a loop device, a VM or "
                                  "a process); stop it or 'losetup -d' the loop device first");
      }
      return Fail(kExitFailure, "umount " + mp + ": " + std::strerror(errno));
    }
  } else {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execlp("fusermount3", "fusermount3", "-u", mp.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Fail(kExitFailure, "fusermount3 -u " + mp + " failed (is the image still open?)");
    }
  }
  if (!live) return kExitOk;
  const auto farewell = ctl::DecodeFarewell(client.WaitForExit());
  if (farewell && farewell->exit != 0) {
    const std::string& why = farewell->error;
    return Fail(kExitFailure, mp + " is unmounted, but the daemon failed" + (why.empty() ? "" : ": " + why) +
                                  " (see its log)");
  }
  return kExitOk;
}

}  // namespace wbfs::cli
