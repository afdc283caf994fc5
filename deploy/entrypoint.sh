#!/bin/sh
# Container entrypoint: the data volume may be mounted owned by root (Fly volumes, fresh Docker
# volumes), so as root it makes /data OffsiteDB's, then runs offsitedb as the offsitedb user
# (PostgreSQL, which the drills start, refuses to run as root).
set -e
if [ "$(id -u)" = 0 ]; then
  mkdir -p /data/state /data/tmp
  chown -R offsitedb:offsitedb /data
  exec setpriv --reuid=offsitedb --regid=offsitedb --init-groups /usr/local/bin/offsitedb "$@"
fi
exec /usr/local/bin/offsitedb "$@"
