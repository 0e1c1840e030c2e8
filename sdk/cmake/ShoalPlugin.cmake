# shoal_add_plugin(NAME SOURCES src... [OUTPUT_DIRECTORY dir])
# Builds a Shoal plugin: a MODULE library named NAME.so that exports exactly one symbol
# (shoal_plugin_describe, through the linker version script beside this file), built with hidden
# visibility, and linked with -z defs so that a missing symbol fails the build, not the dlopen.
set_property(GLOBAL PROPERTY SHOAL_PLUGIN_VERSION_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/shoal-plugin.map")

function(shoal_add_plugin name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ShoalSDK::sdk)
  get_property(_map GLOBAL PROPERTY SHOAL_PLUGIN_VERSION_SCRIPT)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS "${_map}")
  target_link_options(${name} PRIVATE "LINKER:--version-script=${_map}")
  # Sanitizer builds resolve the sanitizer runtime from the executable, so -z defs would
  # reject them; every other build keeps the check.
  get_directory_property(_opts COMPILE_OPTIONS)
  if(NOT "${CMAKE_C_FLAGS} ${CMAKE_CXX_FLAGS} ${_opts}" MATCHES "sanitize")
    target_link_options(${name} PRIVATE "LINKER:-z,defs")
  endif()
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
endfunction()
