// Backings by name: the dispatch between a path and an rbd: URI, and the
// URI's grammar and the owner record's text (pure functions, tested in
// tests/unit/backing_test.cc).
#include "io/backing.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <sstream>
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

std::string EncodeOwnerRecord(const OwnerRecord& r) {
  std::string host = r.host.empty() ? "unknown" : r.host;
  for (char& c : host) {
    if (c == ' ' || c == '=' || static_cast<unsigned char>(c) < 0x20) c = '_';
  }
  char nonce[17];
  std::snprintf(nonce, sizeof(nonce), "%016" PRIx64, r.cache_nonce);
  return std::string("wbfs-owner/1 nonce=") + nonce + " host=" + host +
         " flush_seq=" + std::to_string(r.flush_seq) + " flush_ms=" + std::to_string(r.flush_ms) +
         " since_ms=" + std::to_string(r.since_ms) + " updated_ms=" + std::to_string(r.updated_ms);
}

std::string EncodeGivenUp(const std::vector<uint64_t>& nonces) {
  std::string s = "wbfs-given-up/1";
  char hex[20];
  const size_t from = nonces.size() > kMaxGivenUp ? nonces.size() - kMaxGivenUp : 0;
  for (size_t i = from; i < nonces.size(); i++) {
    std::snprintf(hex, sizeof(hex), " %016llx", static_cast<unsigned long long>(nonces[i]));
    s += hex;
  }
  return s;
}

Status DecodeGivenUp(const std::string& text, std::vector<uint64_t>* nonces) {
  std::istringstream in(text);
  std::string word;
  if (!(in >> word) || word != "wbfs-given-up/1") return Status::Corruption("not a given-up list: '" + text + "'");
  std::vector<uint64_t> out;
  while (in >> word) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(word.c_str(), &end, 16);
    if (word.size() != 16 || errno != 0 || end == nullptr || *end != '\0') {
      return Status::Corruption("a given-up list with a bad nonce '" + word + "'");
    }
    out.push_back(v);
  }
  *nonces = std::move(out);
  return Status::OK();
}

Status DecodeOwnerRecord(const std::string& text, OwnerRecord* r) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("the owner record '" + text + "' " + why);
  };
  std::istringstream in(text);
  std::string word;
  if (!(in >> word) || word.rfind("wbfs-owner/", 0) != 0) return bad("is not a wbfs owner record");
  if (word != "wbfs-owner/1") return bad("has an unknown version");
  OwnerRecord out;
  bool have_nonce = false, have_host = false;
  while (in >> word) {
    const size_t eq = word.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == word.size()) return bad("has a malformed field '" + word + "'");
    const std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "host") {
      out.host = value;
      have_host = true;
      continue;
    }
    const bool hex = key == "nonce";
    if (!hex && key != "flush_seq" && key != "flush_ms" && key != "since_ms" && key != "updated_ms") {
      continue;  // a later version's key
    }
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(value.c_str(), &end, hex ? 16 : 10);
    if (errno != 0 || end == value.c_str() || *end != '\0' || value[0] == '-' || value[0] == '+') {
      return bad("has a malformed number in '" + word + "'");
    }
    if (hex) {
      out.cache_nonce = v;
      have_nonce = true;
    } else if (key == "flush_seq") {
      out.flush_seq = v;
    } else if (key == "flush_ms") {
      out.flush_ms = v;
    } else if (key == "since_ms") {
      out.since_ms = v;
    } else if (key == "updated_ms") {
      out.updated_ms = v;
    }
  }
  if (!have_nonce || !have_host) return bad("lacks the cache's nonce or host");
  *r = out;
  return Status::OK();
}

OwnerRecordStore* OwnerRecordOf(Device& d) { return dynamic_cast<OwnerRecordStore*>(&d); }

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
