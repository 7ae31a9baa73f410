"""An eKuiper portable plugin written against the official `ekuiper` Python SDK, as its
documentation describes (a source, a sink and a function); shmplug's tests run it unchanged."""

import json
import threading

from ekuiper import Context, Function, PluginConfig, Sink, Source, plugin


class Counter(Source):
    """Emits `count` tuples {"id", "name", "value", "tags"} with `topic` metadata, then idles
    until closed."""

    def __init__(self):
        self.count = 100
        self.closed = threading.Event()

    def configure(self, datasource: str, conf: dict):
        self.count = int(conf.get("count", 100))

    def open(self, ctx: Context):
        for i in range(self.count):
            if self.closed.is_set():
                return
            ctx.emit({"id": i, "name": "n%d" % i, "value": i * 1.5, "tags": ["a", i]},
                     {"topic": "counter", "rule": ctx.get_rule_id()})
        self.closed.wait()

    def close(self, ctx: Context):
        self.closed.set()


class Lines(Sink):
    """Appends each record it collects (JSON bytes) as a line to the file `path`, and
    acknowledges it."""

    def __init__(self):
        self.path = None
        self.out = None

    def configure(self, conf: dict):
        self.path = conf["path"]

    def open(self, ctx: Context):
        self.out = open(self.path, "a")

    def collect(self, ctx: Context, data):
        record = json.loads(data)
        if record.get("fail"):
            ctx.ack_error("asked to fail")
            return
        self.out.write(json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()
        ctx.ack_ok()

    def close(self, ctx: Context):
        if self.out is not None:
            self.out.close()


class Revert(Function):
    """Reverses a string; raises on anything else."""

    def validate(self, args):
        return "" if len(args) == 1 else "revert takes one argument"

    def exec(self, args, ctx: Context):
        if not isinstance(args[0], str):
            raise ValueError("revert needs a string, got %r" % (args[0],))
        return args[0][::-1]

    def is_aggregate(self):
        return False


if __name__ == "__main__":
    plugin.start(PluginConfig("pycount", {"counter": lambda: Counter()},
                              {"lines": lambda: Lines()}, {"revert": lambda: Revert()}))
