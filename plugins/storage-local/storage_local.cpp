// storage-local: named local volumes (directories under the plugin's root), and the bind and
// tmpfs mounts tasks ask for.
//
// This is the plugin's shell: it loads, checks its configuration and describes itself. The
// volume and mount operations answer SHOAL_ENOTSUP until the storage work lands (a later issue).
#include <shoal/storage.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace {

using shoal::plugins::parseConfig;
using shoal::plugins::rootValue;
using shoal::plugins::toJson;

constexpr char kName[] = "storage-local";
constexpr char kVersion[] = "0.1.0";

class LocalStorage : public shoal::sdk::Instance {
 public:
  LocalStorage(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst),
        root_(rootValue(kName, *parseConfig(kName, config_json, {"root"}), kDefaultRoot)) {}

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Array drivers;
    drivers.add(std::string("local"));
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("drivers", drivers);
    doc.set("root", root_);
    return reply(out, toJson(doc));
  }

  shoal_status volumeCreate(shoal_str, shoal_str, shoal_buf*) { return notYet("volume_create"); }
  shoal_status volumeRemove(shoal_str, int32_t) { return notYet("volume_remove"); }
  shoal_status volumeInspect(shoal_str, shoal_buf*) { return notYet("volume_inspect"); }
  shoal_status volumeList(shoal_buf*) { return notYet("volume_list"); }
  shoal_status mount(shoal_str, shoal_buf*) { return notYet("mount"); }
  shoal_status unmount(shoal_str, shoal_str) { return notYet("unmount"); }

 private:
  static constexpr char kDefaultRoot[] = "/var/lib/shoal/volumes";

  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }

  std::string root_;  // one directory per named volume goes here
};

const shoal_storage_ops kOps = [] {
  using shoal::sdk::op;
  shoal_storage_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&LocalStorage::describe>;
  o.volume_create = op<&LocalStorage::volumeCreate>;
  o.volume_remove = op<&LocalStorage::volumeRemove>;
  o.volume_inspect = op<&LocalStorage::volumeInspect>;
  o.volume_list = op<&LocalStorage::volumeList>;
  o.mount = op<&LocalStorage::mount>;
  o.unmount = op<&LocalStorage::unmount>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<LocalStorage>(SHOAL_KIND_STORAGE, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
