// wbfs dump: the superblock and both records, or one segment's chunks,
// as text or JSON, read with the log reader a mount uses.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/offline.h"
#include "ctl/ctl.h"
#include "log/log_reader.h"
#include "wbfs/format.h"

namespace wbfs::cli {
namespace {

using nlohmann::json;

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

int CmdDump(const std::vector<std::string>& args) {
  const char* usage =
      "usage: wbfs dump CACHE (--superblock | --segment ID) [--json]\n"
      "\n"
      "Offline: prints the superblock and both records, or the chunks of segment ID\n"
      "(header fields, and per block its backing address and 512-byte sector mask).\n";
  CommandLine cl("dump", usage, 1, 1);
  cl.Options()("superblock", "the superblock and both records")(
      "segment", boost::program_options::value<std::string>(), "the chunks of segment ID")("json", "print one JSON object");
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const std::string path = cl.words()[0];
  const bool sb_mode = cl.Has("superblock");
  const std::string seg_arg = cl.Value("segment");
  if (sb_mode == !seg_arg.empty()) return cl.UsageError();
  uint64_t seg_id = 0;
  if (!sb_mode) {
    // Ids count up from 1 and never come near 2^63.
    int64_t id = 0;
    if (!ctl::ParseInt64(seg_arg, &id) || id <= 0) {
      return Fail(kExitUsage, "dump: --segment needs a segment id (1, 2, ... up to 2^63-1), not '" + seg_arg + "'");
    }
    seg_id = static_cast<uint64_t>(id);
  }
  auto dev = OpenOffline("cache", path, false);
  if (!dev.ok()) return OpenFail(dev.status());
  Device& cache = *dev.value();
  log::CacheMeta meta;
  Status st = log::ReadCacheMeta(cache, &meta);
  if (!st.ok()) return Fail(kExitFailure, "dump: " + st.message());
  if (meta.blank) return Fail(kExitFailure, "dump: " + path + " is blank (not formatted)");
  const bool js = cl.Has("json");
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

}  // namespace wbfs::cli
