#include "wbfs/status.h"

#include <cstring>

namespace wbfs {

std::string Status::ToString() const {
  if (ok()) return "OK";
  return msg_;
}

Status PosixError(const std::string& context, int err) {
  return Status::IOError(context + ": " + std::strerror(err), err);
}

}  // namespace wbfs
