#pragma once

#include <cstdint>
#include <string_view>

#include "kernel/common/status.h"

namespace shoal::plugin {

// The plugin kinds the kernel knows (SHOAL_KIND_* in sdk/include/shoal/plugin.h).
enum class Kind : int32_t {
  kScheduler = 1,
  kRuntime = 2,
  kNetwork = 3,
  kSecrets = 4,
  kStorage = 5,
};

inline constexpr Kind kAllKinds[] = {Kind::kScheduler, Kind::kRuntime, Kind::kNetwork,
                                     Kind::kSecrets, Kind::kStorage};

// "scheduler", "runtime", ...; "" for a value that is no kind.
std::string_view kindName(int32_t kind);
inline std::string_view kindName(Kind kind) { return kindName(static_cast<int32_t>(kind)); }
Result<Kind> parseKind(std::string_view name);
bool isKnownKind(int32_t kind);

}  // namespace shoal::plugin
