#include "kernel/plugin/plugin_kind.h"

#include <string>

namespace shoal::plugin {

std::string_view kindName(int32_t kind) {
  switch (kind) {
    case 1:
      return "scheduler";
    case 2:
      return "runtime";
    case 3:
      return "network";
    case 4:
      return "secrets";
    case 5:
      return "storage";
    default:
      return "";
  }
}

bool isKnownKind(int32_t kind) { return !kindName(kind).empty(); }

Result<Kind> parseKind(std::string_view name) {
  for (Kind k : kAllKinds) {
    if (kindName(k) == name) return k;
  }
  return Status::invalidArgument("unknown plugin kind \"" + std::string(name) +
                                 "\" (want scheduler, runtime, network, secrets or storage)");
}

}  // namespace shoal::plugin
