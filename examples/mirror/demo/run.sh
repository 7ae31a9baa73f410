#!/usr/bin/env bash
# The README's main job: build the host and the mirror example plugin, install the plugin into a
# plugins directory under target/, and run a pipeline (random source -> echo function -> file
# sink) through real plugin processes, printing what it measured.
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build --release --quiet -p shmplug-cli -p mirror
demo=target/demo
rm -rf "$demo/mirror" "$demo/out.jsonl"
mkdir -p "$demo/mirror"
cp examples/mirror/mirror.json "$demo/mirror/"
cp target/release/mirror "$demo/mirror/"
shmplug=target/release/shmplug
"$shmplug" --plugins-dir "$demo/plugins" plugins install --force "$demo/mirror"
# Plugins run in the pipeline file's directory: the sink's relative path lands beside it.
cp examples/mirror/demo/pipeline.toml "$demo/pipeline.toml"
"$shmplug" --plugins-dir "$demo/plugins" run "$demo/pipeline.toml"
printf 'sink output: %s lines in %s\n' "$(wc -l < "$demo/out.jsonl")" "$demo/out.jsonl"
