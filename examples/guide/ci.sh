#!/usr/bin/env bash
# The plugin author's guide (docs/guide.md), done as an author outside this repository does it:
# test the `meter` plugin crate (a workspace of its own), build it, package it, install it with
# `shmplug plugins install`, run its pipeline under the host from another directory (its
# relative paths resolve against the pipeline file's directory), and check the result.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
crate=$repo/examples/guide/meter
# The crate's own target directory: its profile differs from the workspace's.
crate_target=$repo/target/guide
manifest=(--manifest-path "$crate/Cargo.toml")

(cd "$repo" && cargo build --release --quiet -p shmplug-cli)
shmplug=$repo/target/release/shmplug

CARGO_TARGET_DIR=$crate_target cargo fmt "${manifest[@]}" --check
CARGO_TARGET_DIR=$crate_target cargo clippy --locked --quiet "${manifest[@]}" --all-targets -- -D warnings
CARGO_TARGET_DIR=$crate_target cargo test --locked --quiet "${manifest[@]}"
CARGO_TARGET_DIR=$crate_target cargo build --locked --quiet --release "${manifest[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The package: the manifest and the executable side by side.
mkdir "$work/meter"
cp "$crate/meter.json" "$crate_target/release/meter" "$work/meter/"
"$shmplug" --plugins-dir "$work/plugins" plugins install "$work/meter"
mkdir "$work/job"
cp "$crate/demo/pipeline.toml" "$crate/demo/readings.csv" "$work/job/"
# From another directory: the pipeline's relative paths still mean the files beside it.
(cd / && "$shmplug" --plugins-dir "$work/plugins" run "$work/job/pipeline.toml") | tee "$work/summary"
grep -q '^tuples:     4 in' "$work/summary"
grep -q '^errors:     0$' "$work/summary"
diff -u "$crate/demo/expected-summary.txt" "$work/job/out/summary.txt"
echo "guide example: the meter plugin was tested, packaged, installed and run; its summary is as expected"
