// The rbd: openers of a wbfs built without librbd (librbd-dev was missing,
// or WBFS_RBD=OFF): files and block devices work as ever, and an rbd:
// backing is refused with what to do about it.
#include "io/backing.h"

namespace wbfs {
namespace {

Status NoRbd() {
  return Status::InvalidArgument(
      "this wbfs was built without librbd (install librbd-dev and rebuild): rbd: backings are not available");
}

}  // namespace

Result<std::unique_ptr<Device>> OpenRbdDevice(const RbdSpec&, const BackingOptions&) { return NoRbd(); }

Result<std::unique_ptr<Device>> OpenRbdJournal(const RbdSpec&, const BackingOptions&, const std::string&, bool,
                                               bool* created) {
  *created = false;
  return NoRbd();
}

Status RbdImageExists(const RbdSpec&, const BackingOptions&) { return NoRbd(); }

Status RemoveRbdJournal(const RbdSpec&, const BackingOptions&) { return NoRbd(); }

}  // namespace wbfs
