#!/usr/bin/env bash
# callgraph.sh - checks that the files of lib/ call each other without a
# cycle (issue 13, item 4: calls go down, STYLE.md "Layering").
#
# The graph comes from the object files, not the sources, so it is the one
# the linker sees: file A depends on file B when A has an undefined symbol
# that B defines (a call, or a use of B's data). Objects must be the plain
# lib/*.o (hidden symbols are still global there), not the localized
# libkvdist.a. Prints the graph, one "a -> b c d" line per file ("a ->" for
# a leaf), then finds the strongly connected components from the transitive
# closure (u and v share one when each reaches the other; Floyd-Warshall is
# plenty for a few dozen files). Every component of more than one file is a
# cycle: it is listed with the edges inside it and the symbols that make
# each edge, e.g. "aae -> replica (replica_merge, replica_purge)".
#
# Usage: test/callgraph.sh OBJ.o...     (make callgraph passes $(BUILD)'s)
# Exit: 0 no cycle, 1 a cycle (listed on stdout), 2 usage or nm failure.
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 OBJ.o..." >&2
    exit 2
fi
for o in "$@"; do
    [ -f "$o" ] || { echo "callgraph: no object $o" >&2; exit 2; }
done

# One line per fact, "file def SYM" or "file use SYM", sorted so that the
# awk below sees files and each edge's symbols in a stable order. nm -P
# prints "name type value size"; -u lists undefined (U, and w for weak).
facts() {
    local o f
    for o in "$@"; do
        f=$(basename "$o" .o)
        echo "$f file -"
        nm -P -g --defined-only "$o" | awk -v f="$f" '{print f, "def", $1}'
        nm -P -u "$o" | awk -v f="$f" '{print f, "use", $1}'
    done
}
all=$(facts "$@") || { echo "callgraph: nm failed" >&2; exit 2; }

LC_ALL=C sort -u <<<"$all" | awk '
$2 == "file" { node[++n] = $1; next }
$2 == "def"  { if (($3) in owner) owner[$3] = owner[$3] " " $1;
               else owner[$3] = $1; next }
$2 == "use"  { use[++nu] = $1 SUBSEP $3 }
END {
    # Edges a -> b, each with the comma-separated symbols that make it.
    for (i = 1; i <= nu; i++) {
        split(use[i], p, SUBSEP)
        if (!(p[2] in owner)) { continue }      # libc, RocksDB, NNG...
        k = split(owner[p[2]], by, " ")
        for (j = 1; j <= k; j++) {
            if (by[j] == p[1]) { continue }
            e = p[1] SUBSEP by[j]
            # (not a ?: assignment: mawk creates syms[e] before the test)
            if (e in syms) { syms[e] = syms[e] ", " p[2] } else { syms[e] = p[2] }
            reach[e] = 1
        }
    }
    for (i = 1; i <= n; i++) {
        line = node[i] " ->"
        for (j = 1; j <= n; j++) {
            if ((node[i] SUBSEP node[j]) in syms) { line = line " " node[j] }
        }
        print line
    }
    # Transitive closure: reach[a, b] when a path leads from a to b.
    for (k = 1; k <= n; k++) {
        for (i = 1; i <= n; i++) {
            if (!((node[i] SUBSEP node[k]) in reach)) { continue }
            for (j = 1; j <= n; j++) {
                if ((node[k] SUBSEP node[j]) in reach) {
                    reach[node[i] SUBSEP node[j]] = 1
                }
            }
        }
    }
    cycles = 0
    for (i = 1; i <= n; i++) {
        if (node[i] in done) { continue }
        members = node[i]; m = 1; comp[1] = node[i]
        for (j = i + 1; j <= n; j++) {
            if (((node[i] SUBSEP node[j]) in reach) &&
                ((node[j] SUBSEP node[i]) in reach)) {
                members = members " " node[j]; comp[++m] = node[j]
                done[node[j]] = 1
            }
        }
        if (m < 2) { continue }
        cycles++
        print "cycle " cycles ": " members
        for (a = 1; a <= m; a++) {
            for (b = 1; b <= m; b++) {
                e = comp[a] SUBSEP comp[b]
                if (e in syms) { print "  " comp[a] " -> " comp[b] " (" syms[e] ")" }
            }
        }
    }
    if (cycles > 0) {
        print "callgraph: " cycles " cycle(s) among " n " files"
        exit 1
    }
    print "callgraph: " n " files, no cycle"
}'
