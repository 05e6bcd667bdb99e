// The control protocol spoken over the socket of src/ctl/ctl.h, defined
// once for both ends: the daemon (src/cli/control.cc answers requests) and
// the CLI (wbfs status, message, umount read the replies).
//
// A request is one line of words: a verb of kVerbs and its arguments. A
// reply is one line holding a JSON object: {"ok":true}, {"pid":N}, a status
// object (StatusReply), or {"error":"why"}; the daemon's last line to every
// connection when it exits is a farewell, {"exit":N[,"error":"why"]}.
//
// Replies are untrusted on the CLI's side: the Decode functions accept any
// bytes and say what is wrong with them rather than throw.
#ifndef WBFS_CTL_PROTOCOL_H_
#define WBFS_CTL_PROTOCOL_H_

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>

#include "wbfs/engine.h"
#include "wbfs/status.h"

namespace wbfs::ctl {

// ------------------------------------------------------------------ requests

enum class Verb { kStatus, kPid, kSet, kClearStat, kDropCaches, kRestart };

struct VerbDef {
  Verb verb;
  const char* name;  // the request's first word
  const char* args;  // what follows it ("" for none)
  // What it does, for `wbfs message --help`; null for the verbs that are
  // not messages (the CLI sends them itself). The message of `set` is
  // written "KEY VALUE", without the verb, as dmsetup's.
  const char* help;
};

inline constexpr VerbDef kVerbs[] = {
    {Verb::kStatus, "status", "", nullptr},
    {Verb::kPid, "pid", "", nullptr},
    {Verb::kSet, "set", "KEY VALUE", "sets an online tunable"},
    {Verb::kClearStat, "clear_stat", "", "zeroes the counters"},
    {Verb::kDropCaches, "drop_caches", "",
     "writes every dirty block and pending discard back and returns when none is left "
     "(Ctrl-C stops the waiting, not the writeback)"},
    {Verb::kRestart, "restart", "", nullptr},  // wbfs restart
};

// The entry of kVerbs for a verb, or for a request's first word (null if
// none).
const VerbDef& DefOf(Verb v);
const VerbDef* FindVerb(const std::string& name);

struct Request {
  Request(Verb v = Verb::kStatus, std::string k = "", int64_t val = 0)  // NOLINT: implicit by design
      : verb(v), key(std::move(k)), value(val) {}
  Verb verb;
  std::string key;  // kSet: the tunable
  int64_t value;    // kSet: its value
};

// The request line (without the newline).
std::string EncodeRequest(const Request& r);
// Parses a request line: any bytes. Words are separated by white space.
// On failure, InvalidArgument with the sentence to send back (valid UTF-8).
Result<Request> ParseRequest(const std::string& line);

// ------------------------------------------------------------------ replies

std::string OkReply();                              // {"ok":true}
std::string PidReply(int64_t pid);                  // {"pid":N}
std::string ErrorReply(const std::string& why);     // {"error":"why"}, why made UTF-8
std::string FarewellReply(int exit_code, const std::string& why = "");

// A reply to a request other than status: OK (the object in *out if
// given), Corruption if it is no object, or InvalidArgument carrying the
// daemon's error.
Status DecodeReply(const std::string& line, nlohmann::json* out = nullptr);

struct Farewell {
  int64_t exit = 0;
  std::string error;  // empty if none given
};
// The farewell line (see Client::WaitForExit), nullopt unless it is one.
std::optional<Farewell> DecodeFarewell(const std::string& line);

// ------------------------------------------------------------------ status

// The reply to "status": the engine's counters and the daemon's setting.
// Its JSON keys are the field names of EngineStats where one exists (see
// the table in protocol.cc), and old keys are kept when new ones come.
struct StatusReply {
  int64_t pid = 0;
  // Paths as the daemon has them (any bytes): a path that is not UTF-8
  // travels in display form under KEY and exactly under KEY_hex.
  std::string mountpoint, backing, cache;
  std::string log;  // "syslog", "stderr" or the log file
  // Ms since stats.oldest_unapplied_ms (0 when nothing is unapplied): the
  // reply carries an age, not the daemon's clock.
  uint64_t oldest_dirty_age_ms = 0;
  // A shared backing (RBD) only, sent when not empty: who holds its lock,
  // and its "dirty elsewhere" record as found ("none" when there is none).
  std::string backing_lock;
  std::string owner_record;
  // The mount's supervisor (src/cli/supervisor.h); pid 0: none, and
  // `no_supervisor` says why (sent only then).
  int64_t supervisor_pid = 0;
  std::string no_supervisor;
  uint64_t restarts = 0;           // daemons started after the first
  std::string last_restart;        // how the last daemon ended ("" if none)
  uint64_t last_restart_age_ms = 0;
  int64_t last_recovery_ms = -1;   // its successor took this long to serve; -1: unknown
  // The tunables by key (the daemon's whole table, even keys this CLI does
  // not know).
  std::map<std::string, int64_t> tunables;
  // The engine's side. Decoding fills what the reply carries; counters it
  // does not carry (nr_chunks_written, nr_cache_syncs, ...) stay 0. The
  // texts writeback_error, prefill_stopped and error are sent in display
  // form (valid UTF-8).
  EngineStats stats;
};

// The daemon's reply for `stats` at wall-clock `now_ms`.
StatusReply MakeStatusReply(const EngineStats& stats, int64_t pid, const std::string& mountpoint,
                            const std::string& backing, const std::string& cache,
                            const std::string& log, uint64_t now_ms);

void to_json(nlohmann::json& j, const StatusReply& r);
// The line the daemon sends.
std::string EncodeStatus(const StatusReply& r);
// The CLI's reading of a status reply line: Corruption ("malformed ...")
// naming what is wrong, or InvalidArgument with the daemon's error.
Result<StatusReply> DecodeStatus(const std::string& line);

}  // namespace wbfs::ctl

#endif  // WBFS_CTL_PROTOCOL_H_
