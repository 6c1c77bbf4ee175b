# Installation and packaging: `cmake --install build` puts the binary, its man page, an example
# config and policy, the systemd unit and the docs in the usual places; `cpack` (run in build/)
# makes a .deb of the same. Included once by the top-level CMakeLists.txt, after src/.
include(GNUInstallDirs)
# `cmake --install` and cpack install what is built; they do not build every test first
# (scripts/package.sh builds the binary and its man page).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)

# The man page, generated from the binary's own --help texts at build time.
set(COUNTERSIGN_MAN_PAGE ${CMAKE_BINARY_DIR}/man/countersign.1)
add_custom_command(OUTPUT ${COUNTERSIGN_MAN_PAGE}
  COMMAND ${CMAKE_COMMAND} -DBIN=$<TARGET_FILE:countersign> -DOUTPUT=${COUNTERSIGN_MAN_PAGE}
    -DVERSION=${PROJECT_VERSION} -P ${PROJECT_SOURCE_DIR}/cmake/ManPage.cmake
  DEPENDS countersign ${PROJECT_SOURCE_DIR}/cmake/ManPage.cmake
  COMMENT "countersign.1"
  VERBATIM)
add_custom_target(countersign_man ALL DEPENDS ${COUNTERSIGN_MAN_PAGE})

# The systemd unit names the installed binary.
file(READ ${PROJECT_SOURCE_DIR}/deploy/systemd/countersign.service unit)
string(REPLACE "/usr/local/bin/countersign" "${CMAKE_INSTALL_FULL_BINDIR}/countersign" unit "${unit}")
file(WRITE ${CMAKE_BINARY_DIR}/countersign.service "${unit}")

# /usr/lib/systemd/system for a /usr prefix (the .deb), <prefix>/lib/systemd/system otherwise.
set(COUNTERSIGN_SYSTEMD_DIR "lib/systemd/system" CACHE STRING "where the systemd unit is installed (relative to the prefix)")
# The example config: an existing NATS server on 127.0.0.1:4222 (deploy/nats/), policy beside
# it. /etc whatever the prefix, as the systemd unit expects (DESTDIR and cpack stage it).
set(COUNTERSIGN_CONFIG_DIR "/etc/countersign" CACHE STRING "where the example config and policy are installed")

install(TARGETS countersign RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${COUNTERSIGN_MAN_PAGE} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/nats/countersign-single.yaml
  DESTINATION ${COUNTERSIGN_CONFIG_DIR} RENAME countersign.yaml)
install(FILES ${PROJECT_SOURCE_DIR}/policies/approval-policy.yaml DESTINATION ${COUNTERSIGN_CONFIG_DIR})
install(FILES ${CMAKE_BINARY_DIR}/countersign.service DESTINATION ${COUNTERSIGN_SYSTEMD_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/deploy)

# A .deb: `cd build && cpack` (scripts/package.sh builds, installs and checks it).
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "countersign")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "countersign maintainers <maintainers@users.noreply.github.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "human approval gateway for NATS job pipelines")
# The package installs under the build's prefix: configure with -DCMAKE_INSTALL_PREFIX=/usr for a
# .deb (scripts/package.sh does), so the systemd unit names /usr/bin/countersign.
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)   # libnats, yaml-cpp, OpenSSL from the binary's links
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nats-server")
# The config and policy under /etc are the admin's: upgrades keep their edits.
file(WRITE ${CMAKE_BINARY_DIR}/conffiles "/etc/countersign/countersign.yaml\n/etc/countersign/approval-policy.yaml\n")
# postinst: creates the system user `countersign` the unit runs as (the service is not started).
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/conffiles ${PROJECT_SOURCE_DIR}/cmake/debian/postinst)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")   # useradd, for the postinst
include(CPack)
