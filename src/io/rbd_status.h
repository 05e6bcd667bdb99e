// What a librbd transfer's return value means, apart from librbd itself
// (so that a build without librbd tests it too): never a silent success.
#ifndef WBFS_IO_RBD_STATUS_H_
#define WBFS_IO_RBD_STATUS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "wbfs/status.h"

namespace wbfs {

// One read or write of `len` bytes at `off` on the image `uri` returned
// `r`: librbd answers a read with its length, a write with its length or
// (asynchronous, in some versions) 0, and a failure with -errno (a lost
// cluster: -ETIMEDOUT once the op timeout passes). Anything else (a short
// transfer, a read of 0 bytes) is an IOError too.
Status RbdTransferStatus(const std::string& uri, bool write, uint64_t off, size_t len, int64_t r);

}  // namespace wbfs

#endif  // WBFS_IO_RBD_STATUS_H_
