#include "cli/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ctl/ctl.h"
#include "io/backing.h"

namespace wbfs::cli {
namespace {

using nlohmann::json;

Status BadKey(const std::string& where, const std::string& key, const std::string& why) {
  return Status::InvalidArgument(where + ": " + key + ": " + why);
}

Status SetString(const std::string& key, const std::string& v, MountConfig* c) {
  if (key == "backing") c->backing = v;
  else if (key == "cache") c->cache = v;
  else if (key == "mountpoint") c->mountpoint = v;
  else if (key == "image_name") c->image_name = v;
  else if (key == "journal") c->journal = v;
  else if (key == "ceph_conf") c->ceph_conf = v;
  else if (key == "ceph_client_id") c->ceph_client_id = v;
  return Status::OK();
}

bool IsStringKey(const std::string& k) {
  return k == "backing" || k == "cache" || k == "mountpoint" || k == "image_name" ||
         k == "journal" || k == "ceph_conf" || k == "ceph_client_id";
}

// Integer keys of the mount itself (the engine's are the tunables).
struct IntKey {
  const char* key;
  int64_t min, max;
  int64_t MountConfig::*field;
};
constexpr IntKey kIntKeys[] = {
    {"restart_limit", 0, 100, &MountConfig::restart_limit},
    {"restart_interval", 1, 86400, &MountConfig::restart_interval},
};

const IntKey* FindIntKey(const std::string& k) {
  for (const IntKey& d : kIntKeys) {
    if (k == d.key) return &d;
  }
  return nullptr;
}

Status SetInt(const IntKey& d, int64_t v, MountConfig* c) {
  if (v < d.min || v > d.max) {
    return Status::InvalidArgument(std::string(d.key) + ": " + std::to_string(v) + " is out of range [" +
                                   std::to_string(d.min) + ", " + std::to_string(d.max) + "]");
  }
  c->*d.field = v;
  return Status::OK();
}

}  // namespace

std::string EncodeConfig(const MountConfig& c) {
  std::string out;
  auto put = [&out](const std::string& key, const std::string& v) {
    static const char kHex[] = "0123456789abcdef";
    out += key + "=";
    for (unsigned char ch : v) {
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
    out += "\n";
  };
  put("backing", c.backing);
  put("cache", c.cache);
  put("mountpoint", c.mountpoint);
  put("image_name", c.image_name);
  put("journal", c.journal);
  put("ceph_conf", c.ceph_conf);
  put("ceph_client_id", c.ceph_client_id);
  put("allow_other", c.allow_other ? "1" : "0");
  put("accept_loss", c.accept_loss ? "1" : "0");
  for (const IntKey& d : kIntKeys) put(d.key, std::to_string(c.*d.field));
  for (const TunableDef& d : kTunableDefs) put(d.key, std::to_string(c.tunables.*d.field));
  return out;
}

Status DecodeConfig(const std::string& text, MountConfig* c) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    const size_t eq = line.find('=');
    if (eq == std::string::npos || (line.size() - eq - 1) % 2 != 0) {
      return Status::InvalidArgument("malformed configuration line");
    }
    const std::string key = line.substr(0, eq);
    std::string v;
    for (size_t i = eq + 1; i < line.size(); i += 2) {
      auto nib = [](char h) { return h >= 'a' ? h - 'a' + 10 : h - '0'; };
      v += static_cast<char>(nib(line[i]) * 16 + nib(line[i + 1]));
    }
    int64_t n = 0;
    if (IsStringKey(key)) {
      WBFS_RETURN_IF_ERROR(SetString(key, v, c));
    } else if (key == "allow_other" || key == "accept_loss") {
      (key == "allow_other" ? c->allow_other : c->accept_loss) = v == "1";
    } else if (!ctl::ParseInt64(v, &n)) {
      return Status::InvalidArgument(key + ": not an integer");
    } else if (const IntKey* d = FindIntKey(key)) {
      WBFS_RETURN_IF_ERROR(SetInt(*d, n, c));
    } else {
      WBFS_RETURN_IF_ERROR(SetTunable(&c->tunables, key, n));  // unknown: InvalidArgument
    }
  }
  return Status::OK();
}

Status LoadConfigFile(const std::string& path, MountConfig* c) {
  // Read it whole first: a directory or an unreadable file is one sentence.
  std::string text;
  {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::InvalidArgument("config file " + path + ": cannot be read: " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument("config file " + path + ": not a regular file");
    }
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        return Status::InvalidArgument("config file " + path + ": cannot be read: " + std::strerror(err));
      }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > (1 << 20)) {
        ::close(fd);
        return Status::InvalidArgument("config file " + path + ": larger than 1 MiB");
      }
    }
    ::close(fd);
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return Status::InvalidArgument("config file " + path + ": malformed JSON at byte " +
                                   std::to_string(e.byte));
  } catch (const std::exception& e) {
    return Status::InvalidArgument("config file " + path + ": cannot be parsed: " + e.what());
  }
  const std::string where = "config file " + path;
  if (!j.is_object()) return Status::InvalidArgument(where + ": must hold one JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key.rfind("//", 0) == 0) continue;
    if (IsStringKey(key)) {
      if (!v.is_string()) return BadKey(where, key, "must be a string");
      if (v.get<std::string>().find('\0') != std::string::npos) {
        return BadKey(where, key, "must not contain a NUL character (\\u0000)");
      }
      WBFS_RETURN_IF_ERROR(SetString(key, v.get<std::string>(), c));
    } else if (key == "allow_other") {
      if (!v.is_boolean()) return BadKey(where, key, "must be true or false");
      c->allow_other = v.get<bool>();
    } else if (FindTunable(key) != nullptr) {
      if (!v.is_number_integer()) return BadKey(where, key, "must be an integer");
      Status st = SetTunable(&c->tunables, key, v.get<int64_t>());
      if (!st.ok()) return Status::InvalidArgument(where + ": " + st.message());
    } else if (const IntKey* d = FindIntKey(key)) {
      if (!v.is_number_integer()) return BadKey(where, key, "must be an integer");
      Status st = SetInt(*d, v.get<int64_t>(), c);
      if (!st.ok()) return Status::InvalidArgument(where + ": " + st.message());
    } else {
      return BadKey(where, key, "unknown key");
    }
  }
  return Status::OK();
}

Status ApplyOption(const std::string& item, MountConfig* c) {
  size_t eq = item.find('=');
  std::string key = item.substr(0, eq);
  std::string val = eq == std::string::npos ? "" : item.substr(eq + 1);
  const std::string where = "-o " + item;
  if (IsStringKey(key)) {
    if (eq == std::string::npos || val.empty()) return BadKey("-o", key, "needs a value");
    return SetString(key, val, c);
  }
  if (key == "allow_other") {
    if (eq == std::string::npos || val == "1" || val == "true") c->allow_other = true;
    else if (val == "0" || val == "false") c->allow_other = false;
    else return BadKey("-o", key, "must be true or false");
    return Status::OK();
  }
  if (FindTunable(key) != nullptr) {
    // Digits only (an optional '-'): no spaces, no '+', no trailing text.
    int64_t n = 0;
    if (!ctl::ParseInt64(val, &n)) return BadKey("-o", key, "must be a decimal integer (no spaces)");
    Status st = SetTunable(&c->tunables, key, n);
    if (!st.ok()) return Status::InvalidArgument("-o " + st.message());
    return Status::OK();
  }
  if (const IntKey* d = FindIntKey(key)) {
    int64_t n = 0;
    if (!ctl::ParseInt64(val, &n)) return BadKey("-o", key, "must be a decimal integer (no spaces)");
    Status st = SetInt(*d, n, c);
    if (!st.ok()) return Status::InvalidArgument("-o " + st.message());
    return Status::OK();
  }
  return BadKey("-o", key, "unknown key");
}

Status Validate(const MountConfig& c) {
  if (c.backing.empty()) return Status::InvalidArgument("no backing file: give --backing or the config key \"backing\"");
  if (c.cache.empty()) return Status::InvalidArgument("no cache file: give --cache or the config key \"cache\"");
  if (c.mountpoint.empty()) return Status::InvalidArgument("no mountpoint: give MOUNTPOINT or the config key \"mountpoint\"");
  if (IsRbdUri(c.backing)) {
    WBFS_RETURN_IF_ERROR(ParseRbdUri(c.backing).status());
    if (!c.journal.empty() && c.journal != "none" && !IsRbdUri(c.journal)) {
      return Status::InvalidArgument("journal " + c.journal + ": the journal of an rbd: backing lives in "
                                     "the cluster: leave journal empty (IMAGE.wbfs-journal), or give "
                                     "rbd:POOL/IMAGE or none");
    }
    if (IsRbdUri(c.journal)) WBFS_RETURN_IF_ERROR(ParseRbdUri(c.journal).status());
  } else if (!c.ceph_conf.empty() || !c.ceph_client_id.empty()) {
    return Status::InvalidArgument("ceph_conf and ceph_client_id apply only to an rbd: backing, not " + c.backing);
  } else if (IsRbdUri(c.journal)) {
    return Status::InvalidArgument("journal " + c.journal + ": an rbd: journal needs an rbd: backing");
  }
  if (c.image_name.empty() || c.image_name == "." || c.image_name == ".." ||
      c.image_name.find('/') != std::string::npos) {
    return Status::InvalidArgument("image_name: must be a plain file name");
  }
  return Status::OK();
}

}  // namespace wbfs::cli
