"""Many subjects (scripts/train_many.py, stavatar_ti.tools.many_subjects): manifest validation, and on a
local Ray instance (2 CPUs, 1 per subject) two synthetic subjects and a broken one that fails alone,
Ctrl-C that leaves resumable checkpoints, a rerun that resumes them, and a rerun that skips the
finished subjects and retries the failed one."""

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stavatar_ti.config import load_config, to_dict
from stavatar_ti.tools.many_subjects import ManifestError, load_manifest, plan_subject, run_many

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
ITERS = 6
# a few seconds per subject: 6 iterations on a 32x32 sequence, a checkpoint every 2
TINY = {"train.iterations": ITERS, "train.checkpoint_every": 2, "model.uv_size": 16, "train.max_test_frames": 1,
        "train.eval_fractions": [1.0]}


def _cli():
    spec = importlib.util.spec_from_file_location("train_many_cli", ROOT / "scripts" / "train_many.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(path: Path, doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------ manifest (no Ray)
@pytest.fixture
def folders(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    (tmp_path / "v.mp4").write_bytes(b"not really a video")
    return tmp_path


def test_manifest_resolves_paths_and_overrides(folders):
    m = load_manifest(_write(folders / "m.yaml", {
        "config": str(SMOKE), "overrides": {"train.iterations": 7, "train.eval_fractions": [0.5, 1.0]},
        "subjects": [{"name": "a", "data": "d1"},
                     {"name": "b", "video": "v.mp4", "video_size": 64,
                      "overrides": {"model.binding": "hard", "train.iterations": 9, "optim.scene_extent": None}},
                     {"name": "c", "data": str(folders / "d2"), "overrides": ["train.seed=5"]}]}))
    a, b, c = m.subjects
    assert a.data == folders / "d1" and a.video is None and b.video == folders / "v.mp4" and c.data == folders / "d2"
    # the resolved config is what train.py builds from the same strings (the run's config.yaml)
    assert a.resolved == to_dict(load_config(SMOKE, ["train.iterations=7", "train.eval_fractions=[0.5,1.0]"]))
    assert b.resolved["train"]["iterations"] == 9 and b.resolved["model"]["binding"] == "hard"
    assert b.resolved["optim"]["scene_extent"] is None and c.resolved["train"]["seed"] == 5
    assert b.train_args()[-4:] == ['train.eval_fractions=[0.5, 1.0]', 'model.binding="hard"', "train.iterations=9",
                                   "optim.scene_extent=null"]
    assert b.source() == {"video": str(folders / "v.mp4"), "video_size": 64,
                          "sha256": hashlib.sha256(b"not really a video").hexdigest()}


@pytest.mark.parametrize("doc, expect", [
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "d1"}, {"name": "a", "data": "d2"}]},
     r"subjects\[1\] 'a': duplicate name \(also subjects\[0\]\)"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "missing"}]}, r"subjects\[0\] 'a': data folder .*missing not found"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "video": "nope.mp4"}]}, r"subjects\[0\] 'a': video file .*nope.mp4 not found"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "d1", "video": "v.mp4"}]}, r"exactly one of data"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "d1", "overrides": {"train.iterationz": 3}}]},
     r"subjects\[0\] 'a': .*unknown config key 'train.iterationz'"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "d1", "overrides": {"model.binding": "soft"}},
                                      {"name": "b", "data": "d2", "overrides": {"train.iterations": "many"}}]},
     r"subjects\[1\] 'b': train.iterations: cannot use"),
    ({"config": "SMOKE", "overrides": {"model.sh_degree": 7}, "subjects": [{"name": "a", "data": "d1"}]},
     r"subjects\[0\] 'a': model.sh_degree"),
    ({"config": "SMOKE", "subjects": [{"name": "../up", "data": "d1"}]}, r"subjects\[0\]: name must be a folder name"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "data": "d1", "dta": "x"}]}, r"subjects\[0\] 'a': unknown key 'dta'"),
    ({"config": "missing.yaml", "subjects": [{"name": "a", "data": "d1"}]}, r"config file .*missing.yaml not found"),
    ({"config": "SMOKE", "subjects": [{"name": "a", "video": "v.mp4"}, {"name": "b", "video": "v.mp4"}]},
     r"subjects\[1\] 'b': shares train.py's preprocessing cache out/videos/v-512"),
    ({"config": "SMOKE", "subjects": []}, r"subjects must be a non-empty list"),
    ({"config": "SMOKE", "subject": []}, r"unknown key 'subject'"),
])
def test_manifest_errors_are_one_line_and_name_file_and_entry(folders, doc, expect, capsys):
    doc = json.loads(json.dumps(doc).replace('"SMOKE"', json.dumps(str(SMOKE))))
    path = _write(folders / "bad.yaml", doc)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and re.search(expect, msg), msg
    # the CLI: the same line, exit 2, nothing written
    out = folders / "out"
    assert _cli().main([str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {msg}"
    assert not out.exists()


def test_cli_without_ray_says_how_to_install(folders, monkeypatch, capsys):
    path = _write(folders / "m.yaml", {"config": str(SMOKE), "subjects": [{"name": "a", "data": "d1"}]})
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert _cli().main([str(path), "--out", str(folders / "out")]) == 1
    assert 'pip install -e ".[cluster]"' in capsys.readouterr().err
    assert not (folders / "out").exists()


# ------------------------------------------------------------------------------------ on a local Ray instance
@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (its start costs seconds): 2 CPUs, a small object store."""
    ray = pytest.importorskip("ray", reason='needs the cluster extra: pip install -e ".[cluster]"')
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    from stavatar_ti.synthetic import generate_sequence

    root = tmp_path_factory.mktemp("subjects")
    a = generate_sequence(root / "a", frames=6, size=32, seed=3)
    shutil.copytree(a, root / "b")
    shutil.copytree(a, root / "broken")
    (root / "broken" / "transforms_train.json").write_text("{not json")
    return root


def _summary(out: Path) -> dict:
    with open(out / "summary.csv", newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def _wait_for(pred, timeout: float):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.slow
def test_many_subjects_interrupt_resume_fail_alone_and_skip(ray_address, sequences, tmp_path):
    manifest_path = _write(tmp_path / "manifest.yaml", {
        "config": str(SMOKE), "overrides": TINY,
        # a and b train longer than a's first checkpoint by far, so that Ctrl-C finds both running on a
        # fast machine too (with b at ITERS, b could finish first on an idle machine and free its CPU)
        "subjects": [{"name": "a", "data": str(sequences / "a"), "overrides": {"train.iterations": 2 * ITERS}},
                     {"name": "b", "data": str(sequences / "b"),
                      "overrides": {"train.seed": 4, "train.iterations": 2 * ITERS}},
                     {"name": "broken", "data": str(sequences / "broken")}]})
    manifest = load_manifest(manifest_path)
    out = tmp_path / "runs"

    # 1. the CLI on the running Ray instance (--address); Ctrl-C once subject a has its first checkpoint.
    # a and b hold both CPUs, so broken is still queued.
    env = dict(os.environ, STAVATAR_CPU_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train_many.py"), str(manifest_path),
                             "--out", str(out), "--address", ray_address], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = _wait_for(lambda: (out / "a" / "checkpoints" / "last.pt").exists(), 300)
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert started, "subject a never wrote a checkpoint"
    assert proc.returncode == 130, log[-3000:]
    rows = _summary(out)
    assert rows["a"]["status"] == "interrupted" and rows["broken"]["status"] == "not started", rows
    assert json.loads((out / "a" / "status.json").read_text())["state"] == "interrupted"
    assert "checkpoint saved" in (out / "a" / "train.log").read_text()
    assert not (out / "a" / "results.json").exists()

    # 2. rerun: the interrupted subjects resume from their checkpoints and finish; broken fails alone
    assert plan_subject(manifest.subjects[0], out / "a")["flag"] == "--resume"
    res = run_many(manifest, out, cpus_per_subject=1)
    assert not res["interrupted"] and res["failed"] == ["broken"]
    rows = _summary(out)
    for name, iters in (("a", 2 * ITERS), ("b", 2 * ITERS)):
        run = out / name
        results = json.loads((run / "results.json").read_text())
        assert rows[name]["status"] == "finished" and results["iterations"] == iters
        assert yaml.safe_load((run / "config.yaml").read_text()) == manifest.subjects["ab".index(name)].resolved
        # the summary holds the run's own numbers
        for key in ("psnr", "ssim", "lpips", "mouth_psnr", "mouth_ssim"):
            expected = results["test"].get(key)
            assert rows[name][key] == "" if expected is None else float(rows[name][key]) == expected, key
        assert float(rows[name]["train_seconds"]) == results["train_seconds"]
        assert int(rows[name]["num_gaussians"]) == results["num_gaussians"]
        assert float(rows[name]["peak_rss_mib"]) > 100  # torch + taichi alone hold more than that
        assert rows[name]["metric_convention"]
        log = (run / "train.log").read_text()
        assert f"iteration {iters}/{iters}  loss" in log  # periodic progress lines without a terminal
    # (rich wraps the trainer's messages at 80 columns in a log file)
    resumed = re.search(r"resumed from.*?at\s+iteration\s+(\d+)", (out / "a" / "train.log").read_text(), re.S)
    assert resumed and 2 <= int(resumed.group(1)) < 2 * ITERS
    assert rows["broken"]["status"] == "failed"
    assert "transforms_train.json" in rows["broken"]["error"] and "\n" not in rows["broken"]["error"]
    md = (out / "summary.md").read_text()
    assert md.count("\n| ") == 3 and "Metric convention:" in md

    # 3. rerun: finished subjects are skipped untouched, the failed one is retried (and fails again)
    before = {n: ((out / n / "results.json").stat().st_mtime_ns, (out / n / "train.log").read_text())
              for n in ("a", "b")}
    res = run_many(manifest, out, cpus_per_subject=1)
    rows = _summary(out)
    assert [rows[n]["status"] for n in ("a", "b", "broken")] == ["skipped", "skipped", "failed"]
    assert res["failed"] == ["broken"]
    for n in ("a", "b"):
        assert before[n] == ((out / n / "results.json").stat().st_mtime_ns, (out / n / "train.log").read_text())
        assert rows[n]["psnr"] != ""
    assert (out / "broken" / "train.log").read_text().count("\n==== ") + 1 == 2

    # a changed config is not "finished": it retrains from scratch
    changed = load_manifest(_write(tmp_path / "changed.yaml", {**yaml.safe_load(manifest_path.read_text()),
                                                               "overrides": {**TINY, "train.seed": 99}}))
    assert plan_subject(changed.subjects[0], out / "a") == {"action": "run", "flag": "--overwrite",
                                                            "reason": "config changed"}


def test_resources_no_node_has_are_refused_before_anything_is_written(ray_address, folders):
    manifest = load_manifest(_write(folders / "m.yaml", {"config": str(SMOKE),
                                                         "subjects": [{"name": "a", "data": "d1"}]}))
    out = folders / "out"
    with pytest.raises(ValueError, match=r"^--cpus-per-subject 64: no node of the Ray cluster has more than 2 CPUs"):
        run_many(manifest, out, cpus_per_subject=64)
    with pytest.raises(ValueError, match=r"^--gpus-per-subject 1: no node of the Ray cluster has more than 0 GPUs"):
        run_many(manifest, out, gpus_per_subject=1)
    assert not out.exists()
