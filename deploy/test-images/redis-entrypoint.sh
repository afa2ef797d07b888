#!/bin/sh
# Takes the official image's command line (`redis-server [options]`) and listens as that image does.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
fi
exec redis-server --bind 0.0.0.0 --protected-mode no --dir /data "$@"
