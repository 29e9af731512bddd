"""Shared plumbing of benchmark/bench_*.py: worker processes, timing, RSS and result records.

The method (/work/shared/benchmarking.md): each method runs in its own worker process (its own
peak RSS, its own thread pools), setup and compilation one worker at a time, then timed runs
alternate ABBA between the workers; figures are medians. A benchmark script is both the
orchestrator and, re-run with ``--worker KIND --spec JSON``, its own worker::

    from _harness import Worker, abba, close_all, finish, serve, start, summarize
    if args.worker:                      # worker side: reply to "run" until "finish"
        serve(lambda: Runner(spec), lambda runner, cmd: runner.run())
    rec = start("bench_x")               # orchestrator: machine, load, busy cores
    workers = {k: Worker(__file__, k, spec) for k in kinds}   # setup replies: workers[k].setup
    replies = abba(workers, blocks, {"op": "run"})             # {kind: [reply per block]}
    peak = close_all(workers)                                  # {kind: {"peak_rss_mb": ...}}
    finish(rec | {"results": ...}, RESULTS)   # + devices, versions, wall time; one JSON line

Every record carries ``jax.devices()`` of the process that wrote it, and each worker reply
the devices of its worker (when it imported jax).
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Workers: passive OpenMP waits (torch's spin-waits are the worst hit on a shared 2-core box,
# benchmarking.md gotcha 1) and JAX on the CPU unless the caller says otherwise.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "JAX_PLATFORMS": "cpu"}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "optimistix", "numpy", "scipy")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_cores(seconds: float = 1.0) -> float:
    """CPU cores busy over the next ``seconds`` (all processes), from /proc/stat."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        (t0, i0), _, (t1, i1) = sample(), time.sleep(seconds), sample()
    except OSError:
        return float("nan")
    return (1.0 - (i1 - i0) / max(t1 - t0, 1)) * (os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else `platform.processor()`."""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict:
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}


def versions(packages=PACKAGES) -> dict:
    """Installed version of each package (None when absent), plus Python's."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def devices() -> list[str]:
    """``str`` of each `jax.devices()` entry of this process (imports jax)."""
    import jax

    return [str(d) for d in jax.devices()]


def summarize(wall, cpu=None, items: int | None = None, unit: str = "examples") -> dict:
    """Median / p10 / p90 / min / max of wall times; rates per second and CPU/wall if given."""
    w = np.asarray(wall, float)
    med = float(np.median(w))
    out = {
        "median_s": med,
        "p10_s": float(np.percentile(w, 10)),
        "p90_s": float(np.percentile(w, 90)),
        "min_s": float(w.min()),
        "max_s": float(w.max()),
        "n": len(w),
    }
    if cpu is not None:
        c = np.asarray(cpu, float)
        out["cpu_over_wall"] = float(np.median(c / w))
        if items is not None:
            # Less sensitive to other jobs than wall time (not immune: caches are shared).
            out[f"{unit}_per_cpu_s"] = items / float(np.median(c))
    if items is not None:
        out[f"{unit}_per_s"] = items / med
    return out


def timed(fn: Callable[[], object], repeats: int):
    """(first result, first-call wall s, steady walls [s], steady CPU [s]) of ``fn()``.

    The first call (trace + compile + run for a jitted function) is timed apart from the
    ``repeats`` further calls. ``fn`` must block until its result is ready.
    """
    t0 = time.perf_counter()
    first = fn()
    t_first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return first, t_first, walls, cpus


# ------------------------------------------------------------------------------------ workers
def serve(setup: Callable[[], object], handle: Callable[[object, dict], dict]) -> None:
    """Worker side: build the runner, reply with its setup info, then one reply per command.

    Replies are JSON lines on the original stdout; stdout itself is moved to stderr so that
    anything a library prints cannot corrupt the channel. ``setup()`` returns a runner whose
    ``info`` dict (if any) is the first reply; ``handle(runner, cmd)`` answers each command
    read from stdin until ``{"op": "finish"}``, which is answered with the peak RSS. A runner
    of None (a one-shot worker) ends after the first reply.
    """
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj: dict) -> None:
        if "jax" in sys.modules:
            obj = obj | {"devices": devices()}
        reply.write(json.dumps(obj) + "\n")

    rss0 = peak_rss_mb()
    runner = setup()
    info = getattr(runner, "info", runner if isinstance(runner, dict) else {})
    rss = peak_rss_mb()
    send({"rss_start_mb": rss0, "rss_after_setup_mb": rss, "peak_rss_mb": rss} | info)
    if runner is None or isinstance(runner, dict):
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "finish":
            send({"peak_rss_mb": peak_rss_mb()})
            return
        send(handle(runner, cmd))


class Worker:
    """One worker process: ``python SCRIPT --worker KIND --spec JSON [extra args]``.

    The constructor starts the process and waits for its setup reply (``self.setup``), so
    creating workers one after the other keeps setup and compilation from overlapping.
    stderr goes to a log file whose tail is shown if the worker dies.
    """

    def __init__(self, script: str | Path, kind: str, spec: dict, *, extra=(), log_dir=None):
        env = dict(os.environ)
        for k, v in WORKER_ENV.items():
            env.setdefault(k, v)
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH")) if p
        )  # benchmarks import experiments.*
        self.kind = kind
        log_dir = Path(log_dir or tempfile.gettempdir())
        self.log_path = log_dir / f"{Path(script).stem}_{kind}_{os.getpid()}.log"
        self.log = self.log_path.open("w")
        cmd = [sys.executable, str(script), "--worker", kind, "--spec", json.dumps(spec), *extra]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=REPO,
            env=env,
        )
        try:
            self.setup = self.recv()
        except BaseException:
            self.close()
            raise

    def recv(self) -> dict:
        """The next reply; lines that are not JSON objects (prints before `serve` took over
        stdout) go to the log."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.log.flush()
                tail = "\n".join(self.log_path.read_text().splitlines()[-30:])
                raise RuntimeError(f"{self.kind} worker died (rc {self.proc.returncode}):\n{tail}")
            if line.startswith("{"):
                return json.loads(line)
            self.log.write(line)

    def send(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def finish(self) -> dict:
        """Ask for the final reply (peak RSS) and close."""
        try:
            return self.send({"op": "finish"})
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)


def one_shot(script: str | Path, kind: str, spec: dict, **kw) -> dict:
    """Run a worker that replies once (its setup reply) and return that reply."""
    w = Worker(script, kind, spec, **kw)
    w.close()
    return w.setup


def abba(workers: dict[str, Worker], blocks: int, cmd: dict) -> dict[str, list[dict]]:
    """Send ``cmd`` to every worker ``blocks`` times, the order reversed every other block."""
    kinds = list(workers)
    replies: dict[str, list[dict]] = {k: [] for k in kinds}
    for b in range(blocks):
        for k in kinds if b % 2 == 0 else kinds[::-1]:
            replies[k].append(workers[k].send(cmd))
    return replies


def close_all(workers: dict[str, Worker]) -> dict[str, dict]:
    """`Worker.finish` of every worker (peak RSS replies); closes them all even on error."""
    out = {}
    try:
        for k, w in workers.items():
            out[k] = w.finish()
    finally:
        for w in workers.values():
            w.close()
    return out


# ------------------------------------------------------------------------------------ records
def start(bench: str, *, pin: bool = True) -> dict:
    """The opening of a result record; prints the machine line.

    With ``pin`` this process takes the worker environment's defaults (`WORKER_ENV`) before
    it imports jax, so the devices the record names are the ones the workers see.
    """
    if pin:
        for k, v in WORKER_ENV.items():
            os.environ.setdefault(k, v)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines in step with stderr
    busy, load = busy_cores(), os.getloadavg()[0]
    m = machine()
    print(
        f"{bench} | {m['cpu_model']} | {m['cpu_count']} cpus | load avg {load:.2f}, "
        f"busy cores now {busy:.2f}"
    )
    return {
        "bench": bench,
        "argv": sys.argv[1:],
        "machine": m,
        "busy_cores_at_start": busy,
        "loadavg_1min": {"start": load},
        "_t0": time.perf_counter(),
    }


def contention_note(record: dict, threshold: float = 0.3) -> str:
    busy = record.get("busy_cores_at_start", 0.0)
    if busy > threshold:
        return (
            f"NOTE: {busy:.2f} cores were busy before the run (shared machine): timings are "
            "noisy; compare medians of interleaved runs and ratios, not absolute seconds."
        )
    return ""


def finish(record: dict, results: Path, *, save: bool = True, packages=PACKAGES) -> dict:
    """Complete a record (devices, versions, timestamp, total wall, load) and append it.

    Args:
        record: what `start` returned, with the benchmark's results added.
        results: the JSONL file to append one line to (created if missing).
        save: False prints only.
        packages: packages whose versions the record names.

    Returns:
        The completed record.
    """
    out = {k: v for k, v in record.items() if k != "_t0"}
    total = time.perf_counter() - record.get("_t0", time.perf_counter())
    out |= {
        "timestamp": datetime.now(UTC).isoformat(),
        "devices": devices(),
        "versions": versions(packages),
        "total_wall_s": total,
    }
    out["loadavg_1min"] = dict(out.get("loadavg_1min", {})) | {"end": os.getloadavg()[0]}
    print(
        f"total wall time {total:.0f} s (load avg {out['loadavg_1min'].get('start', 0):.2f} -> "
        f"{out['loadavg_1min']['end']:.2f}); devices {out['devices']}"
    )
    if save:
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:
            f.write(json.dumps(out) + "\n")
        print(
            f"appended to {results.relative_to(REPO) if results.is_relative_to(REPO) else results}"
        )
    return out
