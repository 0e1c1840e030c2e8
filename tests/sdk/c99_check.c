/* Compiled as strict C99: proves the SDK headers are plain C a third party can use. */
#include <shoal/network.h>
#include <shoal/plugin.h>
#include <shoal/runtime.h>
#include <shoal/scheduler.h>
#include <shoal/secrets.h>
#include <shoal/storage.h>

int shoal_sdk_c99_check(void);
int shoal_sdk_c99_check(void) {
  shoal_str s = shoal_str_from("x", 1);
  shoal_policy_usage usage = {sizeof(shoal_policy_usage), 0, NULL, NULL, NULL, NULL, NULL};
  shoal_policy* policy = NULL;
  return (int)s.len + SHOAL_ABI_MAJOR + (int)usage.count + (policy == NULL ? 0 : 1);
}
