// The offline tools: check, dump, format, writeback, recover. They read the cache
// with the same reader mount uses (src/log), hold the same locks as a
// mount (so they refuse a cache in use), and write nothing until every
// check has passed.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "cli/commands.h"
#include "ctl/ctl.h"
#include "journal/journal.h"
#include "log/check.h"
#include "log/log_reader.h"
#include "util/aligned_buffer.h"
#include "wbfs/device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

namespace wbfs::cli {
namespace {

using nlohmann::json;

// Opens a cache (or backing) for an offline tool, with a mount's locks.
Result<std::unique_ptr<Device>> OpenOffline(const std::string& what, const std::string& path,
                                            bool write) {
  DeviceOptions o;
  o.read_only = !write;
  auto d = OpenPosixDevice(path, o);
  if (!d.ok() && d.status().code() == Status::Code::kBusy) {
    return Status::Busy(what + " " + path + " is in use by a mount (or another wbfs tool); "
                        "unmount it first");
  }
  return d;
}

// Opens a backing (a path or an rbd: URI) for writeback or recover, with a
// mount's lock.
Result<std::unique_ptr<Device>> OpenBackingOffline(const std::string& spec, const BackingOptions& bo) {
  if (!IsRbdUri(spec)) return OpenOffline("backing", spec, true);
  auto d = OpenBackingDevice(spec, bo);
  if (!d.ok() && d.status().code() == Status::Code::kBusy) {
    return Status::Busy(d.status().message() + " (unmount it first)");
  }
  return d;
}

// --ceph-conf and --ceph-client-id of writeback and recover.
BackingOptions CephOptions(const std::string& conf, const std::string& id) {
  BackingOptions bo;
  bo.ceph_conf = conf;
  bo.ceph_client_id = id;
  return bo;
}

int OpenFail(const Status& st) {
  const bool usage = (st.code() == Status::Code::kIOError && st.err() == ENOENT) ||
                     st.code() == Status::Code::kInvalidArgument;
  return Fail(usage ? kExitUsage : kExitFailure, st.message());
}

// Parses "CACHE [flags...]": the positional and the flags present.
struct Args {
  std::vector<std::string> pos;
  std::vector<std::string> flags;
  std::vector<std::pair<std::string, std::string>> values;
  bool Has(const std::string& f) const {
    for (const auto& x : flags) {
      if (x == f) return true;
    }
    return false;
  }
  std::string Value(const std::string& k) const {
    for (const auto& [a, b] : values) {
      if (a == k) return b;
    }
    return "";
  }
};

// Flags in `known` take no value, those in `valued` take one.
bool ParseArgs(const std::vector<std::string>& in, const std::vector<std::string>& known,
               const std::vector<std::string>& valued, Args* out, std::string* err) {
  for (size_t i = 0; i < in.size(); i++) {
    const std::string& a = in[i];
    if (a.size() > 1 && a[0] == '-') {
      std::string k = a, v;
      size_t eq = a.find('=');
      if (eq != std::string::npos) {
        k = a.substr(0, eq);
        v = a.substr(eq + 1);
      }
      if (std::find(valued.begin(), valued.end(), k) != valued.end()) {
        if (eq == std::string::npos) {
          if (i + 1 >= in.size()) {
            *err = k + " needs a value";
            return false;
          }
          v = in[++i];
        }
        out->values.emplace_back(k, v);
      } else if (std::find(known.begin(), known.end(), a) != known.end()) {
        out->flags.push_back(a);
      } else {
        *err = "unknown option " + a;
        return false;
      }
    } else {
      out->pos.push_back(a);
    }
  }
  return true;
}

// The preamble of every offline command: parses flags `known` and `valued`
// (and --help, -h), prints the usage on --help. -1 to go on, or the exit
// code.
int ParseCommand(const std::vector<std::string>& args, const char* cmd, const char* usage,
                 std::vector<std::string> known, const std::vector<std::string>& valued, Args* a) {
  std::string err;
  known.push_back("--help");
  known.push_back("-h");
  if (!ParseArgs(args, known, valued, a, &err)) return Fail(kExitUsage, std::string(cmd) + ": " + err);
  if (a->Has("--help") || a->Has("-h")) {
    std::cout << usage;
    return kExitOk;
  }
  return -1;
}

// The same, for a command on one CACHE (its only positional argument).
int ParseCacheCommand(const std::vector<std::string>& args, const char* cmd, const char* usage,
                      std::vector<std::string> known, Args* a) {
  if (int rc = ParseCommand(args, cmd, usage, std::move(known), {}, a); rc >= 0) return rc;
  if (a->pos.size() != 1) {
    std::cerr << usage;
    return kExitUsage;
  }
  return -1;
}

// Why `dump --segment` stopped where it did.
std::string DumpEndText(const log::SegmentDump& d) {
  switch (d.stop) {
    case log::WalkStop::kSegmentEnd: return "segment full";
    case log::WalkStop::kUnwritten: return "unwritten block";
    case log::WalkStop::kBadHeader: return d.detail;
    case log::WalkStop::kOtherFormat: return "a chunk of another format";
    case log::WalkStop::kOtherSlot:
      return "the slot holds segment " + std::to_string(d.other_segment) + " (another lap)";
    default: return log::WalkStopName(d.stop);
  }
}

std::string MaskBits(uint8_t m) {
  std::string s;
  for (int i = 0; i < 8; i++) s += (m >> i) & 1 ? '1' : '0';
  return s;
}

}  // namespace

// ------------------------------------------------------------------ check

int CmdCheck(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs check CACHE [--json]\n"
      "\n"
      "Offline: validates the superblock, its records and every chunk of the log\n"
      "(headers and data checksums), and reports the valid log range, the cached\n"
      "and dirty blocks, and each torn or corrupt region with its byte offset.\n"
      "A torn newest write left by a crash is the normal end of the log: reported,\n"
      "but consistent. Exit 0 consistent, 1 inconsistent (or unreadable), 2 usage.\n";
  Args a;
  if (int rc = ParseCacheCommand(args, "check", usage, {"--json"}, &a); rc >= 0) return rc;
  auto dev = OpenOffline("cache", a.pos[0], false);
  if (!dev.ok()) return OpenFail(dev.status());
  log::CheckReport r;
  Status st = log::CheckCache(*dev.value(), &r);
  if (!st.ok()) return Fail(kExitFailure, "check: " + st.message());
  if (a.Has("--json")) {
    json j;
    ctl::PutPath(&j, "cache", a.pos[0]);
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
    std::printf("cache %s\n", a.pos[0].c_str());
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

// ------------------------------------------------------------------ dump

int CmdDump(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs dump CACHE (--superblock | --segment ID) [--json]\n"
      "\n"
      "Offline: prints the superblock and both records, or the chunks of segment ID\n"
      "(header fields, and per block its backing address and 512-byte sector mask).\n";
  Args a;
  if (int rc = ParseCommand(args, "dump", usage, {"--superblock", "--json"}, {"--segment"}, &a); rc >= 0) {
    return rc;
  }
  const bool sb_mode = a.Has("--superblock");
  const std::string seg_arg = a.Value("--segment");
  if (a.pos.size() != 1 || sb_mode == !seg_arg.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  uint64_t seg_id = 0;
  if (!sb_mode) {
    // Ids count up from 1 and never come near 2^63.
    int64_t id = 0;
    if (!ctl::ParseInt64(seg_arg, &id) || id <= 0) {
      return Fail(kExitUsage, "dump: --segment needs a segment id (1, 2, ... up to 2^63-1), not '" + seg_arg + "'");
    }
    seg_id = static_cast<uint64_t>(id);
  }
  auto dev = OpenOffline("cache", a.pos[0], false);
  if (!dev.ok()) return OpenFail(dev.status());
  Device& cache = *dev.value();
  log::CacheMeta meta;
  Status st = log::ReadCacheMeta(cache, &meta);
  if (!st.ok()) return Fail(kExitFailure, "dump: " + st.message());
  if (meta.blank) return Fail(kExitFailure, "dump: " + a.pos[0] + " is blank (not formatted)");
  const bool js = a.Has("--json");
  json out;
  if (sb_mode) {
    const auto& sb = meta.sb;
    out["superblock"] = {{"version", sb.version}, {"block_size", sb.block_size},
                         {"segment_size", sb.segment_size}, {"nr_segments", sb.nr_segments},
                         {"segments_offset", sb.segments_offset}, {"backing_size", sb.backing_size},
                         {"cache_size", sb.cache_size}, {"nonce", sb.nonce},
                         {"format_time", sb.format_time}, {"backing_id", sb.backing_id}};
    out["records"] = json::array();
    for (int slot = 0; slot < 2; slot++) {
      const log::RecordSlot& rs = meta.records.slot[static_cast<size_t>(slot)];
      const format::Record& r = rs.record;
      json jr = {{"slot", slot}, {"offset", rs.offset}, {"valid", rs.status.ok()},
                 {"in_use", slot == meta.record_slot}};
      if (rs.status.ok()) {
        jr.update({{"seq", r.seq}, {"clean_unmount", (r.flags & format::kRecordClean) != 0},
                   {"tail_segment_id", r.tail_segment_id}, {"tail_chunk_seq", r.tail_chunk_seq},
                   {"tail_prev_crc", r.tail_prev_crc}, {"last_writeback_id", r.last_writeback_id},
                   {"durable_seq", r.durable_seq}});
      } else {
        jr["error"] = rs.status.message();
      }
      out["records"].push_back(jr);
    }
  } else {
    const auto& sb = meta.sb;
    out["segment"] = seg_id;
    out["offset"] = format::SegmentBlockOffset(sb, seg_id, 0);
    out["chunks"] = json::array();
    log::SegmentDump d;
    uint64_t err_at = 0;
    if (!log::DumpSegment(cache, sb, seg_id, &d, &err_at).ok()) {
      return Fail(kExitFailure, "dump: cannot read offset " + std::to_string(err_at));
    }
    for (const log::SegmentDump::Chunk& dc : d.chunks) {
      const format::ChunkHeader& h = dc.header;
      json c = {{"offset", dc.offset}, {"block", h.offset}, {"seq", h.seq}, {"epoch", h.epoch},
                {"nr_blocks", h.nr_blocks}, {"nr_extents", h.nr_extents}, {"flags", h.flags},
                {"header_crc", h.header_crc}, {"data_crc", h.data_crc}, {"prev_crc", h.prev_crc},
                {"durable_seq", h.durable_seq}};
      c["entries"] = json::array();
      for (uint32_t i = 0; i < h.nr_blocks; i++) {
        const auto& e = h.entries[i];
        c["entries"].push_back({{"block", e.block}, {"offset", e.block * format::kBlockSize},
                                {"sectors", MaskBits(e.mask)},
                                {"dirty", (e.flags & format::kEntryDirty) != 0}});
      }
      c["extents"] = json::array();
      const char* kinds[] = {"invalidate", "discard", "punched"};
      for (uint32_t i = 0; i < h.nr_extents; i++) {
        const auto& x = h.extents[i];
        c["extents"].push_back({{"start", x.start}, {"count", x.count}, {"kind", kinds[x.kind]}});
      }
      out["chunks"].push_back(c);
    }
    out["end"] = DumpEndText(d);
  }
  if (js) {
    std::cout << out.dump() << "\n";
    return kExitOk;
  }
  if (sb_mode) {
    std::printf("[superblock] at offset 0\n");
    for (auto& [k, v] : out["superblock"].items()) std::printf("  %-18s %s\n", k.c_str(), v.dump().c_str());
    for (auto& r : out["records"]) {
      std::printf("[record %d] at offset %s%s\n", r["slot"].get<int>(), r["offset"].dump().c_str(),
                  r["in_use"].get<bool>() ? " (in use)" : "");
      for (auto& [k, v] : r.items()) {
        if (k != "slot" && k != "offset" && k != "in_use") std::printf("  %-18s %s\n", k.c_str(), v.dump().c_str());
      }
    }
  } else {
    std::printf("[segment %llu] at offset %s\n", static_cast<unsigned long long>(seg_id),
                out["offset"].dump().c_str());
    for (auto& c : out["chunks"]) {
      std::printf("  [chunk seq %s] block %s: %s data blocks, %s extents, durable_seq %s, "
                  "header_crc %s, data_crc %s\n",
                  c["seq"].dump().c_str(), c["block"].dump().c_str(), c["nr_blocks"].dump().c_str(),
                  c["nr_extents"].dump().c_str(), c["durable_seq"].dump().c_str(),
                  c["header_crc"].dump().c_str(), c["data_crc"].dump().c_str());
      int i = 0;
      for (auto& e : c["entries"]) {
        std::printf("    [%d] backing block %s (offset %s) sectors %s %s\n", i++, e["block"].dump().c_str(),
                    e["offset"].dump().c_str(), e["sectors"].get<std::string>().c_str(),
                    e["dirty"].get<bool>() ? "dirty" : "clean");
      }
      for (auto& x : c["extents"]) {
        std::printf("    extent %s: blocks %s +%s\n", x["kind"].get<std::string>().c_str(),
                    x["start"].dump().c_str(), x["count"].dump().c_str());
      }
    }
    std::printf("  end: %s\n", out["end"].get<std::string>().c_str());
  }
  return kExitOk;
}

// ------------------------------------------------------------------ format

int CmdFormat(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs format CACHE [--force]\n"
      "\n"
      "Zeroes the superblock so that the next mount formats the cache. Refuses a\n"
      "cache that still holds dirty data (run 'wbfs writeback' first) or that does\n"
      "not hold a wbfs cache, unless --force.\n";
  Args a;
  if (int rc = ParseCacheCommand(args, "format", usage, {"--force"}, &a); rc >= 0) return rc;
  auto dev = OpenOffline("cache", a.pos[0], true);
  if (!dev.ok()) return OpenFail(dev.status());
  log::CheckReport r;
  Status st = log::CheckCache(*dev.value(), &r);
  if (!st.ok()) return Fail(kExitFailure, "format: " + st.message());
  if (r.blank) {
    std::printf("%s is blank already: the next mount formats it\n", a.pos[0].c_str());
    return kExitOk;
  }
  const bool force = a.Has("--force");
  if (!force && r.meta.sb.nr_segments == 0) {
    return Fail(kExitFailure, a.pos[0] + " does not hold a wbfs cache (" +
                                  (r.problems.empty() ? std::string("unknown content") : r.problems[0].what) +
                                  "); use --force to zero its first 4 KiB anyway");
  }
  if (!force && (r.nr_dirty_cache_blocks > 0 || r.nr_pending_discards > 0)) {
    return Fail(kExitFailure, a.pos[0] + " holds " + std::to_string(r.nr_dirty_cache_blocks) +
                                  " dirty blocks (" + HumanBytes(r.dirty_bytes) +
                                  ") and " + std::to_string(r.nr_pending_discards) +
                                  " discards that are not on the backing; run 'wbfs writeback' "
                                  "first, or use --force to discard them");
  }
  AlignedBuffer zero(format::kBlockSize);
  st = dev.value()->WriteAt(0, zero.data(), format::kBlockSize);
  if (st.ok()) st = dev.value()->Sync();
  if (!st.ok()) return Fail(kExitFailure, "format: " + st.message());
  std::printf("%s: superblock zeroed%s; the next mount formats the cache\n", a.pos[0].c_str(),
              r.nr_dirty_cache_blocks ? (" (" + std::to_string(r.nr_dirty_cache_blocks) +
                                         " dirty blocks discarded)").c_str() : "");
  return kExitOk;
}

// ------------------------------------------------------------------ writeback

namespace {
volatile sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }
}  // namespace

int CmdWriteback(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs writeback --backing PATH|rbd:POOL/IMAGE --cache PATH [--journal PATH|none]\n"
      "                      [--ceph-conf FILE] [--ceph-client-id ID] [--accept-loss]\n"
      "\n"
      "Offline: replays the log and writes every dirty block to the backing (sorted\n"
      "and merged, through the journal as a mount does), syncs it, then marks the\n"
      "cache clean. Afterwards the backing alone is the complete image: the way to\n"
      "detach a cache, or to recover an image when the machine that ran the mount\n"
      "is gone. Safe to interrupt (Ctrl-C) and run again. Without the cache, see\n"
      "'wbfs recover'.\n"
      "\n"
      "A cache that lost synced data (see 'wbfs check') is refused, unchanged;\n"
      "--accept-loss writes back what survives instead (skipping blocks that fail\n"
      "their checksum), rolling the image back to the last intact flush point.\n";
  Args a;
  if (int rc = ParseCommand(args, "writeback", usage, {"--accept-loss"},
                            {"--backing", "--cache", "--journal", "--ceph-conf", "--ceph-client-id"}, &a);
      rc >= 0) {
    return rc;
  }
  const std::string bpath = a.Value("--backing"), cpath = a.Value("--cache");
  if (!a.pos.empty() || bpath.empty() || cpath.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  const BackingOptions bo = CephOptions(a.Value("--ceph-conf"), a.Value("--ceph-client-id"));
  const std::string bspec = IsRbdUri(bpath) ? bpath : AbsolutePath(bpath);
  auto backing = OpenBackingOffline(bpath, bo);
  if (!backing.ok()) return OpenFail(backing.status());
  DeviceOptions co;
  co.direct = true;
  auto cache = OpenPosixDevice(cpath, co);
  if (!cache.ok()) {
    if (cache.status().code() == Status::Code::kBusy) {
      return Fail(kExitFailure, "cache " + cpath + " is in use by a mount; unmount it first");
    }
    return OpenFail(cache.status());
  }
  // Read before the engine takes the device: a blank cache has nothing to
  // write back (the engine refuses it, after applying an interrupted
  // journal unit).
  log::CacheMeta cmeta;
  const bool blank = log::ReadCacheMeta(*cache.value(), &cmeta).ok() && cmeta.blank;
  std::string warning;
  bool created = false;
  auto journal = OpenJournalFor(a.Value("--journal"), bspec, AbsolutePath(cpath), bo, *backing.value(),
                                &warning, &created);
  if (!journal.ok()) return Fail(kExitFailure, "writeback: " + journal.status().message());
  if (!warning.empty()) std::cerr << "wbfs: " << warning << "\n";
  EngineOptions eo;
  eo.background = false;
  eo.format_blank_cache = false;
  eo.accept_loss = a.Has("--accept-loss");
  eo.log = [](const std::string& m) { std::cerr << "wbfs: " << m << "\n"; };
  auto engine = Engine::Open(eo, std::move(backing.value()), std::move(cache.value()),
                             std::move(journal.value()));
  if (!engine.ok()) {
    if (created) RemoveCreatedJournal(a.Value("--journal"), bspec, bo);
    // NotFound: the engine's refusal of a blank cache, after it applied an
    // interrupted journal unit (any other refusal, e.g. a backing of the
    // wrong size or another backing's journal, is a failure).
    if (blank && engine.status().code() == Status::Code::kNotFound) {
      std::printf("%s is blank: nothing to write back\n", cpath.c_str());
      return kExitOk;
    }
    return Fail(kExitFailure, "writeback: " + engine.status().message());
  }
  Engine* e = engine.value().get();
  const EngineStats before = e->Stats();
  const uint64_t total = before.dirty_bytes;
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::atomic<bool> done{false};
  Status wst;
  std::thread worker([&] {
    wst = e->WritebackAll();
    done = true;
  });
  const bool tty = ::isatty(STDOUT_FILENO);
  auto start = std::chrono::steady_clock::now();
  auto last = start;
  bool stopping = false;
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (g_stop && !stopping) {
      stopping = true;
      (void)e->Close();  // stops the batch in flight at once; the log stays valid
    }
    const uint64_t left = e->Stats().dirty_bytes;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = secs > 0 ? static_cast<double>(total - std::min(total, left)) / secs : 0;
    if (tty) {
      int filled = total ? static_cast<int>(30 * (total - std::min(total, left)) / total) : 30;
      std::printf("\r\033[Kwriteback [%s%s] %s left, %s/s", std::string(filled, '#').c_str(),
                  std::string(30 - filled, '.').c_str(), HumanBytes(left).c_str(),
                  HumanBytes(static_cast<uint64_t>(rate)).c_str());
      std::fflush(stdout);
    } else if (std::chrono::steady_clock::now() - last >= std::chrono::seconds(5)) {
      std::printf("writeback: %s left\n", HumanBytes(left).c_str());
      std::fflush(stdout);
      last = std::chrono::steady_clock::now();
    }
  }
  worker.join();
  if (tty) std::printf("\r\033[K");
  if (stopping) {
    std::printf("writeback: interrupted with %s left; run it again to finish\n",
                HumanBytes(e->Stats().dirty_bytes).c_str());
    return 130;
  }
  if (!wst.ok()) return Fail(kExitFailure, "writeback: " + wst.message());
  Status cs = e->CloseClean();
  if (!cs.ok()) return Fail(kExitFailure, "writeback: " + cs.message());
  std::printf("writeback: %llu dirty blocks (%s) written; the cache is clean and %s alone is "
              "the image\n",
              static_cast<unsigned long long>(before.nr_dirty_cache_blocks), HumanBytes(total).c_str(),
              bpath.c_str());
  return kExitOk;
}

// ------------------------------------------------------------------ recover

int CmdRecover(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs recover --backing PATH|rbd:POOL/IMAGE [--journal PATH|rbd:POOL/IMAGE]\n"
      "                    [--ceph-conf FILE] [--ceph-client-id ID] [--break-lock] [--json]\n"
      "\n"
      "Without the cache: applies the writeback unit a crash interrupted, if the\n"
      "journal holds one, so that the backing alone is the image as it was at the\n"
      "flush point the journal names. Use it when the cache is lost; a mount with\n"
      "the cache does the same by itself. The journal defaults to BACKING.wbfs-journal\n"
      "(for an rbd: backing, the image IMAGE.wbfs-journal next to it: any host with\n"
      "access to the cluster can recover).\n"
      "\n"
      "--break-lock (rbd: only): when another client holds the image's exclusive\n"
      "lock (a dead host's mount, until librbd breaks it by itself about 30 s after\n"
      "its death), break it: that client is blocklisted and can never write to the\n"
      "image again, and what its cache held that was not written back is lost.\n";
  Args a;
  if (int rc = ParseCommand(args, "recover", usage, {"--json", "--break-lock"},
                            {"--backing", "--journal", "--ceph-conf", "--ceph-client-id"}, &a);
      rc >= 0) {
    return rc;
  }
  const bool json = a.Has("--json");
  const std::string backing_path = a.Value("--backing");
  std::string journal_path = a.Value("--journal");
  if (!a.pos.empty() || backing_path.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  BackingOptions bo = CephOptions(a.Value("--ceph-conf"), a.Value("--ceph-client-id"));
  const bool rbd = IsRbdUri(backing_path);
  if (!rbd && IsRbdUri(journal_path)) return Fail(kExitUsage, "recover: an rbd: journal needs an rbd: backing");
  if (!rbd && a.Has("--break-lock")) return Fail(kExitUsage, "recover: --break-lock is for an rbd: backing");
  std::string broken;
  bo.break_lock = a.Has("--break-lock");
  bo.broken_holder = &broken;
  auto backing = OpenBackingOffline(backing_path, bo);
  if (!backing.ok()) return OpenFail(backing.status());
  if (!broken.empty()) {
    std::fprintf(json ? stderr : stdout,
                 "recover: broke the exclusive lock of %s: that client can no longer write to %s, and "
                 "what its cache held that was not written back is not in the image\n",
                 broken.c_str(), backing_path.c_str());
  }
  Result<std::unique_ptr<Device>> dev = std::unique_ptr<Device>();
  if (rbd) {
    auto spec = RbdJournalSpec(journal_path, backing_path);
    if (!spec.ok()) return Fail(kExitUsage, spec.status().message());
    journal_path = RbdUri(spec.value());
    bool created = false;
    dev = OpenRbdJournal(spec.value(), bo, backing.value()->Identity(), false, &created);
    if (!dev.ok() && dev.status().code() == Status::Code::kNotFound) {
      return Fail(kExitUsage, "no journal image " + journal_path +
                                  " (the mount ran without one: the backing cannot be vouched for)");
    }
  } else {
    if (journal_path.empty()) journal_path = journal::DefaultPath(backing_path);
    struct stat st;
    if (::stat(journal_path.c_str(), &st) != 0) {
      return Fail(kExitUsage, "no journal at " + journal_path +
                                  " (the mount ran without one: the backing cannot be vouched for)");
    }
    dev = OpenPosixDevice(journal_path, DeviceOptions{});
  }
  if (!dev.ok()) return Fail(kExitFailure, "journal: " + dev.status().message());
  auto j = journal::Journal::Open(std::move(dev.value()), backing.value()->Size());
  if (!j.ok()) return Fail(kExitFailure, j.status().message());
  auto rep = j.value()->Recover(*backing.value());
  if (!rep.ok()) return Fail(kExitFailure, "recover: " + rep.status().message());
  const journal::RecoveryReport& r = rep.value();
  const format::FlushPoint& p = r.state.point;
  if (json) {
    nlohmann::json o;
    ctl::PutPath(&o, "backing", backing_path);
    ctl::PutPath(&o, "journal", journal_path);
    o["replayed"] = r.replayed;
    o["replayed_entry"] = r.entry_seq;
    o["replayed_bytes"] = r.bytes;
    o["torn_entry_dropped"] = r.torn_entry;
    o["applied_entries"] = r.state.applied_entry;
    o["flush_point"] = {{"known", p.chunk_seq != 0},
                        {"cache_nonce", p.cache_nonce},
                        {"chunk_seq", p.chunk_seq},
                        {"segment_id", p.segment_id},
                        {"time_ms", p.time_ms}};
    std::printf("%s\n", o.dump(2).c_str());
    return kExitOk;
  }
  if (r.replayed) {
    std::printf("recover: applied the interrupted writeback unit %llu again (%s)\n",
                static_cast<unsigned long long>(r.entry_seq), HumanBytes(r.bytes).c_str());
  } else if (r.torn_entry) {
    std::printf("recover: dropped a unit that never became durable (the backing was not touched)\n");
  } else {
    std::printf("recover: no interrupted writeback unit\n");
  }
  if (p.chunk_seq != 0) {
    std::printf("%s is the image as of flush point %s (cache %016llx)\n", backing_path.c_str(),
                FlushPointText(p.chunk_seq, p.time_ms).c_str(),
                static_cast<unsigned long long>(p.cache_nonce));
  } else if (r.state.applied_entry == 0) {
    std::printf("%s: nothing was ever written back through this journal; the backing is as it "
                "was before the cache took writes\n", backing_path.c_str());
  } else {
    std::printf("%s: the backing was last written without the journal (write_around_mode or "
                "journal none); no flush point can be vouched for\n", backing_path.c_str());
  }
  return kExitOk;
}

}  // namespace wbfs::cli
