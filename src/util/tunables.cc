#include "wbfs/tunables.h"

namespace wbfs {

const TunableDef* FindTunable(const std::string& key) {
  for (const auto& d : kTunableDefs) {
    if (key == d.key) return &d;
  }
  return nullptr;
}

Status SetTunable(Tunables* t, const std::string& key, int64_t value) {
  const TunableDef* d = FindTunable(key);
  if (d == nullptr) return Status::InvalidArgument("unknown tunable '" + key + "'");
  if (value < d->min || value > d->max) {
    return Status::InvalidArgument(key + " must be between " + std::to_string(d->min) + " and " +
                                   std::to_string(d->max) + ", not " + std::to_string(value));
  }
  t->*(d->field) = value;
  return Status::OK();
}

}  // namespace wbfs
