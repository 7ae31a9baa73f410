#!/usr/bin/env bash
# eKuiper's portable plugins under shmplug's host, as CI runs it (issue 16): installs the official
# `ekuiper` Python SDK and its nng binding (pynng) from PyPI into a venv under target/, runs the
# host's tests against them, then installs an eKuiper plugin zip as it is (tests/ekuiper/pycount:
# a source, a sink and a function written from eKuiper's documentation) beside the mirror example
# plugin, and runs two `shmplug run` pipelines that mix them, checking the output tuple by tuple.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/ekuiper-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check ekuiper pynng
python="$PWD/$venv/bin/python"
"$python" -c 'import ekuiper, pynng; print("ekuiper SDK and pynng", pynng.__version__)'
export SHMPLUG_PYTHON="$python" SHMPLUG_REQUIRE_EKUIPER=1

# The host against the official SDK: handles, restart with replay, /tmp left clean.
cargo test --quiet -p shmplug-host --test ekuiper_python

cargo build --release --quiet -p shmplug-cli -p mirror
work=target/ekuiper-ci
rm -rf "$work"
mkdir -p "$work/mirror"
cp examples/mirror/mirror.json target/release/mirror "$work/mirror/"
# The plugin as eKuiper users ship it: a zip with everything at its root (the script is not
# executable; `sources/counter.yaml` beside it).
src=tests/ekuiper/pycount
"$python" -m zipfile -c "$work/pycount.zip" "$src/pycount.json" "$src/pycount.py" "$src/sources"
shmplug="target/release/shmplug --plugins-dir $work/plugins"
$shmplug plugins install "$work/mirror"
$shmplug plugins install "$work/pycount.zip"   # starts it and waits for its handshake
$shmplug plugins list

cat > "$work/python_source.toml" <<'TOML'
# eKuiper Python source -> shmplug function -> eKuiper Python function -> shmplug sink
[source]
plugin = "pycount"
symbol = "counter"
properties = { count = 2000 }

[[functions]]
plugin = "mirror"
symbol = "echo"
args = ["name"]
output = "echoed"

[[functions]]
plugin = "pycount"
symbol = "revert"
args = ["echoed"]
output = "reverted"

[sink]
plugin = "mirror"
symbol = "file"
properties = { path = "python_source.jsonl" }
TOML
$shmplug run "$work/python_source.toml" --count 2000

cat > "$work/python_sink.toml" <<'TOML'
# shmplug source -> eKuiper Python function -> eKuiper Python sink (acknowledging each record)
[source]
plugin = "mirror"
symbol = "random"
properties = { interval = 0, count = 500, seed = 100, rngSeed = 7, pattern = { temperature = 20, room = "kitchen" } }

[[functions]]
plugin = "pycount"
symbol = "revert"
args = ["room"]
output = "reverted"

[sink]
plugin = "pycount"
symbol = "lines"
properties = { path = "python_sink.jsonl", requireAck = true }
TOML
$shmplug run "$work/python_sink.toml"

"$python" - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(work, "python_source.jsonl"))]
assert len(rows) == 2000, len(rows)
for i, row in enumerate(rows):
    name = "n%d" % i
    want = {"id": i, "name": name, "value": i * 1.5, "tags": ["a", i], "echoed": name,
            "reverted": name[::-1]}
    assert row == want, (i, row, want)
rows = [json.loads(l) for l in open(os.path.join(work, "python_sink.jsonl"))]
assert len(rows) == 500, len(rows)
for i, row in enumerate(rows):
    assert set(row) == {"temperature", "room", "reverted"}, (i, row)
    assert row["room"] == "kitchen" and row["reverted"] == "nehctik", (i, row)
    assert isinstance(row["temperature"], int) and 20 <= row["temperature"] < 120, (i, row)
print("checked 2000 + 500 tuples, one by one")
PY
left=$(ls /tmp/plugin_pycount.ipc /tmp/func_revert.ipc /tmp/shmplug-run_*.ipc 2>/dev/null || true)
if [ -n "$left" ]; then
    echo "socket files left in /tmp: $left" >&2
    exit 1
fi
echo "no eKuiper socket file left in /tmp"
