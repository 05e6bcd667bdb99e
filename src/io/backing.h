// Backings by name: a path (a regular file or a block device, PosixDevice)
// or an RBD image of a Ceph cluster, "rbd:POOL/IMAGE" or
// "rbd:POOL/NAMESPACE/IMAGE" (RbdDevice, src/io/rbd_device.cc; a build
// without librbd links src/io/rbd_none.cc instead, whose openers say so).
// The engine sees only a Device: nothing outside src/io and src/cli knows
// about Ceph.
#ifndef WBFS_IO_BACKING_H_
#define WBFS_IO_BACKING_H_

#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "wbfs/device.h"
#include "wbfs/status.h"

namespace wbfs {

struct RbdSpec {
  std::string pool;
  std::string ns;  // "" = the default namespace
  std::string image;
};

// Does `spec` name an RBD image (starts with "rbd:")? Such a spec is a
// URI, never a path: no realpath, no stat.
bool IsRbdUri(const std::string& spec);

// Splits "rbd:POOL/IMAGE" or "rbd:POOL/NAMESPACE/IMAGE". InvalidArgument,
// naming the URI, for anything else (an empty part, more parts, a part
// with '@' (snapshots are read-only) or a NUL).
Result<RbdSpec> ParseRbdUri(const std::string& uri);
// The inverse: "rbd:POOL/IMAGE" or "rbd:POOL/NAMESPACE/IMAGE".
std::string RbdUri(const RbdSpec& s);

struct BackingOptions {
  // For a path: passed to OpenPosixDevice. For RBD: `exclusive` takes the
  // image's exclusive lock (a second writer on any host is refused, naming
  // the holder), `read_only` opens it read-only; `direct` and `create`
  // mean nothing there.
  DeviceOptions device;
  // ceph.conf to read; "" = librados's own search ($CEPH_CONF,
  // /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf).
  std::string ceph_conf;
  // The client's id (client.ID, its keyring entry); "" = "admin".
  std::string ceph_client_id;
  // RBD, `exclusive`: when another client holds the image's lock, break it
  // (librbd blocklists that client, so it can never write to the image
  // again) and take it, instead of refusing. What the holder's cache held
  // that was not written back is then lost for this image. If
  // `broken_holder` is set, it receives the holder's description.
  bool break_lock = false;
  std::string* broken_holder = nullptr;
  // RBD: when exactly this owner (a LockOwner() of before) holds the
  // image's lock, or its journal image's (which librbd takes at the first
  // journal write, for the same connection), break it at once and take
  // it: a restarted daemon's predecessor, seen dead by the supervisor. Any
  // other holder is refused as usual.
  std::string break_lock_of;
  // RBD, `exclusive`: called with the image once its lock is taken,
  // before anything is written (its owner record can be read); a failure
  // gives the lock back and fails the open, nothing written. The mount's
  // "dirty elsewhere" check (src/cli/owner_record.h). Not called for a
  // path.
  std::function<Status(Device&)> admit;
};

// Opens a backing by path or rbd: URI.
Result<std::unique_ptr<Device>> OpenBackingDevice(const std::string& spec, const BackingOptions& o);

// Implemented by rbd_device.cc, or by rbd_none.cc (which fails every call).
Result<std::unique_ptr<Device>> OpenRbdDevice(const RbdSpec& spec, const BackingOptions& o);

// The writeback journal of an RBD backing lives in the cluster, never on a
// host: an image in the backing's pool and namespace (by default
// IMAGE.wbfs-journal), whose metadata key "wbfs.backing_id" holds the
// backing's Identity(). Opens it, refusing (InvalidArgument, nothing
// written) an image that belongs to another backing or is no wbfs journal;
// with `create`, a missing one is created thin, sized for the largest
// writeback unit, and tagged; `*created` says so (a failed mount removes
// it again with RemoveRbdJournal).
Result<std::unique_ptr<Device>> OpenRbdJournal(const RbdSpec& journal, const BackingOptions& o,
                                               const std::string& backing_identity, bool create,
                                               bool* created);
// Does the image exist? (NotFound when it does not; other errors as such.)
Status RbdImageExists(const RbdSpec& spec, const BackingOptions& o);
// Removes the journal image a failed mount created.
Status RemoveRbdJournal(const RbdSpec& journal, const BackingOptions& o);

// The size the journal image is created with: room for the largest
// writeback unit (its header, descriptors and data), rounded up to RBD's
// 4 MiB objects. Thin: only what is written takes space.
uint64_t RbdJournalSize();

// ------------------------------------------------------------ owner record
// A backing shared between hosts (an RBD image) keeps, next to the image,
// a record of which cache holds data for it that is not in it yet: the
// "dirty elsewhere" record. A mount writes it before it accepts a write,
// refreshes its flush point as writeback advances, and removes it when it
// ends with the cache clean; a mount with another cache is refused while
// it exists (src/cli/owner_record.h decides), and `wbfs recover` removes
// it, accepting the loss. Files and block devices keep none: a host's
// cache of a local disk cannot move to another host behind its back.
struct OwnerRecord {
  uint64_t cache_nonce = 0;  // the superblock nonce of the cache holding the data
  std::string host;          // where that cache is (gethostname; no spaces)
  // The flush point the backing alone represents (the journal's): chunk
  // seq and its cut time in wall-clock ms; 0 = unknown (nothing written
  // back since the cache was formatted, or no journal).
  uint64_t flush_seq = 0;
  uint64_t flush_ms = 0;
  uint64_t since_ms = 0;    // when this cache first marked the image dirty
  uint64_t updated_ms = 0;  // when the record was last written
};

// "wbfs-owner/1 nonce=HEX host=NAME flush_seq=N flush_ms=N since_ms=N
// updated_ms=N": one line of text, readable with `rbd image-meta get`.
std::string EncodeOwnerRecord(const OwnerRecord& r);
// Corruption, naming what is wrong, for anything EncodeOwnerRecord does
// not write (unknown keys of a later version are ignored).
Status DecodeOwnerRecord(const std::string& text, OwnerRecord* r);

// The caches whose data `wbfs recover` gave up for the image, newest last,
// at most kMaxGivenUp: such a cache, mounted again unformatted, would write
// its old data over newer writes, so it is refused. "wbfs-given-up/1 HEX
// HEX ...": one line of text. Decoding: Corruption for anything else.
inline constexpr size_t kMaxGivenUp = 32;
std::string EncodeGivenUp(const std::vector<uint64_t>& nonces);
Status DecodeGivenUp(const std::string& text, std::vector<uint64_t>* nonces);

// The capability of a backing device that keeps an owner record (RbdDevice
// opened for writing). Thread-safe, callable while the engine runs.
class OwnerRecordStore {
 public:
  virtual ~OwnerRecordStore() = default;
  // NotFound when there is no record; Corruption when it does not decode
  // (`raw`, when set, receives the text found).
  virtual Status GetOwnerRecord(OwnerRecord* r, std::string* raw = nullptr) = 0;
  virtual Status SetOwnerRecord(const OwnerRecord& r) = 0;
  // Removes the record; OK when there was none.
  virtual Status ClearOwnerRecord() = 0;
  // The given-up list (above): empty when there is none.
  virtual Status GetGivenUp(std::vector<uint64_t>* nonces) = 0;
  virtual Status SetGivenUp(const std::vector<uint64_t>& nonces) = 0;
  // Who holds the backing's lock now, for status ("" when unknown).
  virtual std::string LockHolderText() { return ""; }
  // librbd's name for this client as the lock's owner ("" if none): what a
  // successor passes as BackingOptions::break_lock_of.
  virtual std::string LockOwner() { return ""; }
};

// The device's record store, or null when it keeps none (files, block
// devices). An RBD image opened read-only can read the record, not write it.
OwnerRecordStore* OwnerRecordOf(Device& d);

// The metadata key of the journal image naming its backing.
inline constexpr const char* kRbdJournalBackingKey = "wbfs.backing_id";
// The metadata key of a mounted image naming its holder (host, pid, time).
inline constexpr const char* kRbdHolderKey = "wbfs.holder";
// The metadata key of a backing image holding its owner record.
inline constexpr const char* kRbdOwnerKey = "wbfs.dirty";
// The metadata key of a backing image holding its given-up list.
inline constexpr const char* kRbdGivenUpKey = "wbfs.given_up";

}  // namespace wbfs

#endif  // WBFS_IO_BACKING_H_
