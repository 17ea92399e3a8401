#!/bin/sh
# What the upstream Redis image's entrypoint does that the compose file relies on: arguments
# starting with '-' go to redis-server; redis-server started as root runs as the redis user,
# owning /data.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
umask 0077
exec "$@"
