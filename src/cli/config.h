// The mount configuration: JSON file, -o KEY=VALUE and command-line flags,
// in that order of precedence (later wins). One table of keys serves all
// three, so every key is spelled and range-checked the same way.
#ifndef WBFS_CLI_CONFIG_H_
#define WBFS_CLI_CONFIG_H_

#include <string>

#include "wbfs/status.h"
#include "wbfs/tunables.h"

namespace wbfs::cli {

struct MountConfig {
  std::string backing;
  std::string cache;
  std::string mountpoint;
  std::string image_name = "image";
  // The writeback journal: empty = next to the backing (BACKING.wbfs-journal);
  // "none" = no journal (an explicit choice: the backing alone may then be
  // a mix of two flush points after a crash, and useless without the cache).
  std::string journal;
  // For an rbd: backing (and its journal): the ceph.conf to read ("" =
  // librados's search: $CEPH_CONF, /etc/ceph/ceph.conf, ...) and the client
  // id whose keyring entry is used ("" = admin, as the ceph tools).
  std::string ceph_conf;
  std::string ceph_client_id;
  bool allow_other = false;
  // --accept-loss (command line only, never a config key: accepting lost
  // data is a decision for one mount, not a setting that stays).
  bool accept_loss = false;
  // The supervisor (src/cli/supervisor.h): a daemon that dies is replaced
  // on the same FUSE connection unless this many restarts (crashes, not
  // `wbfs restart`) happened within restart_interval seconds; then the
  // supervisor gives up and the mount fails as a crash did before.
  // restart_limit 0: no supervisor, a dead daemon ends the mount.
  int64_t restart_limit = 10;
  int64_t restart_interval = 60;
  Tunables tunables;
};

// Reads a JSON config file. InvalidArgument naming the file and the key for
// an unknown key, a value of the wrong type or out of range, or bad JSON.
// Keys starting with "//" are comments and ignored.
Status LoadConfigFile(const std::string& path, MountConfig* c);

// Applies one -o item, "KEY=VALUE" (or "allow_other" alone).
Status ApplyOption(const std::string& item, MountConfig* c);

// Checks what the file, -o and flags cannot check one by one.
Status Validate(const MountConfig& c);

// The whole configuration (accept_loss included) as text that
// DecodeConfig reads back into the same MountConfig, byte for byte (paths
// need not be UTF-8): one KEY=HEX line per setting. How the supervisor
// hands a mount's settings to the daemons it starts.
std::string EncodeConfig(const MountConfig& c);
Status DecodeConfig(const std::string& text, MountConfig* c);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_CONFIG_H_
