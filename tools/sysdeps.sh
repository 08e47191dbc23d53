#!/bin/sh
# System packages the suite needs that pip cannot provide: the Mosquitto broker and its clients.
# As root we install them; otherwise we say what to install and stop.
set -e
missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || missing="$missing mosquitto-clients"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    # The Debian package starts a system broker on :1883; our tests start their own, so leave it be.
    exit 0
fi
echo "cityfleet: missing system packages:$missing; install them with: sudo apt-get install$missing" >&2
exit 1
