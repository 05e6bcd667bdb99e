// See offline.h.
#include "cli/offline.h"

#include <cerrno>

#include "cli/commands.h"

namespace wbfs::cli {

namespace po = boost::program_options;

Result<std::unique_ptr<Device>> OpenOffline(const std::string& what, const std::string& path, bool write) {
  DeviceOptions o;
  o.read_only = !write;
  auto d = OpenPosixDevice(path, o);
  if (!d.ok() && d.status().code() == Status::Code::kBusy) {
    return Status::Busy(what + " " + path + " is in use by a mount (or another wbfs tool); "
                        "unmount it first");
  }
  return d;
}

Result<std::unique_ptr<Device>> OpenBackingOffline(const std::string& spec, const BackingOptions& bo) {
  if (!IsRbdUri(spec)) return OpenOffline("backing", spec, true);
  auto d = OpenBackingDevice(spec, bo);
  if (!d.ok() && d.status().code() == Status::Code::kBusy) {
    return Status::Busy(d.status().message() + " (unmount it first)");
  }
  return d;
}

void AddCephOptions(CommandLine* cl) {
  cl->Options()("ceph-conf", po::value<std::string>(), "rbd: the cluster's config (default /etc/ceph/ceph.conf)")(
      "ceph-client-id", po::value<std::string>(), "rbd: the client id (default admin)");
}

BackingOptions CephOptions(const CommandLine& cl) {
  BackingOptions bo;
  bo.ceph_conf = cl.Value("ceph-conf");
  bo.ceph_client_id = cl.Value("ceph-client-id");
  return bo;
}

int OpenFail(const Status& st) {
  const bool usage = (st.code() == Status::Code::kIOError && st.err() == ENOENT) ||
                     st.code() == Status::Code::kInvalidArgument;
  return Fail(usage ? kExitUsage : kExitFailure, st.message());
}

}  // namespace wbfs::cli
