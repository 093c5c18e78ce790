#!/bin/sh
# mkcert.sh - makes a self-signed certificate for a local HAProxy front end
# (for tests and demos only: nothing trusts it unless told to).
#
#   mkcert.sh DIR
#
# Writes DIR/kvdist-local.pem (certificate then key: what HAProxy's
# "ssl crt" loads) and DIR/kvdist-local.crt (the certificate alone: give it
# to clients, e.g. curl --cacert DIR/kvdist-local.crt). The certificate
# names localhost and 127.0.0.1 and is valid for 30 days.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/kvdist-local.key" -out "$dir/kvdist-local.crt" 2>/dev/null
cat "$dir/kvdist-local.crt" "$dir/kvdist-local.key" > "$dir/kvdist-local.pem"
rm -f "$dir/kvdist-local.key"
chmod 600 "$dir/kvdist-local.pem"
