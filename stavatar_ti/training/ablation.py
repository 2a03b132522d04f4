"""Ablation of STAvatar's two contributions on one dataset (issue: Temporal ADC):
1. hard binding + vanilla ADC (GaussianAvatars-style baseline), 2. soft binding + vanilla ADC,
3. soft binding + Temporal ADC with the paper's sequential cluster schedule, 4. the same with the
interleaved schedule. Same data, same held-out frames, same config otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import load_config
from .trainer import Trainer

VARIANTS = (
    ("hard + vanilla ADC", ["model.binding=hard", "densify.densifier=vanilla"]),
    ("soft + vanilla ADC", ["model.binding=soft", "densify.densifier=vanilla"]),
    ("soft + Temporal ADC (paper schedule)", ["model.binding=soft", "densify.densifier=temporal",
                                              "densify.cluster_schedule=sequential"]),
    ("soft + Temporal ADC (interleaved)", ["model.binding=soft", "densify.densifier=temporal",
                                           "densify.cluster_schedule=interleaved"]),
)


def _fmt(x, digits):
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    """The ablation table: whole-image and mouth-region PSNR / SSIM / LPIPS, #Gaussians, wall time."""
    head = ("| variant | PSNR | SSIM | LPIPS | mouth PSNR | mouth SSIM | mouth LPIPS | #Gaussians | train s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, r in rows:
        t = r.get("test", {})
        lines.append(f"| {name} | {_fmt(t.get('psnr'), 2)} | {_fmt(t.get('ssim'), 4)} | {_fmt(t.get('lpips'), 4)} | "
                     f"{_fmt(t.get('mouth_psnr'), 2)} | {_fmt(t.get('mouth_ssim'), 4)} | "
                     f"{_fmt(t.get('mouth_lpips'), 4)} | {r.get('num_gaussians')} | {r.get('train_seconds', 0):.0f} |")
    return head + "\n".join(lines) + "\n"


def run_ablation(config, data, out, overrides=(), console=None, variants=None, reuse: bool = False) -> str:
    """Train the variants (1-based numbers in `variants`, default all) into out/<n>/ and write
    out/ablation.md (returned) and .json. With `reuse`, a variant whose out/<n>/results.json exists
    is not trained again (its recorded results are used)."""
    out = Path(out)
    rows = []
    for i, (name, extra) in enumerate(VARIANTS, start=1):
        if variants is not None and i not in variants:
            continue
        done = out / str(i) / "results.json"
        if reuse and done.exists():
            rows.append((name, json.loads(done.read_text())))
            continue
        cfg = load_config(config, list(overrides) + extra)
        results = Trainer(cfg, data, out / str(i), console=console).run()
        rows.append((name, results))
    table = markdown_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(table)
    (out / "ablation.json").write_text(json.dumps({n: {k: v for k, v in r.items() if k != "history"}
                                                   for n, r in rows}, indent=2))
    return table
