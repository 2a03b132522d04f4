"""Many subjects, one command (scripts/train_many.py): a manifest of datasets and videos, one Ray task per
subject, each training in its own process into ``DIR/<name>/``, and a summary table.

Manifest (YAML; relative paths are relative to the manifest's folder)::

    config: configs/paper.yaml          # default config of every subject
    overrides: {train.iterations: 3000} # optional, every subject ("key=value" strings also accepted)
    subjects:
      - {name: alice, data: exports/alice}                    # a dataset folder (VHAP, INSTA, IMavatar)
      - {name: bob, video: videos/bob.mp4, video_size: 256}   # a video (train.py --video, cached by sha256)
      - {name: carol, data: exports/carol, config: other.yaml, overrides: {model.binding: hard}}

The unit of work is one subject = one process (Taichi's runtime belongs to its process) = one Ray task
with ``max_calls=1`` (a fresh worker per subject). The task runs ``scripts/train.py`` as a child process
with its output in ``DIR/<name>/train.log`` and records ``DIR/<name>/status.json``; a run folder is an
ordinary train.py run (render.py, evaluate.py, export.py and the viewer read it).

Re-running the same command is incremental: a subject whose run finished with the same resolved config
and the same input is skipped, a run with the same config but no results resumes from its checkpoint
(``--resume``), a run of another config or input is retrained (``--overwrite``). Ctrl-C cancels the
Ray tasks; each task passes SIGINT to its trainer, which finishes the iteration, saves its checkpoint
and exits.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, load_config, to_dict
from ..hashing import sha256_file

__all__ = ["ManifestError", "Subject", "Manifest", "load_manifest", "plan_subject", "run_subject",
           "run_many", "summary_rows", "write_summary", "SUMMARY_FIELDS", "INSTALL_HINT"]

INSTALL_HINT = 'Ray is not installed: pip install -e ".[cluster]"'
SUMMARY_FIELDS = ("name", "status", "psnr", "ssim", "lpips", "mouth_psnr", "mouth_ssim", "mouth_lpips",
                  "num_gaussians", "iterations", "train_seconds", "peak_rss_mib", "peak_gpu_mib", "error",
                  "metric_convention")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = {"summary.csv", "summary.md"}
_TOP_KEYS = {"config", "overrides", "subjects"}
_SUBJECT_KEYS = {"name", "data", "video", "video_size", "config", "overrides"}
# Ray workers block SIGINT in their main thread and a child inherits the mask through exec: this shim
# unblocks it (the trainer checkpoints on SIGINT) and asks Linux to send SIGINT to the trainer when the
# worker dies, then execs train.py.
_SHIM = ("import os, signal, sys\n"
         "signal.pthread_sigmask(signal.SIG_SETMASK, [])\n"
         "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
         "try:\n"
         "    import ctypes\n"
         "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG\n"
         "except (OSError, AttributeError):\n"
         "    pass\n"
         "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n")


class ManifestError(ValueError):
    """A bad manifest; the one-line message names the manifest file and the entry."""


@dataclass(frozen=True)
class Subject:
    """One manifest entry, resolved.

    Attributes:
        name: folder name under DIR.
        data / video: absolute path of the dataset folder or video file (exactly one is set).
        video_size: image side of the preprocessed video (train.py --video-size).
        config: absolute path of the config file.
        overrides: "section.key=value" strings (manifest-wide first, then the subject's).
        resolved: the resolved config as `stavatar_ti.config.to_dict` writes it (the run's config.yaml).
    """
    name: str
    data: Path | None
    video: Path | None
    video_size: int
    config: Path
    overrides: tuple
    resolved: dict = field(compare=False, repr=False)

    def source(self) -> dict:
        """The subject's input as recorded in status.json: the dataset folder, or the video's path,
        sha256 and preprocessing size (a changed video retrains the subject)."""
        if self.data is not None:
            return {"data": str(self.data)}
        return {"video": str(self.video), "sha256": sha256_file(self.video), "video_size": self.video_size}

    def train_args(self) -> list:
        """train.py arguments (without --out / --resume / --overwrite)."""
        src = ["--data", str(self.data)] if self.data is not None else \
            ["--video", str(self.video), "--video-size", str(self.video_size)]
        return ["--config", str(self.config), *src, *self.overrides]


@dataclass(frozen=True)
class Manifest:
    path: Path
    subjects: tuple


def _override_strings(value, where: str) -> list:
    """Overrides as "key=value" strings from a mapping {section.key: value} or a list of strings.
    Values are written as JSON (a subset of YAML), so train.py reads back exactly the manifest's value."""
    if value is None:
        return []
    if isinstance(value, dict):
        out = []
        for key, v in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{where}: override key {key!r} is not a string")
            out.append(f"{key}={json.dumps(list(v) if isinstance(v, tuple) else v)}")
        return out
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ManifestError(f"{where}: overrides must be a mapping {{section.key: value}} or a list of 'key=value'")


def load_manifest(path) -> Manifest:
    """Read and validate a whole manifest before anything runs.

    Checks: YAML mapping with only `config`, `overrides`, `subjects`; every subject has a unique
    folder-safe `name` and exactly one of `data` (an existing folder) or `video` (an existing file);
    the config file exists; every override key is a known config key with a value of the right type
    and range (the subject's config is resolved with `stavatar_ti.config.load_config`); no two video
    subjects share train.py's preprocessing cache folder (out/videos/<stem>-<size>).

    Returns:
        Manifest with absolute paths.
    Raises:
        ManifestError: one line naming the manifest file and the entry (``subjects[i] 'name'``).
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: expected a mapping with config, overrides and subjects")
    unknown = sorted(set(map(str, doc)) - _TOP_KEYS)
    if unknown:
        raise ManifestError(f"{path}: unknown key {unknown[0]!r} (expected config, overrides, subjects)")
    base = path.resolve().parent

    def resolve(p, where: str, key: str) -> Path:
        if not isinstance(p, str) or not p:
            raise ManifestError(f"{path}: {where}: {key} must be a path")
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    default_config = resolve(doc["config"], "config", "config") if doc.get("config") is not None else None
    common = _override_strings(doc.get("overrides"), f"{path}: overrides")
    subjects = doc.get("subjects")
    if not isinstance(subjects, list) or not subjects:
        raise ManifestError(f"{path}: subjects must be a non-empty list of {{name, data|video}} entries")
    out, names, caches = [], {}, {}
    for i, entry in enumerate(subjects):
        where = f"subjects[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: {where}: expected a mapping with name and data or video")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
            raise ManifestError(f"{path}: {where}: name must be a folder name of letters, digits, '.', '_', '-' "
                                f"(got {name!r})")
        where = f"subjects[{i}] {name!r}"
        if name in names:
            raise ManifestError(f"{path}: {where}: duplicate name (also subjects[{names[name]}])")
        names[name] = i
        unknown = sorted(set(map(str, entry)) - _SUBJECT_KEYS)
        if unknown:
            raise ManifestError(f"{path}: {where}: unknown key {unknown[0]!r} "
                                f"(expected {', '.join(sorted(_SUBJECT_KEYS))})")
        if ("data" in entry) == ("video" in entry):
            raise ManifestError(f"{path}: {where}: give exactly one of data (a dataset folder) or video (a file)")
        data = video = None
        if "data" in entry:
            data = resolve(entry["data"], where, "data")
            if not data.is_dir():
                raise ManifestError(f"{path}: {where}: data folder {data} not found")
        else:
            video = resolve(entry["video"], where, "video")
            if not video.is_file():
                raise ManifestError(f"{path}: {where}: video file {video} not found")
        size = entry.get("video_size", 512)
        if isinstance(size, bool) or not isinstance(size, int) or size < 16:
            raise ManifestError(f"{path}: {where}: video_size must be an integer >= 16 (got {size!r})")
        if video is not None:
            cache = (video.stem, size)
            if cache in caches:
                raise ManifestError(f"{path}: {where}: shares train.py's preprocessing cache out/videos/"
                                    f"{video.stem}-{size} with {caches[cache]} (rename the video or give "
                                    f"another video_size)")
            caches[cache] = where
        config = resolve(entry["config"], where, "config") if entry.get("config") is not None else default_config
        if config is None:
            raise ManifestError(f"{path}: {where}: no config (give a top-level config: or the subject's own)")
        if not config.is_file():
            raise ManifestError(f"{path}: {where}: config file {config} not found")
        overrides = common + _override_strings(entry.get("overrides"), f"{path}: {where}: overrides")
        try:
            resolved = to_dict(load_config(config, overrides))
        except ConfigError as exc:
            raise ManifestError(f"{path}: {where}: {' '.join(str(exc).split())}") from None
        out.append(Subject(name, data.resolve() if data else None, video.resolve() if video else None, size,
                           config.resolve(), tuple(overrides), resolved))
    return Manifest(path, tuple(out))


# ---------------------------------------------------------------------------------------- run folders
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def plan_subject(subject: Subject, run_dir, source: dict | None = None) -> dict:
    """What to do with a subject's run folder: {"action": "skip" | "run", "flag": None | "--resume" |
    "--overwrite", "reason": str}.

    - skip: results.json of a finished run, its config.yaml equal to the subject's resolved config and
      its input (status.json "source", or results.json "data" for a run made by train.py) the same;
    - --resume: same config and input but no results (interrupted, failed or killed): continue from
      checkpoints/last.pt (train.py starts fresh when there is none);
    - --overwrite: the folder holds a run of another config or input;
    - no flag: no run there yet.
    """
    run_dir = Path(run_dir)
    source = subject.source() if source is None else source
    has_run = any((run_dir / p).exists() for p in ("config.yaml", "results.json", "checkpoints"))
    if not has_run:
        return {"action": "run", "flag": None, "reason": "new"}
    same_config = _read_yaml(run_dir / "config.yaml") == subject.resolved
    status = _read_json(run_dir / "status.json")
    results = _read_json(run_dir / "results.json")
    if isinstance(status, dict) and "source" in status:
        same_input = status["source"] == source
    else:  # a run made by train.py itself records its dataset folder only
        same_input = (subject.data is not None and isinstance(results, dict)
                      and results.get("data") == str(subject.data))
    if not (same_config and same_input):
        return {"action": "run", "flag": "--overwrite",
                "reason": "config changed" if not same_config else "input changed"}
    if isinstance(results, dict) and "test" in results and not results.get("interrupted"):
        return {"action": "skip", "flag": None, "reason": "finished with the same config"}
    return {"action": "run", "flag": "--resume", "reason": "unfinished"}


def _last_error(log: Path, offset: int) -> str:
    """The error line of the attempt that starts at byte `offset` of train.log: train.py's
    "error: ..." line, else the last line (a traceback's exception)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    text = errors[-1][len("error:"):].strip() if errors else (lines[-1] if lines else "")
    return text[:500]


def run_subject(job: dict) -> dict:
    """Train one subject in a child process (the body of the Ray task; also callable directly).

    Args:
        job: {"name", "run_dir", "train_script", "args" (train.py arguments including --out and the
              resume flag), "source" and "invocation" (recorded in status.json), "threads" (CPU
              threads of the trainer), "cwd" (working directory, used when it exists on this node)}.
    Returns:
        {"name", "state": "finished" | "failed" | "interrupted", "returncode", "error",
         "peak_rss_mib" (the child's peak resident memory, from wait4's rusage), "wall_seconds", "node"}.
        The same is written to run_dir/status.json; the child's output goes to run_dir/train.log.

    A KeyboardInterrupt while the child runs (Ray's task cancellation or Ctrl-C) is passed to the child
    as SIGINT, and the task waits until the child has saved its checkpoint.
    """
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    script = Path(job["train_script"])
    node = socket.gethostname()
    base = {"name": job["name"], "source": job["source"], "node": node, "invocation": job.get("invocation")}
    if not script.is_file():
        res = {**base, "state": "failed", "returncode": None, "peak_rss_mib": None, "wall_seconds": 0.0,
               "error": f"{script} not found on node {node}: every node needs the same stavatar_ti checkout"}
        _write_json(run_dir / "status.json", res)
        return res
    cmd = [sys.executable, "-c", _SHIM, str(script), *job["args"]]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in ("STAVATAR_CPU_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, str(job.get("threads", 1)))
    cwd = job.get("cwd") if job.get("cwd") and Path(job["cwd"]).is_dir() else None
    log_path = run_dir / "train.log"
    t0 = time.time()
    with open(log_path, "ab") as log:
        offset = log.tell()
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC on {node}: "
                  f"{shlex.join([sys.executable, str(script), *job['args']])}\n".encode())
        log.flush()
        _write_json(run_dir / "status.json", {**base, "state": "running", "started": t0})
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env)
        interrupted = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            interrupted = True
            proc.send_signal(signal.SIGINT)  # the trainer finishes its iteration and saves a checkpoint
            while True:
                try:
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                except KeyboardInterrupt:
                    continue
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
    res = {**base, "returncode": rc, "started": t0, "wall_seconds": time.time() - t0,
           "peak_rss_mib": usage.ru_maxrss / 1024.0 if sys.platform != "darwin" else usage.ru_maxrss / 2**20}
    results = _read_json(run_dir / "results.json")
    if rc == 0 and isinstance(results, dict) and not results.get("interrupted"):
        res.update(state="finished", error="")
    elif rc in (130, -signal.SIGINT) or interrupted:
        res.update(state="interrupted", error="interrupted; the next run resumes from the checkpoint")
    else:
        reason = _last_error(log_path, offset)
        if rc is not None and rc < 0:
            reason = f"killed by {signal.Signals(-rc).name}" + (f" ({reason})" if reason else "")
        res.update(state="failed", error=reason or f"train.py exited with {rc}")
    _write_json(run_dir / "status.json", {**res, "finished": time.time()})
    return res


# ---------------------------------------------------------------------------------------- summary
def summary_rows(manifest: Manifest, out_dir, states: dict) -> list:
    """One summary row per subject (SUMMARY_FIELDS) from the run folders' results.json / status.json.

    Args:
        states: name -> this invocation's outcome {"state": "finished" | "skipped" | "failed" |
            "interrupted" | "not started", "error": str}; a missing name reads status.json.
    """
    rows = []
    out_dir = Path(out_dir)
    for s in manifest.subjects:
        run = out_dir / s.name
        status = _read_json(run / "status.json") or {}
        results = _read_json(run / "results.json")
        outcome = states.get(s.name) or {"state": status.get("state", "not started"), "error": status.get("error")}
        state = "interrupted" if outcome["state"] == "running" else outcome["state"]  # ended unrecorded
        row = dict.fromkeys(SUMMARY_FIELDS, "")
        row.update(name=s.name, status=state, peak_rss_mib=status.get("peak_rss_mib") or "")
        if state in ("failed", "interrupted", "not started"):
            row["error"] = " ".join(str(outcome.get("error") or "").split())
        elif isinstance(results, dict):
            test = results.get("test") or {}
            row.update({k: test.get(k) for k in ("psnr", "ssim", "lpips", "mouth_psnr", "mouth_ssim",
                                                 "mouth_lpips")})
            row.update(num_gaussians=results.get("num_gaussians"), iterations=results.get("iterations"),
                       train_seconds=results.get("train_seconds"),
                       peak_gpu_mib=results.get("peak_gpu_memory_mib"),
                       metric_convention=_convention(results))
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows


def _convention(results: dict) -> str:
    for holder in (results, results.get("model") or {}, results.get("test") or {}):
        for key in ("metric_convention", "convention"):
            if isinstance(holder.get(key), str):
                return holder[key]
    return "test split, Trainer.evaluate: PSNR / SSIM (11x11 Gaussian) / LPIPS on whole images; mouth: " \
           "bounding box of the visible lips + teeth, LPIPS on the crop resized to 64x64"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def write_summary(rows: list, out_dir) -> tuple:
    """Write DIR/summary.csv (every field, full precision) and DIR/summary.md (a table; the metric
    convention once below it), atomically. Returns the two paths."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    cols = [f for f in SUMMARY_FIELDS if f != "metric_convention"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in cols) + " |")
    conventions = sorted({r["metric_convention"] for r in rows if r["metric_convention"]})
    md += [""] + [f"Metric convention: {c}" for c in conventions]
    paths = (out_dir / "summary.csv", out_dir / "summary.md")
    for p, text in zip(paths, (buf.getvalue(), "\n".join(md) + "\n")):
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    return paths


# ---------------------------------------------------------------------------------------- the runner
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ray


def _max_node_resource(ray, key: str) -> float:
    return max((n.get("Resources", {}).get(key, 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


def run_many(manifest: Manifest, out_dir, address: str | None = None, gpus_per_subject: float | None = None,
             cpus_per_subject: float = 1, train_script=None, console=None) -> dict:
    """Reconstruct every subject of `manifest` into out_dir/<name>/ as Ray tasks, then write the summary.

    Uses the Ray session of this process when one is initialised, else `ray.init(address)` (None: a
    local instance on this machine; "auto" or "ray://host:10001": an existing cluster) and shuts it
    down at the end. Each subject is one task with `max_calls=1` (a fresh worker process),
    `num_cpus=cpus_per_subject`, `num_gpus=gpus_per_subject` (None: 1 when the cluster has GPUs, else
    0), no automatic retries (a rerun of the command retries). A failing subject never stops the others.

    Returns:
        {"rows": summary rows, "summary": (csv path, md path), "interrupted": bool, "failed": [names]}
    Raises:
        ImportError: Ray missing (the message says how to install the `cluster` extra).
        ValueError: per-subject resources that no node of the cluster has.
    KeyboardInterrupt (Ctrl-C) cancels the tasks; each passes SIGINT to its trainer and waits for its
    checkpoint; the summary is written and the result says interrupted.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ray = _import_ray()
    console = console or Console(stderr=True)
    out_dir = Path(out_dir).resolve()
    script = Path(train_script) if train_script else Path(__file__).resolve().parents[2] / "scripts" / "train.py"
    if cpus_per_subject <= 0:
        raise ValueError(f"--cpus-per-subject: expected > 0, got {cpus_per_subject}")
    jobs, states, invocation = {}, {}, f"{socket.gethostname()}:{os.getpid()}:{time.time()}"
    for s in manifest.subjects:
        source = s.source()
        plan = plan_subject(s, out_dir / s.name, source)
        if plan["action"] == "skip":
            states[s.name] = {"state": "skipped", "error": ""}
            continue
        args = [*s.train_args(), "--out", str(out_dir / s.name)] + ([plan["flag"]] if plan["flag"] else [])
        jobs[s.name] = ({"name": s.name, "run_dir": str(out_dir / s.name), "train_script": str(script),
                         "args": args, "source": source, "threads": max(1, int(cpus_per_subject)),
                         "cwd": os.getcwd(), "invocation": invocation}, plan["reason"])
    started = False
    if jobs and not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:  # resources every subject needs, checked before anything is written
        if jobs:
            if gpus_per_subject is None:
                gpus_per_subject = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            if gpus_per_subject < 0:
                raise ValueError(f"--gpus-per-subject: expected >= 0, got {gpus_per_subject}")
            for key, need in (("CPU", cpus_per_subject), ("GPU", gpus_per_subject)):
                have = _max_node_resource(ray, key)
                if need > have:
                    raise ValueError(f"--{key.lower()}s-per-subject {need:g}: no node of the Ray cluster has "
                                     f"more than {have:g} {key}s")
    except BaseException:
        if started:
            ray.shutdown()
        raise
    out_dir.mkdir(parents=True, exist_ok=True)
    interrupted = False
    try:
        if jobs:
            task = ray.remote(max_calls=1, num_cpus=cpus_per_subject, num_gpus=gpus_per_subject,
                              max_retries=0)(run_subject)
            for name in sorted(set(states) - set(jobs)):
                console.print(f"{name}: skipped (finished with the same config)", highlight=False)
            refs = {}
            for name, (job, reason) in jobs.items():
                refs[task.options(name=f"train_many:{name}").remote(job)] = name
                states[name] = {"state": "not started", "error": "cancelled before it started"}
                console.print(f"{name}: queued ({reason})", highlight=False)
            with Progress(TextColumn("[bold]subjects"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, disable=not console.is_terminal) as bar:
                ptask = bar.add_task("subjects", total=len(manifest.subjects), completed=len(manifest.subjects) - len(jobs))
                pending = list(refs)
                try:
                    while pending:
                        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                        for ref in ready:
                            name = refs[ref]
                            res = _outcome(ray, ref, out_dir / name)
                            states[name] = {"state": res["state"], "error": res.get("error", "")}
                            bar.advance(ptask)
                            console.print(_line(name, res, out_dir / name), highlight=False, soft_wrap=True)
                except KeyboardInterrupt:
                    interrupted = True
                    _cancel(ray, pending, refs, states, out_dir, console, invocation)
    finally:
        rows = summary_rows(manifest, out_dir, states)
        paths = write_summary(rows, out_dir)
        if started:
            ray.shutdown()
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    return {"rows": rows, "summary": paths, "interrupted": interrupted, "failed": failed}


def _outcome(ray, ref, run_dir: Path) -> dict:
    """A finished task's result; a crashed or cancelled worker's from status.json."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        status = _read_json(run_dir / "status.json") or {}
        if status.get("state") in ("finished", "failed", "interrupted"):
            return status
        msg = " ".join(str(exc).split())
        return {"state": "failed", "error": f"Ray task failed: {msg[-300:]}"}


def _cancel(ray, pending, refs, states, out_dir: Path, console, invocation: str) -> None:
    """Ctrl-C: cancel the tasks (running ones get KeyboardInterrupt and pass SIGINT to their trainer),
    wait until they have saved their checkpoints; a second Ctrl-C kills the workers."""
    console.print(f"interrupted: stopping {len(pending)} subject(s); each saves its checkpoint "
                  "(Ctrl-C again to kill them)")
    if not pending:
        return
    for ref in pending:
        ray.cancel(ref, force=False)
    try:
        ray.wait(pending, num_returns=len(pending), timeout=600)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
    for ref in pending:
        name = refs[ref]
        status = _read_json(out_dir / name / "status.json") or {}
        if status.get("invocation") == invocation:  # it started in this invocation (else: "not started")
            state = "interrupted" if status.get("state") == "running" else status.get("state", "interrupted")
            states[name] = {"state": state, "error": status.get("error") or "interrupted"}


def _line(name: str, res: dict, run_dir: Path) -> str:
    state = res.get("state")
    if state == "finished":
        r = _read_json(run_dir / "results.json") or {}
        t = r.get("test") or {}
        return (f"{name}: finished: PSNR {_fmt(t.get('psnr'))} SSIM {_fmt(t.get('ssim'))} "
                f"LPIPS {_fmt(t.get('lpips'))}, {r.get('num_gaussians')} Gaussians, "
                f"{_fmt(r.get('train_seconds'))} s")
    return f"{name}: {state}: {res.get('error', '')} (log: {run_dir / 'train.log'})"
