// libFuzzer target: both ends of the control protocol (src/ctl/protocol.h
// over src/ctl/ctl.h). Must never crash, hang or allocate without bound.
//
// Input: the first byte picks the end, the rest is what arrives there.
//   0: request lines for the daemon's handler (HandleControlRequest, on an
//      engine over memory disks): every reply must be one line of valid
//      UTF-8 holding a JSON object, which the CLI's decoders read back (a
//      status as a StatusReply); a request that parses is encoded back to
//      itself.
//   1: a reply line for the CLI's readers (PrintStatusReply, text and
//      --json; DecodeReply, DecodeFarewell): any bytes are either read or
//      refused with a message; a status that decodes encodes to one that
//      decodes to the same.
//   2: a path for the JSON helpers: TextForJson must give valid UTF-8, the
//      _hex twin must give the bytes back, and the strict integer parser
//      must agree with strtoll on what it accepts.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/control.h"
#include "ctl/ctl.h"
#include "ctl/protocol.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;

namespace {

struct Daemon {
  std::unique_ptr<Engine> engine;
  cli::MountConfig config;
  cli::ControlContext ctx;
  FILE* null = nullptr;
};

Daemon& TheDaemon() {
  static Daemon* d = [] {
    auto* x = new Daemon;
    auto backing = std::make_shared<test::MemDisk>(1 << 20, "backing");
    auto cache = std::make_shared<test::MemDisk>(format::kMinCacheSize, "cache");
    EngineOptions o;
    o.nr_ram_buffers = 2;
    x->engine = std::move(Engine::Open(o, test::Dev(backing), test::Dev(cache)).value());
    x->config.backing = "/b\xff\xfe.img";
    x->config.cache = "/c\xc3\xa9.img";
    x->config.mountpoint = "/mnt/\xed\xa0\x80";
    x->ctx = cli::ControlContext{&x->config, "/run/wbfs/x\x80.log", [](int, const std::string&) {}, nullptr,
                                 nullptr, nullptr};
    x->null = std::fopen("/dev/null", "w");
    std::cerr.rdbuf(nullptr);  // Fail()'s sentences
    return x;
  }();
  return *d;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "ctl_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 8192) return 0;
  Daemon& d = TheDaemon();
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      std::istringstream lines(body);
      for (std::string req; std::getline(lines, req);) {
        if (req.size() > ctl::kMaxRequest) continue;  // the server refuses it
        const std::string reply = cli::HandleControlRequest(d.engine.get(), d.ctx, req);
        Check(reply.find('\n') == std::string::npos, "a reply spans lines");
        Check(ctl::IsValidUtf8(reply), "a reply is not UTF-8");
        nlohmann::json j = nlohmann::json::parse(reply, nullptr, false);
        Check(j.is_object(), "a reply is not a JSON object");
        // The CLI reads what the daemon wrote.
        auto parsed = ctl::ParseRequest(req);
        if (!parsed.ok()) {
          Check(ctl::DecodeReply(reply).code() == Status::Code::kInvalidArgument,
                "a refused request's reply does not read as an error");
          continue;
        }
        auto again = ctl::ParseRequest(ctl::EncodeRequest(parsed.value()));
        Check(again.ok() && ctl::EncodeRequest(again.value()) == ctl::EncodeRequest(parsed.value()),
              "a request does not encode back to itself");
        if (parsed.value().verb == ctl::Verb::kStatus) {
          Check(ctl::DecodeStatus(reply).ok(), "status undecodable");
          Check(cli::PrintStatusReply(reply, false, d.null) == 0, "status unreadable");
        } else if (parsed.value().verb != ctl::Verb::kSet) {
          Check(ctl::DecodeReply(reply).ok(), "a reply reads as an error");
        }
      }
      break;
    }
    case 1: {
      (void)cli::PrintStatusReply(body, false, d.null);
      (void)cli::PrintStatusReply(body, true, d.null);
      (void)ctl::DecodeReply(body);
      (void)ctl::DecodeFarewell(body);
      auto st = ctl::DecodeStatus(body);
      if (st.ok()) {
        const std::string line = ctl::EncodeStatus(st.value());
        auto back = ctl::DecodeStatus(line);
        Check(back.ok(), "a decoded status does not decode again");
        Check(ctl::EncodeStatus(back.value()) == line, "a status changes in a round trip");
      }
      break;
    }
    case 2: {
      Check(ctl::IsValidUtf8(ctl::TextForJson(body)), "TextForJson gave invalid UTF-8");
      nlohmann::json j;
      ctl::PutPath(&j, "p", body);
      const std::string dumped = j.dump();  // throws on invalid UTF-8
      if (j.contains("p_hex")) {
        std::string hex = j["p_hex"].get<std::string>(), back;
        for (size_t i = 0; i + 1 < hex.size(); i += 2) {
          back += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
        }
        Check(back == body, "the _hex twin lost bytes");
      } else {
        Check(j["p"].get<std::string>() == body, "a valid UTF-8 path was changed");
      }
      int64_t v = 0;
      if (ctl::ParseInt64(body, &v)) {
        errno = 0;
        char* end = nullptr;
        long long ref = std::strtoll(body.c_str(), &end, 10);
        Check(errno == 0 && *end == '\0' && ref == v, "ParseInt64 disagrees with strtoll");
        Check(!body.empty() && (body[0] == '-' || (body[0] >= '0' && body[0] <= '9')), "sign or space");
      }
      break;
    }
  }
  return 0;
}
