// wbfs check and wbfs format: the offline tools that judge a whole cache
// (CheckCache, the reader a mount uses) and, for format, zero its
// superblock when nothing would be lost.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/offline.h"
#include "ctl/ctl.h"
#include "log/check.h"
#include "util/aligned_buffer.h"
#include "wbfs/format.h"

namespace wbfs::cli {

using nlohmann::json;

int CmdCheck(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs check CACHE [--json]\n"
      "\n"
      "Offline: validates the superblock, its records and every chunk of the log\n"
      "(headers and data checksums), and reports the valid log range, the cached\n"
      "and dirty blocks, and each torn or corrupt region with its byte offset.\n"
      "A torn newest write left by a crash is the normal end of the log: reported,\n"
      "but consistent. Exit 0 consistent, 1 inconsistent (or unreadable), 2 usage.\n";
  CommandLine cl("check", usage, 1, 1);
  cl.Options()("json", "print one JSON object");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const std::string path = cl.words()[0];
  auto dev = OpenOffline("cache", path, false);
  if (!dev.ok()) return OpenFail(dev.status());
  log::CheckReport r;
  Status st = log::CheckCache(*dev.value(), &r);
  if (!st.ok()) return Fail(kExitFailure, "check: " + st.message());
  if (cl.Has("json")) {
    json j;
    ctl::PutPath(&j, "cache", path);
    j["consistent"] = r.consistent;
    j["blank"] = r.blank;
    j["nr_dirty_cache_blocks"] = r.nr_dirty_cache_blocks;
    j["nr_cached_blocks"] = r.nr_cached_blocks;
    j["nr_pending_discards"] = r.nr_pending_discards;
    if (!r.blank && r.meta.sb.nr_segments) {
      j["format_version"] = r.meta.sb.version;
      j["nr_segments"] = r.meta.sb.nr_segments;
      j["segment_size"] = r.meta.sb.segment_size;
      j["backing_size"] = r.meta.sb.backing_size;
      j["valid_records"] = r.valid_records;
      j["log"] = {{"first_seq", r.first_seq}, {"last_seq", r.last_seq},
                  {"first_segment", r.first_segment}, {"last_segment", r.last_segment},
                  {"chunks", r.nr_chunks}, {"end", ctl::TextForJson(r.end_reason)}};
    }
    j["segments"] = json::array();
    for (const auto& s : r.segments) {
      j["segments"].push_back({{"id", s.id}, {"offset", s.offset}, {"bytes", s.bytes},
                               {"chunks", s.chunks}, {"valid", s.valid}});
    }
    j["problems"] = json::array();
    for (const auto& p : r.problems) {
      j["problems"].push_back({{"offset", p.offset}, {"what", ctl::TextForJson(p.what)}, {"corrupt", p.corrupt}});
    }
    std::cout << j.dump() << "\n";
  } else {
    std::printf("cache %s\n", path.c_str());
    if (r.blank) {
      std::printf("  blank (zeroed superblock): the next mount formats it\n");
    } else if (r.meta.sb.nr_segments) {
      std::printf("  wbfs cache, format %u: %llu segments of %s, for a backing of %s\n",
                  r.meta.sb.version, static_cast<unsigned long long>(r.meta.sb.nr_segments),
                  HumanBytes(r.meta.sb.segment_size).c_str(), HumanBytes(r.meta.sb.backing_size).c_str());
      if (r.nr_chunks) {
        std::printf("  log: segments %llu..%llu, chunks seq %llu..%llu (%llu chunks)\n",
                    static_cast<unsigned long long>(r.first_segment),
                    static_cast<unsigned long long>(r.last_segment),
                    static_cast<unsigned long long>(r.first_seq),
                    static_cast<unsigned long long>(r.last_seq),
                    static_cast<unsigned long long>(r.nr_chunks));
      } else {
        std::printf("  log: empty (everything was written back)\n");
      }
      std::printf("  log ends: %s\n", r.end_reason.c_str());
      std::printf("  blocks: %llu cached, %llu dirty (%s not on the backing yet), "
                  "%llu pending discards\n",
                  static_cast<unsigned long long>(r.nr_cached_blocks),
                  static_cast<unsigned long long>(r.nr_dirty_cache_blocks),
                  HumanBytes(r.dirty_bytes).c_str(),
                  static_cast<unsigned long long>(r.nr_pending_discards));
    }
    for (const auto& p : r.problems) {
      std::printf("  %s at offset %llu: %s\n", p.corrupt ? "CORRUPT" : "note",
                  static_cast<unsigned long long>(p.offset), p.what.c_str());
    }
    std::printf("%s\n", r.consistent ? "consistent" : "INCONSISTENT");
  }
  return r.consistent ? kExitOk : kExitFailure;
}

int CmdFormat(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs format CACHE [--force]\n"
      "\n"
      "Zeroes the superblock so that the next mount formats the cache. Refuses a\n"
      "cache that still holds dirty data (run 'wbfs writeback' first) or that does\n"
      "not hold a wbfs cache, unless --force.\n";
  CommandLine cl("format", usage, 1, 1);
  cl.Options()("force", "zero the superblock even of a cache with dirty data, or of a file that is no wbfs cache");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const std::string path = cl.words()[0];
  auto dev = OpenOffline("cache", path, true);
  if (!dev.ok()) return OpenFail(dev.status());
  log::CheckReport r;
  Status st = log::CheckCache(*dev.value(), &r);
  if (!st.ok()) return Fail(kExitFailure, "format: " + st.message());
  if (r.blank) {
    std::printf("%s is blank already: the next mount formats it\n", path.c_str());
    return kExitOk;
  }
  const bool force = cl.Has("force");
  if (!force && r.meta.sb.nr_segments == 0) {
    return Fail(kExitFailure, path + " does not hold a wbfs cache (" +
                                  (r.problems.empty() ? std::string("unknown content") : r.problems[0].what) +
                                  "); use --force to zero its first 4 KiB anyway");
  }
  if (!force && (r.nr_dirty_cache_blocks > 0 || r.nr_pending_discards > 0)) {
    return Fail(kExitFailure, path + " holds " + std::to_string(r.nr_dirty_cache_blocks) +
                                  " dirty blocks (" + HumanBytes(r.dirty_bytes) +
                                  ") and " + std::to_string(r.nr_pending_discards) +
                                  " discards that are not on the backing; run 'wbfs writeback' "
                                  "first, or use --force to discard them");
  }
  AlignedBuffer zero(format::kBlockSize);
  st = dev.value()->WriteAt(0, zero.data(), format::kBlockSize);
  if (st.ok()) st = dev.value()->Sync();
  if (!st.ok()) return Fail(kExitFailure, "format: " + st.message());
  std::printf("%s: superblock zeroed%s; the next mount formats the cache\n", path.c_str(),
              r.nr_dirty_cache_blocks ? (" (" + std::to_string(r.nr_dirty_cache_blocks) +
                                         " dirty blocks discarded)").c_str() : "");
  return kExitOk;
}

}  // namespace wbfs::cli
