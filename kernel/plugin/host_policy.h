#pragma once

// The host table's policy_* slots (ABI 1.1, sdk/include/shoal/plugin.h): C entry points that
// forward to the instance's PolicyBroker, turn its Status into host->fail messages and codes,
// and let no C++ exception out. Internal to kernel/plugin (plugin_host.cpp lists them in the
// table).

#include <shoal/plugin.h>

namespace shoal::plugin::detail {

shoal_status hostPolicyOpen(shoal_instance* inst, int32_t kind, shoal_str text, shoal_policy** out);
void hostPolicyClose(shoal_instance* inst, shoal_policy* p);
shoal_status hostPolicyBind(shoal_instance* inst, shoal_policy* p, shoal_str nodes_json,
                            shoal_str group_json);
shoal_status hostPolicyUpdate(shoal_instance* inst, shoal_policy* p,
                              const shoal_policy_usage* usage);
shoal_status hostPolicyFilter(shoal_instance* inst, shoal_policy* p, uint8_t* fit, uint32_t nodes);
shoal_status hostPolicyScore(shoal_instance* inst, shoal_policy* p, const uint8_t* fit,
                             int64_t* out_score, uint32_t nodes);
shoal_status hostPolicyExplain(shoal_instance* inst, shoal_policy* p, shoal_buf* out);

}  // namespace shoal::plugin::detail
