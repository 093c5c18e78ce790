#!/bin/sh
# mkcerts.sh - makes a cluster CA and certificates for a tls+tcp://
# libkvdist cluster with openssl (kvdist(7) SECURITY, kvdistd(1)).
#
#   examples/certs/mkcerts.sh DIR NODE... [-c CLIENT]...
#
# DIR/ca.pem and DIR/ca.key: the CA (keep ca.key offline; a CA found in
# DIR already is reused, so more nodes can be added later).
# DIR/NODE.pem and DIR/NODE.key for each node id: CN and subjectAltName
# DNS name are the node id (a node refuses to start when its certificate
# does not name it), extended key usage serverAuth and clientAuth (a node
# both accepts and makes connections).
# DIR/CLIENT.pem and DIR/CLIENT.key for each -c CLIENT: extended key
# usage clientAuth only, so it can never act as a node: peers check the
# certificate of every node they connect to for serverAuth and its id.
# Keys are EC P-256, mode 0600; certificates are valid for 825 days.
set -eu

usage() {
    echo "usage: mkcerts.sh DIR NODE... [-c CLIENT]..." >&2
    exit 2
}
[ $# -ge 2 ] || usage
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 825 \
        -subj "/CN=libkvdist cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 644 "$dir/ca.pem"
    echo "mkcerts: made the CA $dir/ca.pem"
fi

# issue NAME EKU: a key and a certificate signed by the CA.
issue() {
    name=$1
    eku=$2
    case $name in
    '' | *[!A-Za-z0-9._-]*)
        echo "mkcerts: '$name' is not a node id (A-Z a-z 0-9 . _ -)" >&2
        exit 2
        ;;
    esac
    ext=$(mktemp)
    csr=$(mktemp)
    trap 'rm -f "$ext" "$csr"' EXIT
    printf 'basicConstraints=critical,CA:FALSE\n' >"$ext"
    printf 'keyUsage=critical,digitalSignature,keyAgreement\n' >>"$ext"
    printf 'extendedKeyUsage=%s\n' "$eku" >>"$ext"
    printf 'subjectAltName=DNS:%s\n' "$name" >>"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -out "$csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -out "$dir/$name.pem" -days 825 -sha256 \
        -extfile "$ext" 2>/dev/null
    rm -f "$ext" "$csr"
    trap - EXIT
    chmod 600 "$dir/$name.key"
    chmod 644 "$dir/$name.pem"
}

while [ $# -gt 0 ]; do
    case $1 in
    -c)
        [ $# -ge 2 ] || usage
        issue "$2" clientAuth
        echo "mkcerts: client $2: $dir/$2.pem, $dir/$2.key"
        shift 2
        ;;
    -*) usage ;;
    *)
        issue "$1" serverAuth,clientAuth
        echo "mkcerts: node $1: $dir/$1.pem, $dir/$1.key"
        shift
        ;;
    esac
done
