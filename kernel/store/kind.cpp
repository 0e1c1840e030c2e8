#include "kernel/store/kind.h"

#include <string>

namespace shoal::store {

std::string_view kindName(Kind kind) {
  switch (kind) {
    case Kind::kCluster:
      return "cluster";
    case Kind::kNode:
      return "node";
    case Kind::kService:
      return "service";
    case Kind::kTask:
      return "task";
    case Kind::kNetwork:
      return "network";
    case Kind::kSecret:
      return "secret";
    case Kind::kConfig:
      return "config";
    case Kind::kVolume:
      return "volume";
    case Kind::kPolicy:
      return "policy";
  }
  return "unknown-kind";
}

Result<Kind> parseKind(std::string_view name) {
  for (Kind k : kAllKinds) {
    if (kindName(k) == name) return k;
  }
  return Status::invalidArgument("unknown object kind \"" + std::string(name) +
                                 "\" (expected cluster, node, service, task, network, secret, "
                                 "config, volume or policy)");
}

}  // namespace shoal::store
