// The control protocol (src/ctl/protocol.h): requests and the status schema
// survive a round trip between the daemon's encoding and the CLI's reading.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "ctl/protocol.h"
#include "wbfs/format.h"

using namespace wbfs;
using nlohmann::json;

namespace {

EngineStats SomeStats() {
  EngineStats s;
  s.image_size = 1 << 30;
  s.segment_size = 512 << 10;
  s.nr_segments = 100;
  s.nr_cache_blocks = 12700;
  s.cache_data_bytes = 12700ull * format::kBlockSize;
  s.nr_dirty_cache_blocks = 7;
  s.dirty_bytes = 7 * format::kBlockSize;
  s.nr_cached_blocks = 30;
  s.cached_bytes = 30 * format::kBlockSize;
  s.current_id = 9;
  s.last_flushed_id = 8;
  s.last_writeback_id = 3;
  s.pending_discards = 2;
  s.backing_utilization = -1;
  s.utilization_source = "sda";
  s.writeback_failing = true;
  s.writeback_error = "write: No space left on device";
  s.journal = true;
  s.journal_name = "/b.img.wbfs-journal";
  s.backing_point_seq = 41;
  s.backing_point_ms = 1700000000000;
  s.oldest_unapplied_ms = 1000;
  s.prefill_stopped = "ENOSPC";
  for (unsigned i = 0; i < s.stat.size(); i++) s.stat[i] = i * 3 + 1;
  s.tunables.writeback_threshold = 70;
  s.failed = true;
  s.error = "cache write failed";
  return s;
}

ctl::StatusReply Decode(const std::string& line) {
  auto r = ctl::DecodeStatus(line);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return r.value();
}

}  // namespace

TEST_CASE("every verb's request encodes and parses back") {
  for (const ctl::VerbDef& d : ctl::kVerbs) {
    ctl::Request r{d.verb, d.verb == ctl::Verb::kSet ? "writeback_threshold" : "", d.verb == ctl::Verb::kSet ? -5 : 0};
    auto back = ctl::ParseRequest(ctl::EncodeRequest(r));
    REQUIRE(back.ok());
    CHECK(back.value().verb == d.verb);
    CHECK(back.value().key == r.key);
    CHECK(back.value().value == r.value);
    CHECK(&ctl::DefOf(d.verb) == &d);
    CHECK(ctl::FindVerb(d.name) == &d);
  }
  CHECK(ctl::EncodeRequest({ctl::Verb::kSet, "max_dirty_age", 30}) == "set max_dirty_age 30");
  CHECK(!ctl::ParseRequest("status now").ok());
  CHECK(!ctl::ParseRequest("set writeback_threshold 70abc").ok());
  CHECK(!ctl::ParseRequest("").ok());
  CHECK(ctl::ParseRequest("\tstatus \r").ok());
}

TEST_CASE("a status reply round-trips through its JSON") {
  const EngineStats s = SomeStats();
  const auto r = ctl::MakeStatusReply(s, 1234, "/mnt/\xff", "/b.img", "/c.img", "syslog", 3500);
  CHECK(r.oldest_dirty_age_ms == 2500);
  const std::string line = ctl::EncodeStatus(r);
  const json j = json::parse(line);
  // The old keys stay (users parse `wbfs status --json`), bytes beside counts.
  CHECK(j["nr_dirty_cache_blocks"] == 7);
  CHECK(j["dirty_bytes"] == 7 * format::kBlockSize);
  CHECK(j["cache_data_bytes"] == 12700ull * format::kBlockSize);
  CHECK(j["cached_bytes"] == 30 * format::kBlockSize);
  CHECK(j["mountpoint"] == "/mnt/\\xFF");
  CHECK(j["mountpoint_hex"] == "2f6d6e742fff");
  CHECK(j["journal"] == "/b.img.wbfs-journal");
  CHECK(j["backing_flush_point"]["chunk_seq"] == 41);
  CHECK(j["stat"]["write_hit_buffer_full"] == s.stat[kStatWrite | kStatHit | kStatBuffer | kStatFull]);
  CHECK(j["tunables"]["writeback_threshold"] == 70);
  CHECK(j["error"] == "cache write failed");

  const ctl::StatusReply d = Decode(line);
  CHECK(d.pid == 1234);
  CHECK(d.mountpoint == "/mnt/\xff");  // the exact bytes, from mountpoint_hex
  CHECK(d.log == "syslog");
  CHECK(d.oldest_dirty_age_ms == 2500);
  CHECK(d.tunables == r.tunables);
  CHECK(d.stats.stat == s.stat);
  CHECK(d.stats.dirty_bytes == s.dirty_bytes);
  CHECK(d.stats.journal);
  CHECK(d.stats.journal_name == s.journal_name);
  CHECK(d.stats.backing_point_ms == s.backing_point_ms);
  CHECK(d.stats.writeback_error == s.writeback_error);
  CHECK(d.stats.prefill_stopped == s.prefill_stopped);
  CHECK(d.stats.error == s.error);
  CHECK(ctl::EncodeStatus(d) == line);
  CHECK(d.supervisor_pid == 0);
  CHECK_FALSE(j.contains("supervisor"));
}

TEST_CASE("the supervisor's part of a status reply round-trips") {
  auto r = ctl::MakeStatusReply(SomeStats(), 1234, "/mnt", "/b.img", "/c.img", "syslog", 3500);
  r.supervisor_pid = 1200;
  r.restarts = 3;
  r.last_restart = "killed by signal 9 (Killed)";
  r.last_restart_age_ms = 1500;
  r.last_recovery_ms = 83;
  const std::string line = ctl::EncodeStatus(r);
  CHECK(json::parse(line)["supervisor"]["restarts"] == 3);
  const ctl::StatusReply d = Decode(line);
  CHECK(d.supervisor_pid == 1200);
  CHECK(d.restarts == 3);
  CHECK(d.last_restart == r.last_restart);
  CHECK(d.last_restart_age_ms == 1500);
  CHECK(d.last_recovery_ms == 83);
  CHECK(ctl::EncodeStatus(d) == line);

  r.supervisor_pid = 0;
  r.no_supervisor = "restart_limit is 0";
  const ctl::StatusReply n = Decode(ctl::EncodeStatus(r));
  CHECK(n.supervisor_pid == 0);
  CHECK(n.no_supervisor == "restart_limit is 0");
  // A supervisor object that is not one is a malformed reply.
  json bad = json::parse(line);
  bad["supervisor"] = 7;
  CHECK(ctl::DecodeStatus(bad.dump()).status().code() == Status::Code::kCorruption);
}

TEST_CASE("status decoding: no journal, an older daemon, malformed and refused replies") {
  EngineStats s = SomeStats();
  s.journal = false;
  s.failed = false;
  json j = json::parse(ctl::EncodeStatus(ctl::MakeStatusReply(s, 1, "/m", "/b", "/c", "stderr", 0)));
  CHECK(j["journal"] == "none");
  CHECK(!j.contains("error"));
  CHECK(!Decode(j.dump()).stats.journal);
  // A file backing: no lock holder, no dirty record; an RBD one: both.
  CHECK(!j.contains("backing_lock"));
  CHECK(!j.contains("owner_record"));
  auto rbd = ctl::MakeStatusReply(s, 1, "/m", "rbd:p/i", "/c", "stderr", 0);
  rbd.backing_lock = "the client 'client.4171' (wbfs on host h, pid 1, since 2026-12-03T13:00:00Z)";
  rbd.owner_record = "wbfs-owner/1 nonce=00000000000000ab host=h flush_seq=0";
  const ctl::StatusReply rd = Decode(ctl::EncodeStatus(rbd));
  CHECK(rd.backing_lock == rbd.backing_lock);
  CHECK(rd.owner_record == rbd.owner_record);

  // An older daemon sent block counts only, and none of the keys added
  // with discards, gap fill or the prefill (a CLI upgraded while it still
  // serves a mount must read its status and wait for its drop_caches).
  j.erase("cache_data_bytes");
  j.erase("cached_bytes");
  j.erase("log");
  for (const char* k : {"pending_discards", "backing_fill_bytes", "cache_prefill_bytes", "prefilling"}) j.erase(k);
  const ctl::StatusReply old = Decode(j.dump());
  CHECK(old.stats.cache_data_bytes == s.cache_data_bytes);
  CHECK(old.stats.cached_bytes == s.cached_bytes);
  CHECK(old.log.empty());

  json bad = j;
  bad.erase("dirty_bytes");
  auto r = ctl::DecodeStatus(bad.dump());
  CHECK(r.status().code() == Status::Code::kCorruption);
  CHECK(r.status().message().find("dirty_bytes is missing") != std::string::npos);
  bad = j;
  bad["failed"] = true;  // and no "error"
  CHECK(!ctl::DecodeStatus(bad.dump()).ok());
  bad = j;
  bad["stat"]["read_miss_cache_full"] = -1;
  CHECK(!ctl::DecodeStatus(bad.dump()).ok());
  bad = j;
  bad["backing_hex"] = "4x";
  CHECK(!ctl::DecodeStatus(bad.dump()).ok());
  CHECK(!ctl::DecodeStatus("[1]").ok());
  CHECK(!ctl::DecodeStatus("\xff").ok());

  r = ctl::DecodeStatus(ctl::ErrorReply("busy"));
  CHECK(r.status().code() == Status::Code::kInvalidArgument);
  CHECK(r.status().message() == "busy");
}

TEST_CASE("other replies and the farewell") {
  CHECK(ctl::DecodeReply(ctl::OkReply()).ok());
  json pid;
  CHECK(ctl::DecodeReply(ctl::PidReply(7), &pid).ok());
  CHECK(pid["pid"] == 7);
  const Status e = ctl::DecodeReply(ctl::ErrorReply("no \xff"));
  CHECK(e.code() == Status::Code::kInvalidArgument);
  CHECK(e.message() == "no \\xFF");
  CHECK(ctl::DecodeReply("nonsense").code() == Status::Code::kCorruption);
  auto f = ctl::DecodeFarewell(ctl::FarewellReply(1, "closing the cache: EIO"));
  REQUIRE(f);
  CHECK(f->exit == 1);
  CHECK(f->error == "closing the cache: EIO");
  f = ctl::DecodeFarewell(ctl::FarewellReply(0));
  REQUIRE(f);
  CHECK(f->exit == 0);
  CHECK(f->error.empty());
  CHECK(!ctl::DecodeFarewell("{\"ok\":true}"));
}
