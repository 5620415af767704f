"""Measuring processes from outside: RSS and CPU of a process tree (from
/proc), peak sampling while a case runs, and timing a command."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids

def _proc_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            return f.read()
    except OSError:  # the process has gone
        return ""

def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, KiB."""
    return sum(int(line.split()[1]) for p in _tree(pid)
               for line in _proc_text(p, "status").splitlines() if line.startswith("VmRSS:"))

def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    ticks = 0
    for p in _tree(pid):
        stat = _proc_text(p, "stat")
        if stat:
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")

class PeakSampler:
    """Max tree RSS (KiB) of named pids while running, and the CPU seconds
    each tree used meanwhile (a context manager)."""

    def __init__(self, pids: dict[str, int]):
        self.pids, self.peak = pids, dict.fromkeys(pids, 0)
        self.cpu = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], tree_rss_kib(pid))

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = {name: tree_cpu_seconds(pid) - self.cpu[name]
                    for name, pid in self.pids.items()}

@dataclass
class Result:
    case: str
    pages: int = 0
    megapixels: float = 0.0
    seconds: list[float] = field(default_factory=list)
    tiles: int = 0
    peak_mib: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

def run_cmd(argv: list[str], sampler_name: str, peaks: dict[str, float]) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    peaks[sampler_name] = max(peaks.get(sampler_name, 0), peak / 1024)
    return time.monotonic() - t0
