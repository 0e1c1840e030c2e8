// secrets-tmpfs: hands secrets and configs to exactly the tasks that reference them, written
// into a per-task tmpfs under the plugin's root so that secret bytes never reach a disk.
//
// This is the plugin's shell: it loads, checks its configuration and describes itself.
// materialize and release answer SHOAL_ENOTSUP until the secrets work lands (a later issue).
#include <shoal/secrets.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>

#include <Poco/JSON/Object.h>

#include <string>
#include <string_view>

namespace {

using shoal::plugins::parseConfig;
using shoal::plugins::rootValue;
using shoal::plugins::toJson;

constexpr char kName[] = "secrets-tmpfs";
constexpr char kVersion[] = "0.1.0";

class TmpfsSecrets : public shoal::sdk::Instance {
 public:
  TmpfsSecrets(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst),
        root_(rootValue(kName, *parseConfig(kName, config_json, {"root"}), kDefaultRoot)) {}

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("backing", std::string("tmpfs"));
    doc.set("root", root_);
    return reply(out, toJson(doc));
  }

  shoal_status materialize(shoal_str, shoal_str, shoal_buf*) { return notYet("materialize"); }
  shoal_status release(shoal_str) { return notYet("release"); }

 private:
  static constexpr char kDefaultRoot[] = "/run/shoal/secrets";

  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }

  std::string root_;  // where the per-task tmpfs mounts go
};

const shoal_secrets_ops kOps = [] {
  using shoal::sdk::op;
  shoal_secrets_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&TmpfsSecrets::describe>;
  o.materialize = op<&TmpfsSecrets::materialize>;
  o.release = op<&TmpfsSecrets::release>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<TmpfsSecrets>(SHOAL_KIND_SECRETS, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
