"""The package layout's rules (README "Layout"): a thin top level, no import of the package root from
inside the package, kernels/ free of the project, and the rendering framework free of the avatar code."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stavatar_ti"


def _imports(path: Path, package: str):
    """Absolute module names imported by `path` (relative imports resolved against `package`)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            if not node.module:
                for alias in node.names:  # `from .. import x`: x may be a module
                    yield f"{mod}.{alias.name}"


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts[0:1] = ["stavatar_ti", "kernels"]
    return ".".join(parts[:-1])


def _modules(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_top_level_is_thin():
    modules = sorted(p.name for p in PKG.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 3, modules


def test_no_module_imports_the_package_root():
    bad = []
    for path in _modules(PKG):
        if path == PKG / "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.module and node.level:
                pkg = _package_of(path)
                target = ".".join(pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)])
                if target == "stavatar_ti":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == "stavatar_ti" for a in node.names):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module == "stavatar_ti":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_kernels_import_nothing_of_the_project():
    bad = [(p.name, m) for p in _modules(ROOT / "kernels") for m in _imports(p, _package_of(p))
           if m.startswith("stavatar_ti") and not m.startswith("stavatar_ti.kernels")]
    assert not bad, bad


def test_render_imports_nothing_of_the_avatar_code():
    allowed = ("stavatar_ti.render", "stavatar_ti.kernels")
    bad = [(p.name, m) for p in _modules(PKG / "render") for m in _imports(p, _package_of(p))
           if m.startswith("stavatar_ti") and not m.startswith(allowed)]
    assert not bad, bad


def test_data_flows_one_way():
    """Lower layers never import higher ones (README "Layout": frame -> head model -> avatar ->
    rasterizer -> loss -> densify -> training -> api/tools)."""
    higher = {
        "render": ("flame", "uv", "model", "densify", "temporal", "training", "api", "tools", "data", "video"),
        "flame": ("model", "densify", "temporal", "training", "api", "tools", "video", "synthetic"),
        "uv": ("model", "densify", "temporal", "training", "api", "tools"),
        "model": ("densify", "temporal", "training", "api", "tools", "data"),
        "losses": ("model", "densify", "temporal", "training", "api", "tools"),
        "densify": ("temporal", "training", "api", "tools"),
        "temporal": ("training", "api", "tools"),
        "training": ("api", "tools"),
    }
    bad = []
    for sub, forbidden in higher.items():
        for p in _modules(PKG / sub):
            for m in _imports(p, _package_of(p)):
                parts = m.split(".")
                if len(parts) > 1 and parts[0] == "stavatar_ti" and parts[1] in forbidden:
                    bad.append((str(p.relative_to(ROOT)), m))
    assert not bad, bad
