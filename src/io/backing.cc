// Backings by name: the dispatch between a path and an rbd: URI, and the
// URI's grammar (pure functions, tested in tests/unit/backing_test.cc).
#include "io/backing.h"

#include <vector>

#include "wbfs/format.h"
#include "wbfs/tunables.h"

namespace wbfs {

bool IsRbdUri(const std::string& spec) { return spec.rfind("rbd:", 0) == 0; }

Result<RbdSpec> ParseRbdUri(const std::string& uri) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(uri + ": " + why +
                                   " (expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE)");
  };
  if (!IsRbdUri(uri)) return bad("not an rbd: URI");
  std::vector<std::string> parts;
  const std::string rest = uri.substr(4);
  size_t start = 0;
  for (;;) {
    const size_t slash = rest.find('/', start);
    parts.push_back(rest.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2) return bad("no image name");
  if (parts.size() > 3) return bad("too many '/'");
  for (const std::string& p : parts) {
    if (p.empty()) return bad("an empty pool, namespace or image name");
    if (p.find('\0') != std::string::npos) return bad("a NUL character");
    // rbd's own spec syntax: IMAGE@SNAP is a read-only snapshot.
    if (p.find('@') != std::string::npos) return bad("'@' (a snapshot is read-only, not a backing)");
  }
  RbdSpec s;
  s.pool = parts[0];
  if (parts.size() == 3) s.ns = parts[1];
  s.image = parts.back();
  return s;
}

std::string RbdUri(const RbdSpec& s) {
  return "rbd:" + s.pool + "/" + (s.ns.empty() ? "" : s.ns + "/") + s.image;
}

Result<std::unique_ptr<Device>> OpenBackingDevice(const std::string& spec, const BackingOptions& o) {
  if (!IsRbdUri(spec)) return OpenPosixDevice(spec, o.device);
  auto s = ParseRbdUri(spec);
  if (!s.ok()) return s.status();
  return OpenRbdDevice(s.value(), o);
}

uint64_t RbdJournalSize() {
  // A unit is at most nr_max_batched_writeback segments, plus the segment
  // being filled. Each segment's 128 blocks are data blocks (one run each
  // at most) or chunk headers (at most (4096 - 128) / 16 = 248 extents,
  // each a punch at most): descriptors are bounded by that per block.
  const TunableDef* t = FindTunable("nr_max_batched_writeback");
  const uint64_t segs = static_cast<uint64_t>(t->max) + 1;
  const uint64_t per_block = (format::kBlockSize - format::kJournalFixedHeader) / format::kJournalDescSize;
  const uint64_t descs = segs * format::kBlocksPerSegment * per_block;
  const uint64_t bytes = format::kJournalEntryOffset + format::kJournalFixedHeader +
                         descs * format::kJournalDescSize + segs * format::kSegmentSize;
  constexpr uint64_t kObject = 4 << 20;
  return (bytes + kObject - 1) / kObject * kObject;
}

}  // namespace wbfs
