#!/usr/bin/env bash
# Runs every cargo-fuzz target of encap/fuzz and engine/fuzz for SECONDS each, starting from
# the committed seeds (seeds/<target>/) and the local corpus (corpus/<target>/, kept between
# runs, never committed):
#
#   encap/fuzz/run-all.sh SECONDS
#
# Needs a nightly toolchain with cargo-fuzz (`cargo install cargo-fuzz`); without them it
# says "fuzzing skipped: ..." and exits 0 (the seeds are still replayed on stable by
# `cargo test -p weft-encap` and `cargo test --lib` in engine/fuzz). Exits 1 if a target
# does not build or finds a crash, a timeout or an out-of-memory: the input is then in
# <crate>/artifacts/<target>/; reproduce it with
# `cargo +nightly fuzz run <target> <artifact>`, fix the bug, and copy the file into
# <crate>/seeds/<target>/ so the stable replay keeps it fixed.
set -uo pipefail

usage() {
    echo "usage: $0 SECONDS   (run each fuzz target for SECONDS seconds)" >&2
    exit 2
}
[[ $# -eq 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
secs=$1

# Both crates are safe Rust (weft-encap forbids unsafe code, weft denies it): a sanitizer
# finds nothing there that a panic does not, while it doubles the build (engine/fuzz: 6 min
# instead of 3 on two cores) and halves the executions per second. FUZZ_SANITIZER=address
# turns it back on.
sanitizer=${FUZZ_SANITIZER:-none}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
crates=("$root/encap/fuzz" "$root/engine/fuzz")

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzzing skipped: no nightly toolchain / cargo-fuzz"
    exit 0
fi

# libFuzzer options per target: input size bounds (split takes 64 KB super-packets; the
# others never need more than a few packets) and the config target's dictionary.
options_for() {
    case $1 in
        split) echo "-max_len=70000" ;;
        coalesce) echo "-max_len=16384" ;;
        wire | icmp) echo "-max_len=2048" ;;
        neigh) echo "-max_len=512" ;;
        flannel | vxlan) echo "-max_len=8192" ;;
        config) echo "-max_len=4096 -dict=$root/engine/fuzz/config.dict" ;;
        *) echo "" ;;
    esac
}

failed=()
summary=()
start_all=$(date +%s)
for crate in "${crates[@]}"; do
    cd "$crate" || exit 1
    name=${crate#"$root"/}
    echo "== $name: building the fuzz targets (cargo +nightly fuzz build -s $sanitizer)"
    build_start=$(date +%s)
    if ! cargo +nightly fuzz build -s "$sanitizer"; then
        echo "FAILED: $name does not build"
        failed+=("$name (build)")
        continue
    fi
    summary+=("$(printf '%-9s build %4ds' "$name" $(($(date +%s) - build_start)))")
    mapfile -t targets < <(cargo +nightly fuzz list)
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t"
        dirs=("corpus/$t")
        [[ -d seeds/$t ]] && dirs+=("seeds/$t")
        log=$(mktemp)
        echo "== $name: $t for ${secs}s"
        t_start=$(date +%s)
        # shellcheck disable=SC2046 # the options are words on purpose
        cargo +nightly fuzz run -s "$sanitizer" "$t" "${dirs[@]}" -- \
            -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            $(options_for "$t") >"$log" 2>&1
        rc=$?
        took=$(($(date +%s) - t_start))
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
        corpus=$(find "corpus/$t" -type f | wc -l)
        line=$(printf '%-9s %-9s %10s execs %7s/s %4ds  %s, corpus %d' \
            "$name" "$t" "${execs:-?}" "${rate:-?}" "$took" "${cov:-cov: ?}" "$corpus")
        if [[ $rc -ne 0 ]]; then
            tail -n 60 "$log"
            artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
            [[ -n $artifact && $artifact != /* ]] && artifact=$crate/${artifact#./}
            echo "FAILED: $name $t exited $rc; input: ${artifact:-none written (see the log above)}"
            failed+=("$name/$t: ${artifact:-no input written}")
            line="$line  FAILED"
        fi
        summary+=("$line")
        rm -f "$log"
    done
done

echo
echo "== fuzzing summary (${secs}s per target, $(($(date +%s) - start_all))s in all)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing FAILED:"
    printf '  %s\n' "${failed[@]}"
    exit 1
fi
echo "fuzzing passed: no crash in any target"
