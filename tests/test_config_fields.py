"""Every config field is read somewhere (issue 16): a field that no code reads is a setting that
silently does nothing. The scan is static (AST): a field counts as read when the library or a script
accesses an attribute of that name or names it in a string constant (getattr tables such as the
trainer's FLAME_LR), anywhere outside config.py itself."""

import ast
import dataclasses
from pathlib import Path

from stavatar_ti.config import Config

ROOT = Path(__file__).resolve().parents[1]


def names_read(paths) -> set[str]:
    """Attribute names accessed and exact string constants in the Python files under `paths`."""
    seen = set()
    for base in paths:
        for path in sorted(base.rglob("*.py")):
            if path == ROOT / "stavatar_ti" / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute):
                    seen.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    seen.add(node.value)
    return seen


def config_fields() -> list[str]:
    cfg = Config()
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))]


def unread_fields(seen: set[str]) -> list[str]:
    return [key for key in config_fields() if key.split(".")[1] not in seen]


def test_every_config_field_is_read():
    seen = names_read([ROOT / "stavatar_ti", ROOT / "scripts"])
    assert unread_fields(seen) == []


def test_the_scan_finds_unread_fields(tmp_path):
    # the same scan over a tree that reads only two fields reports all the others
    (tmp_path / "mod.py").write_text("def f(cfg):\n    return cfg.model.uv_size, getattr(cfg.optim, 'network_lr')\n")
    missing = unread_fields(names_read([tmp_path]))
    assert "model.uv_size" not in missing and "optim.network_lr" not in missing
    assert "densify.pca_components" in missing and len(missing) == len(config_fields()) - 2


def test_every_value_range_names_a_config_field():
    # a range left behind for a removed field would silently check nothing
    from stavatar_ti.config import _RANGES

    assert sorted(set(_RANGES) - set(config_fields())) == []
