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
  return (int)s.len + SHOAL_ABI_MAJOR;
}
