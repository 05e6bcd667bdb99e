// wbfs: a userspace write-back cache for disk images.
#include <climits>
#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"

namespace wbfs::cli {

std::string AbsolutePath(const std::string& path) {
  std::string p = path;
  if (p.empty() || p[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
    p = std::string(cwd) + "/" + p;
  }
  // Fold "//", "/./" and "/../" lexically.
  std::vector<std::string> parts;
  std::stringstream ss(p);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (const auto& x : parts) out += "/" + x;
  return out.empty() ? "/" : out;
}

std::string MountpointPath(const std::string& arg) {
  char buf[PATH_MAX];
  return ::realpath(arg.c_str(), buf) != nullptr ? std::string(buf) : AbsolutePath(arg);
}

namespace {
// Undoes the octal escapes (\040 for a space) of /proc/self/mountinfo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}
}  // namespace

bool SameFile(const std::string& a, const std::string& b) {
  if (IsRbdUri(a) || IsRbdUri(b)) return false;  // a URI, not a path that may exist here
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string MountFsType(const std::string& abs_path) {
  // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the
  // last mount on the path is the one seen there.
  std::ifstream in("/proc/self/mountinfo");
  std::string line, type;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string f[5];
    for (auto& x : f) ls >> x;
    if (Unescape(f[4]) != abs_path) continue;
    size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream rest(line.substr(sep + 3));
    rest >> type;
  }
  return type;
}

bool IsMountPoint(const std::string& abs_path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string f[5];
    for (auto& x : f) ls >> x;
    if (Unescape(f[4]) == abs_path) return true;
  }
  return false;
}

}  // namespace wbfs::cli

namespace {

const char kUsage[] =
    "usage: wbfs COMMAND [ARGS...]\n"
    "\n"
    "A write-back cache for disk images: writes to the image are buffered in RAM,\n"
    "logged to a cache file (SSD) and written back to the backing file (HDD) or\n"
    "Ceph RBD image (rbd:POOL/IMAGE).\n"
    "\n"
    "commands:\n"
    "  mount    present the cached image in a FUSE mount\n"
    "  umount   seal the buffer, make the cache durable and unmount\n"
    "  restart  replace a mount's daemon by the installed binary, without unmounting\n"
    "  status   show a mounted cache's state and counters\n"
    "  message  set a tunable online, clear_stat, or drop_caches\n"
    "  check    validate an unmounted cache\n"
    "  dump     print an unmounted cache's superblock or a segment\n"
    "  format   zero an unmounted cache's superblock (the next mount formats)\n"
    "  writeback  write an unmounted cache's dirty data back and mark it clean\n"
    "  recover  without the cache: make the backing alone a consistent image\n"
    "\n"
    "As mount.fuse.wbfs (fstab type fuse.wbfs): wbfs BACKING MOUNTPOINT -o cache=CACHE,...\n"
    "\n"
    "Run 'wbfs COMMAND --help' for a command's options; see wbfs(8).\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace wbfs::cli;
  if (argc < 2) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  {
    std::string self = argv[0];
    if (self.substr(self.rfind('/') + 1) == "mount.fuse.wbfs") {
      return CmdMountHelper(std::vector<std::string>(argv + 1, argv + argc));
    }
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return kExitOk;
  }
  if (cmd == "--version") {
    std::cout << "wbfs 0.1.0 (cache format 1)\n";
    return kExitOk;
  }
  if (cmd == "mount") return CmdMount(args);
  if (cmd == "umount" || cmd == "unmount") return CmdUmount(args);
  if (cmd == "status") return CmdStatus(args);
  if (cmd == "restart") return CmdRestart(args);
  if (cmd == "message") return CmdMessage(args);
  if (cmd == "check") return CmdCheck(args);
  if (cmd == "dump") return CmdDump(args);
  if (cmd == "format") return CmdFormat(args);
  if (cmd == "writeback") return CmdWriteback(args);
  if (cmd == "recover") return CmdRecover(args);
  std::string self = argv[0];
  self = self.substr(self.rfind('/') + 1);
  if (self == "mount.fuse.wbfs" || cmd.find('/') != std::string::npos) {
    return CmdMountHelper(std::vector<std::string>(argv + 1, argv + argc));
  }
  return Fail(kExitUsage, "unknown command '" + cmd + "'; run 'wbfs --help' for the list");
}
