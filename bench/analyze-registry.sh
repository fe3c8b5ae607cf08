#!/usr/bin/env bash
# Robustness run: `ficus analyze` over every crate in the local cargo registry source
# cache (code nobody here wrote). Reports crates, .rs files, parse errors, panics and
# odd exit statuses; exits 1 if anything panicked or exited other than 0/1.
#
# Run from the workspace root:  bench/analyze-registry.sh [FICUS_BINARY]
# (builds the release binary first when none is given).
set -euo pipefail
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-}"
if [[ -z "$bin" ]]; then
    cargo build --quiet --release -p ficus
    bin="$target/release/ficus"
fi
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
crates=0 files=0 parse_errors=0 panics=0 odd=0 ok=0 rejected=0
start=$(date +%s.%N)
for dir in "$registry"/*/*/; do
    [[ -f "$dir/Cargo.toml" ]] || continue
    crates=$((crates + 1))
    name=$(basename "$dir")
    set +e
    "$bin" analyze "$dir" --format json >"$out/report.json" 2>"$out/stderr"
    rc=$?
    set -e
    if [[ $rc -eq 101 ]] || grep -q "panicked at" "$out/stderr"; then
        panics=$((panics + 1))
        echo "PANIC $name: $(grep -m1 'panicked at' -A1 "$out/stderr" | tr '\n' ' ')"
    elif [[ $rc -eq 0 ]]; then
        ok=$((ok + 1))
        read -r f e < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["files"], s["parse_errors"])' "$out/report.json")
        files=$((files + f))
        parse_errors=$((parse_errors + e))
    elif [[ $rc -eq 1 ]]; then
        rejected=$((rejected + 1))
        echo "rejected $name: $(head -c 200 "$out/stderr")"
    else
        odd=$((odd + 1))
        echo "ODD EXIT $rc $name: $(head -c 200 "$out/stderr")"
    fi
done
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "$crates crates: $ok analysed ($files .rs files, $parse_errors parse errors), $rejected rejected, $panics panics, $odd odd exits, ${secs}s"
[[ $panics -eq 0 && $odd -eq 0 ]]
