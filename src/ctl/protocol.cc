#include "ctl/protocol.h"

#include <climits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "ctl/ctl.h"
#include "wbfs/format.h"
#include "wbfs/tunables.h"

namespace wbfs::ctl {

using nlohmann::json;

// ------------------------------------------------------------------ requests

const VerbDef& DefOf(Verb v) {
  for (const VerbDef& d : kVerbs) {
    if (d.verb == v) return d;
  }
  return kVerbs[0];  // unreachable: every verb has its entry
}

const VerbDef* FindVerb(const std::string& name) {
  for (const VerbDef& d : kVerbs) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

std::string EncodeRequest(const Request& r) {
  std::string line = DefOf(r.verb).name;
  if (r.verb == Verb::kSet) line += " " + r.key + " " + std::to_string(r.value);
  return line;
}

Result<Request> ParseRequest(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;) words.push_back(w);
  const VerbDef* d = words.empty() ? nullptr : FindVerb(words[0]);
  Request r;
  if (d != nullptr && d->verb == Verb::kSet) {
    if (words.size() != 3 || !ParseInt64(words[2], &r.value)) {
      return Status::InvalidArgument("set needs KEY VALUE (a decimal integer)");
    }
    r.verb = d->verb;
    r.key = words[1];
    return r;
  }
  if (d == nullptr || words.size() != 1) {
    return Status::InvalidArgument("unknown request '" + TextForJson(line.substr(0, 64)) + "'");
  }
  r.verb = d->verb;
  return r;
}

// ------------------------------------------------------------------ replies

std::string OkReply() { return json{{"ok", true}}.dump(); }

std::string PidReply(int64_t pid) { return json{{"pid", pid}}.dump(); }

std::string ErrorReply(const std::string& why) { return json{{"error", TextForJson(why)}}.dump(); }

std::string FarewellReply(int exit_code, const std::string& why) {
  json j{{"exit", exit_code}};
  if (!why.empty()) j["error"] = TextForJson(why);
  return j.dump();
}

namespace {

// The daemon's error, if `j` is an error reply: {"error": ...} without a
// "pid" (a status reply has an "error" too: why the cache failed).
std::optional<std::string> ErrorOf(const json& j) {
  if (!j.is_object() || j.contains("pid") || !j.contains("error")) return std::nullopt;
  const json& e = j["error"];
  return e.is_string() ? e.get<std::string>() : e.dump();
}

}  // namespace

Status DecodeReply(const std::string& line, json* out) {
  json j = json::parse(line, nullptr, false);
  if (!j.is_object()) return Status::Corruption("the daemon sent a malformed reply");
  if (auto e = ErrorOf(j)) return Status::InvalidArgument(*e);
  if (out != nullptr) *out = std::move(j);
  return Status::OK();
}

std::optional<Farewell> DecodeFarewell(const std::string& line) {
  json j = json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("exit") || !j["exit"].is_number_integer()) return std::nullopt;
  Farewell f;
  f.exit = j["exit"].get<int64_t>();
  if (j.contains("error") && j["error"].is_string()) f.error = j["error"].get<std::string>();
  return f;
}

// ------------------------------------------------------------------ status

namespace {

// Keys a reader may miss: added after the first release (an older daemon
// does not send them) or informative only. Every other key must be there.
enum Need : bool { kOptional = false, kRequired = true };

// One key: the member of Owner it carries, and whether a reader needs it.
template <typename T, typename Owner = EngineStats>
struct Field {
  const char* key;
  T Owner::*member;
  Need need;
};

// The status schema: the keys that carry one EngineStats field as it is.
// (The keys built otherwise are in to_json and DecodeStatus below.)
constexpr Field<uint64_t> kCounts[] = {
    {"image_size", &EngineStats::image_size, kRequired},
    {"segment_size", &EngineStats::segment_size, kRequired},
    {"nr_segments", &EngineStats::nr_segments, kRequired},
    {"nr_cache_blocks", &EngineStats::nr_cache_blocks, kRequired},
    {"current_id", &EngineStats::current_id, kRequired},
    {"last_flushed_id", &EngineStats::last_flushed_id, kRequired},
    {"last_writeback_id", &EngineStats::last_writeback_id, kRequired},
    {"nr_dirty_cache_blocks", &EngineStats::nr_dirty_cache_blocks, kRequired},
    {"nr_partial_flushed", &EngineStats::nr_partial_flushed, kRequired},
    {"nr_cached_blocks", &EngineStats::nr_cached_blocks, kRequired},
    {"nr_cur_batched_writeback", &EngineStats::nr_cur_batched_writeback, kRequired},
    {"nr_writeback_waits", &EngineStats::nr_writeback_waits, kRequired},
    {"nr_staged_blocks", &EngineStats::nr_staged_blocks, kRequired},
    {"nr_staging", &EngineStats::nr_staging, kRequired},
    {"discarded_bytes", &EngineStats::discarded_bytes, kRequired},
    {"pending_discards", &EngineStats::pending_discards, kOptional},
    {"nr_writeback_units", &EngineStats::nr_writeback_units, kOptional},
    {"journal_bytes_written", &EngineStats::journal_bytes_written, kRequired},
    // What losing the cache now would cost.
    {"dirty_bytes", &EngineStats::dirty_bytes, kRequired},
    {"user_bytes_written", &EngineStats::user_bytes_written, kRequired},
    {"cache_bytes_written", &EngineStats::cache_bytes_written, kRequired},
    {"backing_bytes_written", &EngineStats::backing_bytes_written, kRequired},
    {"backing_fill_bytes", &EngineStats::backing_fill_bytes, kOptional},
    {"replayed_chunks", &EngineStats::replayed_chunks, kOptional},
    {"dropped_chunks", &EngineStats::dropped_chunks, kOptional},
    {"nr_checksum_errors", &EngineStats::nr_checksum_errors, kOptional},
    {"cache_prefill_bytes", &EngineStats::cache_prefill_bytes, kOptional},
    // Absent from older daemons: DecodeStatus derives them from the counts.
    {"cache_data_bytes", &EngineStats::cache_data_bytes, kOptional},
    {"cached_bytes", &EngineStats::cached_bytes, kOptional},
};
constexpr Field<int64_t> kSigned[] = {
    {"backing_utilization", &EngineStats::backing_utilization, kRequired},  // -1: not sampled
};
constexpr Field<bool> kFlags[] = {
    {"dropping_caches", &EngineStats::dropping_caches, kRequired},
    {"writeback_failing", &EngineStats::writeback_failing, kRequired},
    {"journal_replayed", &EngineStats::journal_replayed, kOptional},
    {"formatted", &EngineStats::formatted, kOptional},
    {"prefilling", &EngineStats::prefilling, kOptional},
    {"failed", &EngineStats::failed, kRequired},
};
// Texts (sent in display form). Two more are sent only when they say
// something: prefill_stopped when not empty, error when failed.
constexpr Field<std::string> kTexts[] = {
    {"utilization_source", &EngineStats::utilization_source, kRequired},
    {"writeback_error", &EngineStats::writeback_error, kOptional},  // empty unless failing
};
// The daemon's paths, sent by PutPath (see ctl.h).
using PathField = Field<std::string, StatusReply>;
constexpr PathField kPaths[] = {
    {"mountpoint", &StatusReply::mountpoint, kRequired},
    {"backing", &StatusReply::backing, kRequired},
    {"cache", &StatusReply::cache, kRequired},
    {"log", &StatusReply::log, kOptional},
};
constexpr const char* kJournalNone = "none";  // "journal" when there is none

const char* TypeName(uint64_t*) { return "an unsigned integer"; }
const char* TypeName(int64_t*) { return "an integer"; }
const char* TypeName(bool*) { return "true or false"; }
const char* TypeName(std::string*) { return "a string"; }

bool Take(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}
bool Take(const json& v, int64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = v.get<int64_t>();
  return true;
}
bool Take(const json& v, bool* out) {
  if (!v.is_boolean()) return false;
  *out = v.get<bool>();
  return true;
}
bool Take(const json& v, std::string* out) {
  if (!v.is_string()) return false;
  *out = v.get<std::string>();
  return true;
}

// Reads an untrusted object; the first thing wrong is kept in `error`,
// after which every read is a no-op.
class Reader {
 public:
  // The value of obj[key] into *out; absent: left as is, and an error if
  // required.
  template <typename T>
  void Get(const json& obj, const std::string& key, T* out, Need need = kRequired) {
    if (!error.empty()) return;
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (need == kRequired) error = key + " is missing";
    } else if (!Take(*it, out)) {
      error = key + " is not " + TypeName(out);
    }
  }
  // An object under `key` (required), or null.
  const json* Object(const json& obj, const std::string& key) {
    if (!error.empty()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_object()) {
      error = key + (it == obj.end() ? " is missing" : " is not an object");
      return nullptr;
    }
    return &*it;
  }
  // A path sent by PutPath: its exact bytes from KEY_hex when there.
  void Path(const json& obj, const std::string& key, std::string* out, Need need) {
    Get(obj, key, out, need);
    std::string hex;
    Get(obj, key + "_hex", &hex, kOptional);
    if (!error.empty() || hex.empty()) return;
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size() && hex.size() % 2 == 0; i += 2) {
      const int hi = HexDigit(hex[i]), lo = HexDigit(hex[i + 1]);
      if (hi < 0 || lo < 0) break;
      bytes += static_cast<char>(hi * 16 + lo);
    }
    if (bytes.size() * 2 != hex.size()) {
      error = key + "_hex is not hex";
      return;
    }
    *out = bytes;
  }
  std::string error;

 private:
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
};

}  // namespace

StatusReply MakeStatusReply(const EngineStats& stats, int64_t pid, const std::string& mountpoint,
                            const std::string& backing, const std::string& cache,
                            const std::string& log, uint64_t now_ms) {
  StatusReply r;
  r.pid = pid;
  r.mountpoint = mountpoint;
  r.backing = backing;
  r.cache = cache;
  r.log = log;
  r.stats = stats;
  const uint64_t since = stats.oldest_unapplied_ms;
  r.oldest_dirty_age_ms = since == 0 || now_ms < since ? 0 : now_ms - since;
  for (const TunableDef& d : kTunableDefs) r.tunables[d.key] = stats.tunables.*(d.field);
  return r;
}

void to_json(json& j, const StatusReply& r) {
  const EngineStats& s = r.stats;
  j = json::object();
  j["pid"] = r.pid;
  for (const PathField& f : kPaths) PutPath(&j, f.key, r.*(f.member));
  PutPath(&j, "journal", s.journal ? s.journal_name : kJournalNone);
  for (const auto& f : kCounts) j[f.key] = s.*(f.member);
  for (const auto& f : kSigned) j[f.key] = s.*(f.member);
  for (const auto& f : kFlags) j[f.key] = s.*(f.member);
  for (const auto& f : kTexts) j[f.key] = TextForJson(s.*(f.member));
  if (!s.prefill_stopped.empty()) j["prefill_stopped"] = TextForJson(s.prefill_stopped);
  if (s.failed) j["error"] = TextForJson(s.error);
  j["oldest_dirty_age_ms"] = r.oldest_dirty_age_ms;
  if (!r.backing_lock.empty()) j["backing_lock"] = TextForJson(r.backing_lock);
  if (!r.owner_record.empty()) j["owner_record"] = TextForJson(r.owner_record);
  if (r.supervisor_pid > 0) {
    j["supervisor"] = {{"pid", r.supervisor_pid},
                       {"restarts", r.restarts},
                       {"last_restart", TextForJson(r.last_restart)},
                       {"last_restart_age_ms", r.last_restart_age_ms},
                       {"last_recovery_ms", r.last_recovery_ms}};
  } else if (!r.no_supervisor.empty()) {
    j["no_supervisor"] = TextForJson(r.no_supervisor);
  }
  j["backing_flush_point"] = {{"chunk_seq", s.backing_point_seq}, {"time_ms", s.backing_point_ms}};
  json stat = json::object();
  for (unsigned i = 0; i < s.stat.size(); i++) stat[StatName(i)] = s.stat[i];
  j["stat"] = stat;
  j["tunables"] = r.tunables;
}

std::string EncodeStatus(const StatusReply& r) { return json(r).dump(); }

Result<StatusReply> DecodeStatus(const std::string& line) {
  const json j = json::parse(line, nullptr, false);
  if (auto e = ErrorOf(j)) return Status::InvalidArgument(*e);
  if (!j.is_object()) return Status::Corruption("the daemon sent a malformed reply to 'status'");
  StatusReply r;
  EngineStats& s = r.stats;
  Reader in;
  in.Get(j, "pid", &r.pid);
  for (const PathField& f : kPaths) in.Path(j, f.key, &(r.*(f.member)), f.need);
  in.Path(j, "journal", &s.journal_name, kRequired);
  s.journal = s.journal_name != kJournalNone;
  if (!s.journal) s.journal_name.clear();
  for (const auto& f : kCounts) in.Get(j, f.key, &(s.*(f.member)), f.need);
  for (const auto& f : kSigned) in.Get(j, f.key, &(s.*(f.member)), f.need);
  for (const auto& f : kFlags) in.Get(j, f.key, &(s.*(f.member)), f.need);
  for (const auto& f : kTexts) in.Get(j, f.key, &(s.*(f.member)), f.need);
  in.Get(j, "prefill_stopped", &s.prefill_stopped, kOptional);
  in.Get(j, "error", &s.error, s.failed ? kRequired : kOptional);
  in.Get(j, "oldest_dirty_age_ms", &r.oldest_dirty_age_ms);
  in.Get(j, "backing_lock", &r.backing_lock, kOptional);
  in.Get(j, "owner_record", &r.owner_record, kOptional);
  in.Get(j, "no_supervisor", &r.no_supervisor, kOptional);
  if (j.contains("supervisor")) {
    if (const json* sv = in.Object(j, "supervisor")) {
      in.Get(*sv, "pid", &r.supervisor_pid);
      in.Get(*sv, "restarts", &r.restarts);
      in.Get(*sv, "last_restart", &r.last_restart);
      in.Get(*sv, "last_restart_age_ms", &r.last_restart_age_ms);
      in.Get(*sv, "last_recovery_ms", &r.last_recovery_ms);
    }
  }
  if (const json* fp = in.Object(j, "backing_flush_point")) {
    in.Get(*fp, "chunk_seq", &s.backing_point_seq);
    in.Get(*fp, "time_ms", &s.backing_point_ms);
  }
  if (const json* stat = in.Object(j, "stat")) {
    for (unsigned i = 0; i < s.stat.size(); i++) in.Get(*stat, StatName(i), &s.stat[i]);
  }
  if (const json* tun = in.Object(j, "tunables")) {
    for (const auto& [key, value] : tun->items()) in.Get(*tun, key, &r.tunables[key]);
  }
  if (!in.error.empty()) {
    return Status::Corruption("the daemon sent a malformed reply to 'status': " + in.error);
  }
  // An older daemon sends the counts of 4 KiB blocks only.
  if (!j.contains("cache_data_bytes")) s.cache_data_bytes = s.nr_cache_blocks * format::kBlockSize;
  if (!j.contains("cached_bytes")) s.cached_bytes = s.nr_cached_blocks * format::kBlockSize;
  return r;
}

}  // namespace wbfs::ctl
