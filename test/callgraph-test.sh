#!/usr/bin/env bash
# callgraph-test.sh - the self-test of test/callgraph.sh: compiles tiny
# objects in a scratch directory and checks the script's exit code and what
# it prints, for a graph with cycles and for one without.
#
# The cyclic set has two cycles (a <-> b through a function each way, and
# x -> y -> z -> x, one edge through data) and a file p on the path from the
# second cycle into the first: p has edges in and out but is in no cycle,
# which a check that only prunes sources and sinks would get wrong. The
# acyclic set is c -> d plus a diamond e -> f -> g, e -> g, with libc calls
# that must not become edges. Run by `make callgraph`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d "${TMPDIR:-/tmp}/kvdist-callgraph.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
check() { # check WHAT STATUS: reports WHAT when STATUS is not 0
    if [ "$2" -ne 0 ]; then echo "callgraph-test: $1" >&2; fail=1; fi
}
has_line() { # has_line SET OUTPUT LINE: OUTPUT holds LINE exactly
    grep -qxF -- "$3" <<<"$2" && return 0
    echo "callgraph-test: $1: no line '$3' in:" >&2
    printf '%s\n' "$2" >&2
    fail=1
}

src() { # src NAME 'C text'
    printf '%s\n' "$2" > "$dir/$1.c"
    "${CC:-cc}" -std=c11 -Wall -Werror -c "$dir/$1.c" -o "$dir/$1.o"
}
src a 'int b_f(void); int a_f(void); int a_f(void) { return b_f() + 1; }'
src b 'int a_f(void); int b_f(void); int b_g(void);
int b_f(void) { return 2; } int b_g(void) { return a_f(); }'
src p 'int a_f(void); int p_f(void); int p_f(void) { return a_f(); }'
src x 'int y_f(void); int p_f(void); int x_f(void);
int x_f(void) { return y_f() + p_f(); }'
src y 'extern int z_count; int y_f(void); int y_f(void) { return z_count; }'
src z 'int x_f(void); int z_count = 3; int z_f(void); int z_f(void) { return x_f(); }'
src c '#include <string.h>
int d_f(const char *); int c_f(void); int c_f(void) { return d_f("c") + (int)strlen("c"); }'
src d '#include <string.h>
int d_f(const char *s); int d_f(const char *s) { return (int)strlen(s); }'
src e 'int f_f(void); int g_f(void); int e_f(void); int e_f(void) { return f_f() + g_f(); }'
src f 'int g_f(void); int f_f(void); int f_f(void) { return g_f(); }'
src g 'int g_f(void); int g_f(void) { return 7; }'

# With cycles: exit 1, both cycles and only their members, each edge with
# the symbols that make it.
rc=0
out=$(bash test/callgraph.sh "$dir"/{a,b,p,x,y,z,c,d}.o) || rc=$?
check "cyclic set: exit $rc, want 1" $(( rc != 1 ))
want_lines=(
    'a -> b'
    'b -> a'
    'p -> a'
    'x -> p y'
    'y -> z'
    'z -> x'
    'c -> d'
    'd ->'
    'cycle 1: a b'
    '  a -> b (b_f)'
    '  b -> a (a_f)'
    'cycle 2: x y z'
    '  x -> y (y_f)'
    '  y -> z (z_count)'
    '  z -> x (x_f)'
    'callgraph: 2 cycle(s) among 8 files'
)
for l in "${want_lines[@]}"; do has_line "cyclic set" "$out" "$l"; done
n=$(grep -c '^cycle ' <<<"$out" || true)
check "cyclic set: $n cycles listed, want 2" $(( n != 2 ))
# p sits between the cycles and c, d are outside them: none is listed.
bad=$(grep -E '^cycle .*(p|c|d)( |$)|^  (p|c|d) ->' <<<"$out" || true)
check "cyclic set: a file outside every cycle listed: $bad" $(( ${#bad} != 0 ))

# Without a cycle: exit 0, the graph, and no cycle line.
rc=0
out=$(bash test/callgraph.sh "$dir"/{c,d,e,f,g}.o) || rc=$?
check "acyclic set: exit $rc, want 0" $(( rc != 0 ))
for l in 'c -> d' 'd ->' 'e -> f g' 'f -> g' 'g ->' 'callgraph: 5 files, no cycle'; do
    has_line "acyclic set" "$out" "$l"
done
n=$(grep -c '^cycle ' <<<"$out" || true)
check "acyclic set: $n cycles listed, want 0" $(( n != 0 ))

# Two objects with a cycle, two without, and no argument at all.
rc=0; bash test/callgraph.sh "$dir"/{a,b}.o >/dev/null || rc=$?
check "a b: exit $rc, want 1" $(( rc != 1 ))
rc=0; bash test/callgraph.sh "$dir"/{c,d}.o >/dev/null || rc=$?
check "c d: exit $rc, want 0" $(( rc != 0 ))
rc=0; bash test/callgraph.sh 2>/dev/null || rc=$?
check "no argument: exit $rc, want 2" $(( rc != 2 ))

[ "$fail" -eq 0 ] || exit 1
echo "callgraph-test: cyclic and acyclic object sets: ok"
