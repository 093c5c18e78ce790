#!/usr/bin/python3
"""redis_clients.py - Debian's redis-py (python3-redis) against a kvdistd
RESP port, as a Python user drives it: set, get, delete, mget, mset, a
non-transactional pipeline of 500 commands with binary values checked byte
for byte, and pipeline() (MULTI/EXEC) failing with the error that says why.
Given the node's password (auth_password), first a client without it and
one with a wrong one are refused, then everything runs as a client that
gives it (redis-py sends AUTH default PASSWORD).

Usage: /usr/bin/python3 test/redis_clients.py PORT [PASSWORD]
Run by check_resp.c (test_resp_cluster, test_resp_auth). Exit 0 when every check holds;
otherwise the first failed check is on stderr and the exit status is 1.
"""
import sys

import redis


def expect(what, got, want):
    if got != want:
        sys.stderr.write("%s: got %r, want %r\n" % (what, got, want))
        sys.exit(1)


def refused(what, client):
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        return  # -NOAUTH
    except redis.exceptions.ResponseError as e:
        # redis-py 4 reports the -WRONGPASS of its AUTH as a ResponseError.
        if str(e).startswith("WRONGPASS "):
            return
        sys.stderr.write("%s: unexpected error %r\n" % (what, str(e)))
        sys.exit(1)
    sys.stderr.write("%s: served without the password\n" % what)
    sys.exit(1)


def main():
    port = int(sys.argv[1])
    password = sys.argv[2] if len(sys.argv) > 2 else None
    if password is not None:
        refused("no password",
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=20))
        refused("wrong password",
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=20,
                            password=password + "x"))
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=20,
                    username="default" if password is not None else None,
                    password=password)

    expect("ping", r.ping(), True)
    expect("set", r.set(b"py:k", b"v1"), True)
    expect("get", r.get(b"py:k"), b"v1")
    expect("get missing", r.get(b"py:missing"), None)
    expect("delete", r.delete(b"py:k", b"py:missing"), 1)
    expect("get deleted", r.get(b"py:k"), None)

    # Binary keys and values: every byte value, CR/LF/NUL included.
    blob = bytes(range(256)) * 3
    expect("mset", r.mset({b"py:a\x00": blob, b"py:b\r\n": b"", b"py:c": b"3"}),
           True)
    expect("mget", r.mget([b"py:a\x00", b"py:nothing", b"py:b\r\n", b"py:c"]),
           [blob, None, b"", b"3"])

    # 500 commands in one non-transactional pipeline, answered in order.
    p = r.pipeline(transaction=False)
    want = []
    for i in range(250):
        key = b"py:pipe:%d" % i
        val = bytes([(i * 7 + j) % 256 for j in range(i % 64)]) + b"\r\n\x00"
        p.set(key, val)
        p.get(key)
        want += [True, val]
    expect("pipeline(transaction=False)", p.execute(), want)
    expect("dbsize after the pipeline", r.dbsize() >= 250, True)

    # pipeline() sends MULTI ... EXEC: refused, with the reason, and none
    # of its commands run.
    p = r.pipeline()
    p.set(b"py:tx", b"1")
    p.get(b"py:tx")
    try:
        p.execute()
    except redis.exceptions.ResponseError as e:
        msg = str(e)
        if "MULTI is not supported" not in msg or \
                "transaction=False" not in msg:
            sys.stderr.write("pipeline(): unexpected error %r\n" % msg)
            sys.exit(1)
    else:
        sys.stderr.write("pipeline() with MULTI/EXEC did not fail\n")
        sys.exit(1)
    expect("get after the refused transaction", r.get(b"py:tx"), None)

    # The connection is usable afterwards.
    expect("set after the refused transaction", r.set(b"py:after", b"ok"),
           True)
    expect("get after", r.get(b"py:after"), b"ok")

    info = r.info("server")
    expect("info server has kvdist_version", "kvdist_version" in info, True)
    expect("info keyspace", r.info("keyspace")["db0"]["keys"] > 0, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
