"""benchmark/_harness.py: worker round trips, ABBA order, summaries and result records."""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmark"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402

WORKER = """
import argparse, json, sys, time
sys.path.insert(0, {bench!r})
from _harness import serve

class Runner:
    def __init__(self, kind):
        self.kind, self.calls = kind, 0
        self.info = {{"kind": kind}}

    def run(self, cmd):
        self.calls += 1
        return {{"kind": self.kind, "call": self.calls, "t": time.perf_counter_ns()}}

ap = argparse.ArgumentParser()
ap.add_argument("--worker"); ap.add_argument("--spec")
a = ap.parse_args()
print("library noise on stdout must not reach the channel")
if a.worker == "once":
    serve(lambda: {{"answer": json.loads(a.spec)["x"] * 2}}, None)
else:
    serve(lambda: Runner(a.worker), lambda r, cmd: r.run(cmd))
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "bench_toy.py"
    path.write_text(textwrap.dedent(WORKER.format(bench=str(BENCH))))
    return path


def test_summarize_matches_numpy():
    wall = [0.3, 0.1, 0.2, 0.5, 0.4]
    cpu = [0.6, 0.2, 0.4, 1.0, 0.8]
    s = _harness.summarize(wall, cpu, items=100)
    assert s["median_s"] == np.median(wall) and s["n"] == 5
    np.testing.assert_allclose(s["p10_s"], np.percentile(wall, 10), rtol=1e-12)
    np.testing.assert_allclose(s["examples_per_s"], 100 / 0.3, rtol=1e-12)
    np.testing.assert_allclose(s["examples_per_cpu_s"], 100 / 0.6, rtol=1e-12)
    assert s["cpu_over_wall"] == pytest.approx(2.0)


def test_workers_alternate_abba_and_report_rss(script, tmp_path):
    workers = {}
    try:
        for k in ("a", "b"):
            workers[k] = _harness.Worker(script, k, {}, log_dir=tmp_path)
        assert workers["a"].setup["kind"] == "a" and workers["a"].setup["peak_rss_mb"] > 0
        replies = _harness.abba(workers, 4, {"op": "run"})
    finally:
        final = _harness.close_all(workers)
    assert [r["call"] for r in replies["a"]] == [1, 2, 3, 4]
    stamps = sorted((r["t"], k) for k, rs in replies.items() for r in rs)
    assert "".join(k for _, k in stamps) == "abbaabba"
    assert all(f["peak_rss_mb"] > 0 for f in final.values())


def test_one_shot_and_dead_worker(script, tmp_path):
    assert _harness.one_shot(script, "once", {"x": 21}, log_dir=tmp_path)["answer"] == 42
    with pytest.raises(RuntimeError, match="once worker died"):
        _harness.Worker(script, "once", {}, log_dir=tmp_path)  # no "x": KeyError in the worker


def test_record_carries_devices_and_appends_one_line(tmp_path, capsys):
    rec = _harness.start("bench_toy", pin=False)
    out = _harness.finish(rec | {"value": 1.5}, tmp_path / "r.jsonl", packages=("numpy",))
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == out
    assert out["devices"] and out["value"] == 1.5 and out["versions"]["numpy"] == np.__version__
    assert {"machine", "busy_cores_at_start", "timestamp", "total_wall_s"} <= set(out)
    assert "_t0" not in out and "bench_toy" in capsys.readouterr().out
