// The outcome of a dns call that can fail: the network-overlay libraries' one Status type.
#pragma once

#include "overlay_status.hpp"

namespace shoal::overlay::dns {

using Status = shoal::overlay::Status;

}  // namespace shoal::overlay::dns
