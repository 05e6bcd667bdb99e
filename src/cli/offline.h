// What the offline tools (check, dump, format, writeback, recover) share:
// opening the cache or the backing with a mount's locks, so that a tool
// refuses what a mount holds, and the exit code of a failed open.
#ifndef WBFS_CLI_OFFLINE_H_
#define WBFS_CLI_OFFLINE_H_

#include <memory>
#include <string>

#include "cli/command_line.h"
#include "io/backing.h"
#include "wbfs/device.h"
#include "wbfs/status.h"

namespace wbfs::cli {

// Opens a cache (or a backing file) at `path`; `what` names it in the
// refusal when a mount or another tool holds it.
Result<std::unique_ptr<Device>> OpenOffline(const std::string& what, const std::string& path, bool write);
// Opens a backing (a path or an rbd: URI) for writing, with a mount's lock.
Result<std::unique_ptr<Device>> OpenBackingOffline(const std::string& spec, const BackingOptions& bo);
// Adds --ceph-conf and --ceph-client-id to a tool's command line, and
// reads them back.
void AddCephOptions(CommandLine* cl);
BackingOptions CephOptions(const CommandLine& cl);
// Prints why an open failed; exit 2 for a path that does not exist or a
// bad argument, 1 for anything else.
int OpenFail(const Status& st);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_OFFLINE_H_
