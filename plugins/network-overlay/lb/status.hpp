// The outcome of a lb call that can fail: the network-overlay libraries' one Status type.
#pragma once

#include "overlay_status.hpp"

namespace shoal::overlay::lb {

using Status = shoal::overlay::Status;

}  // namespace shoal::overlay::lb
