/*
 * include/eddy/version.h - the version of eddy, on its own so that code
 * needing only the version string (the CLI's --version, the Fluss client's
 * ApiVersions handshake) need not include the umbrella header.
 */
#ifndef EDDY_VERSION_H
#define EDDY_VERSION_H

#define EDDY_VERSION "0.1.0"

#endif
