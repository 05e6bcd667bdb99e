// Subcommands of the wbfs binary. Each returns the process exit code:
// 0 success, 2 bad usage or configuration, 1 any other failure.
#ifndef WBFS_CLI_COMMANDS_H_
#define WBFS_CLI_COMMANDS_H_

#include <string>
#include <vector>

#include "wbfs/status.h"

namespace wbfs::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int CmdMount(const std::vector<std::string>& args);
int CmdUmount(const std::vector<std::string>& args);
int CmdStatus(const std::vector<std::string>& args);
int CmdMessage(const std::vector<std::string>& args);
int CmdCheck(const std::vector<std::string>& args);
int CmdDump(const std::vector<std::string>& args);
int CmdFormat(const std::vector<std::string>& args);
int CmdWriteback(const std::vector<std::string>& args);
// mount(8)'s helper form: `wbfs BACKING MOUNTPOINT -o cache=CACHE,...`, as
// /sbin/mount.fuse.wbfs or through mount.fuse3 (fstab type fuse.wbfs).
int CmdMountHelper(const std::vector<std::string>& args);

// Prints "wbfs: <message>" to stderr and returns `code`.
int Fail(int code, const std::string& message);

// Helpers shared by commands.
std::string HumanBytes(uint64_t bytes);  // "1.5 GiB"
std::string AbsolutePath(const std::string& path);  // lexical, no symlinks
// A mountpoint given on the command line, resolved; a dead daemon's mount
// cannot be stat'ed (ENOTCONN), so that one is resolved lexically.
std::string MountpointPath(const std::string& arg);
bool IsMountPoint(const std::string& abs_path);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_COMMANDS_H_
