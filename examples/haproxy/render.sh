#!/bin/sh
# render.sh - writes an HAProxy configuration for a local libkvdist cluster
# to stdout, from haproxy.cfg.in beside this script.
#
#   render.sh FRONTEND STATS_SOCKET CERT_PEM NODE_HTTP_ADDR...
#
#   FRONTEND        where HTTPS is served, e.g. 127.0.0.1:8443
#   STATS_SOCKET    path of HAProxy's admin socket
#   CERT_PEM        certificate and key in one PEM file (mkcert.sh makes one)
#   NODE_HTTP_ADDR  each node's kvdistd --http HOST:PORT
set -eu
if [ $# -lt 4 ]; then
    echo "usage: $0 FRONTEND STATS_SOCKET CERT_PEM NODE_HTTP_ADDR..." >&2
    exit 2
fi
here=$(dirname "$0")
front=$1 stats=$2 pem=$3
shift 3
servers=""
i=1
for addr in "$@"; do
    servers="$servers    server n$i $addr check\\
"
    i=$((i + 1))
done
sed -e "s|@FRONTEND@|$front|" -e "s|@STATS_SOCKET@|$stats|" \
    -e "s|@CERT_PEM@|$pem|" -e "s|@SERVERS@|$servers|" "$here/haproxy.cfg.in"
