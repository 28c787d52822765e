"""Shared helpers: run directories, config/log files, device, checkpoints."""
from __future__ import annotations

import json
import logging
import os
import random
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_ROOT = os.environ.get("UIGC_DATA", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))
CACHE_ROOT = os.path.expanduser(os.environ.get("UIGC_CACHE", "~/.cache/uigc"))
RUNS_ROOT = os.path.join(CACHE_ROOT, "runs")


def run_dir(name: str, root: str | None = None) -> str:
    d = os.path.join(root or RUNS_ROOT, name)
    os.makedirs(d, exist_ok=True)
    return d


def setup_logging(directory: str, filename: str) -> logging.Logger:
    os.makedirs(directory, exist_ok=True)
    log = logging.getLogger("uigc")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    fh = logging.FileHandler(os.path.join(directory, filename))
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    log.addHandler(fh)
    log.addHandler(sh)
    log.propagate = False
    return log


def save_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def write_config(directory: str, args, filename: str = "config.json", extra: dict | None = None,
                 keep_previous: bool = True) -> dict:
    """Write args (+ argv, time, extra) as JSON. Run directories keep the configs of earlier
    invocations (config.1.json, ...: a resumed run's history); a bundle directory is rewritten by
    each export and passes keep_previous=False, so it holds only the config of its files."""
    cfg = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    cfg["_argv"] = sys.argv
    cfg["_time_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if extra:
        cfg.update(extra)
    p = os.path.join(directory, filename)
    if keep_previous and os.path.exists(p):
        stem, ext = os.path.splitext(filename)
        k = 1
        while os.path.exists(os.path.join(directory, f"{stem}.{k}{ext}")):
            k += 1
        os.replace(p, os.path.join(directory, f"{stem}.{k}{ext}"))
    save_json(p, cfg)
    return cfg


def pick_device(requested: str = "auto"):
    import torch
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def set_threads(n: int) -> None:
    import torch
    if n > 0:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))


def seed_all(seed: int) -> None:
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_torch_save(obj, path: str) -> None:
    import torch
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def stop_on_signals(log) -> dict:
    """SIGTERM / SIGINT set the returned dict's "flag": a training loop checkpoints and stops."""
    import signal
    stop = {"flag": False}

    def on_signal(signum, frame):
        log.info(f"signal {signum}: checkpointing and stopping")
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


class Deadline:
    """Wall-clock limit for one invocation."""

    def __init__(self, max_minutes: float | None):
        self.t0 = time.time()
        self.limit = None if not max_minutes or max_minutes <= 0 else max_minutes * 60.0

    def elapsed(self) -> float:
        return time.time() - self.t0

    def expired(self) -> bool:
        return self.limit is not None and self.elapsed() >= self.limit
