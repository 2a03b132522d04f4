"""kernels/ must ship as stavatar_ti.kernels in a normal wheel (not as a top-level `kernels`)."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_import_name():
    import stavatar_ti.kernels as k

    assert Path(k.__file__).resolve().parent == ROOT / "kernels"


def test_readme_usage_example_runs():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    out = scope["out"]
    assert out.image.shape == (512, 512, 3) and scope["sh"].grad.abs().sum() > 0


@pytest.mark.slow
def test_wheel_contains_kernels_subpackage(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("stavatar_ti-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in (ROOT / "kernels").glob("*.py"):
        assert f"stavatar_ti/kernels/{module.name}" in names
    # every subpackage of the source tree ships
    for init in (ROOT / "stavatar_ti").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, rel
    assert not any(n.startswith("kernels/") for n in names)
