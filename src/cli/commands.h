// Subcommands of the wbfs binary. Each returns the process exit code:
// 0 success, 2 bad usage or configuration, 1 any other failure.
#ifndef WBFS_CLI_COMMANDS_H_
#define WBFS_CLI_COMMANDS_H_

#include <memory>
#include <string>
#include <vector>

#include "io/backing.h"
#include "wbfs/device.h"
#include "wbfs/status.h"

namespace wbfs::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int CmdMount(const std::vector<std::string>& args);
int CmdUmount(const std::vector<std::string>& args);
int CmdRestart(const std::vector<std::string>& args);
int CmdStatus(const std::vector<std::string>& args);
int CmdMessage(const std::vector<std::string>& args);
int CmdCheck(const std::vector<std::string>& args);
int CmdDump(const std::vector<std::string>& args);
int CmdFormat(const std::vector<std::string>& args);
int CmdWriteback(const std::vector<std::string>& args);
int CmdRecover(const std::vector<std::string>& args);
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
class CommandLine;
// The mountpoint a command names either as its one word or as the
// "mountpoint" of --config FILE (umount, restart), resolved into *mp; or
// the exit code of a usage error (already printed); else -1.
int MountpointOf(const CommandLine& cl, std::string* mp);
bool IsMountPoint(const std::string& abs_path);
// The file system type of the mount seen at abs_path ("fuse.wbfs" for
// ours), empty if none.
std::string MountFsType(const std::string& abs_path);
// Do both paths exist and name the same file? (Never for an rbd: URI.)
bool SameFile(const std::string& a, const std::string& b);

// The journal file for a `journal` setting ("" = BACKING.wbfs-journal,
// "none" = no journal: returns "").
std::string JournalPath(const std::string& setting, const std::string& backing_path);
// The journal image of an rbd: backing for a `journal` setting: the
// setting's rbd: URI, or (for "" and "none") IMAGE.wbfs-journal next to
// the backing's image.
Result<RbdSpec> RbdJournalSpec(const std::string& setting, const std::string& backing_uri);
// Opens (creating it if missing) the journal device for a mount or an
// offline writeback; refuses the cache or the backing itself. With the
// setting "none", returns null after applying and retiring whatever a
// journal at the default place holds. For an rbd: backing the journal is
// an image in the cluster (RbdJournalSpec). `warning` gets a placement
// warning; `created` says the file or image is new (a failed mount
// removes it again with RemoveCreatedJournal).
Result<std::unique_ptr<Device>> OpenJournalFor(const std::string& setting,
                                               const std::string& backing_path,
                                               const std::string& cache_path, const BackingOptions& bo,
                                               Device& backing, std::string* warning, bool* created);
void RemoveCreatedJournal(const std::string& setting, const std::string& backing_path, const BackingOptions& bo);
// "chunk N, cut at YYYY-MM-DD HH:MM:SS", or "unknown" for seq 0.
std::string FlushPointText(uint64_t seq, uint64_t ms);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_COMMANDS_H_
