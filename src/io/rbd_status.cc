// See rbd_status.h.
#include "io/rbd_status.h"

#include <cerrno>
#include <cstring>

namespace wbfs {

Status RbdTransferStatus(const std::string& uri, bool write, uint64_t off, size_t len, int64_t r) {
  const char* what = write ? "write" : "read";
  if (r == static_cast<int64_t>(len) || (write && r == 0)) return Status::OK();
  if (r >= 0) {
    return Status::IOError(uri + ": short " + what + " at offset " + std::to_string(off) + " (" +
                               std::to_string(r) + " of " + std::to_string(len) + " bytes)",
                           EIO);
  }
  const int err = r < -4095 ? EIO : static_cast<int>(-r);
  return Status::IOError(uri + ": " + what + " at offset " + std::to_string(off) + ": " + std::strerror(err), err);
}

}  // namespace wbfs
