#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the module (func Fuzz... in a _test.go file) with go test -fuzz
# for FUZZTIME each (default 10s), one after the other, and prints one final
#   RESULT fuzz_targets=<n> failed=<n> execs=<n> fuzztime=<d>
# A crash fails the run; go test keeps the crashing input under the package's testdata/fuzz/<Target>/,
# from where every later `go test` replays it: fix the bug and commit the input as its regression test.
# FUZZ_PKGS narrows the packages (a go list pattern, default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
pkgs=${FUZZ_PKGS:-./...}
targets=0 failed=0 execs=0
while IFS=' ' read -r pkg dir; do
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		targets=$((targets + 1))
		log=$(mktemp)
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
			n=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
			execs=$((execs + ${n:-0}))
			echo "ok   $pkg $target (${n:-0} execs)"
		else
			failed=$((failed + 1))
			echo "FAIL $pkg $target"
			tail -n 30 "$log"
		fi
		rm -f "$log"
	done
done < <(go list -f '{{.ImportPath}} {{.Dir}}' $pkgs)
echo "RESULT fuzz_targets=$targets failed=$failed execs=$execs fuzztime=$fuzztime"
((failed == 0))
