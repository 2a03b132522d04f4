"""Does a dataset's head model fit the configured one? (one-line errors and warnings before training)

Trackers store parameters of a specific head model: VHAP uses FLAME 2023 with 120 teeth vertices and
a per-vertex ``static_offset`` (5143 rows), metrical-tracker/INSTA and IMavatar/PointAvatar use
FLAME 2020 (see each reader's ``HEAD_MODEL``). Driving another model with them either fails deep
inside the model (static offsets with the wrong row count) or silently renders a different face.
`check_head_model` turns the first into a `DatasetError` naming the parameter file and the setting to
change, and the second, plus any coefficients cut to the configured ``model.n_shape`` /
``model.n_expr``, into `DatasetWarning`s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import DatasetError, SequenceDataset, warn

FLAME_FILES = {"flame2023": "flame2023.pkl", "flame2020": "FLAME2020/generic_model.pkl"}
FLAME_NAMES = {"flame2023": "FLAME 2023 (+ teeth)", "flame2020": "FLAME 2020"}


def configured_version(head_model: str) -> str | None:
    """Which FLAME release a ``model.head_model`` setting names, from the file name.

    Returns:
        "open_head", "flame2023" (name contains 2023), "flame2020" (2020 or ``generic_model``), or
        None when the name does not tell.
    """
    if str(head_model) == "open_head":
        return "open_head"
    name = Path(str(head_model)).name.lower()
    if "2023" in name:
        return "flame2023"
    if "2020" in name or name.startswith("generic_model"):
        return "flame2020"
    return None


def check_head_model(dataset: SequenceDataset, head_model: str, num_vertices: int, num_template_vertices: int,
                     n_shape: int, n_expr: int, use_static_offset: bool = True) -> list:
    """Check a loaded dataset against the configured head model before training.

    Args:
        dataset: the loaded `SequenceDataset` (its ``head_model`` and frames' params / params_path).
        head_model: the ``model.head_model`` setting ("open_head" or a FLAME file path).
        num_vertices, num_template_vertices: vertex counts of the built model with / without teeth
            (the ``static_offset`` row counts `FlameModel` accepts).
        n_shape, n_expr: ``model.n_shape`` / ``model.n_expr`` (the parameter table pads or truncates).
        use_static_offset: False when the run ignores the data's static offsets
            (``model.disable_static_offset``); their row count is then not checked.
    Returns:
        list of the warning messages issued (each also issued as a `DatasetWarning`).
    Raises:
        DatasetError: "<parameter file>: static_offset has R vertex rows but model.head_model=... has
            ...; the data was tracked with <model>; set model.head_model=<file>" when the static offsets
            do not fit the model (the message names the setting to change).
    """
    frames = dataset.frames
    if not frames:
        return []
    data_model = dataset.head_model
    first = min(frames, key=lambda f: f.timestep)
    where = first.params_path or dataset.root
    tracked = FLAME_NAMES.get(data_model, data_model or "another head model")
    fix = (f"set model.head_model=<path to {FLAME_FILES[data_model]}>" if data_model in FLAME_FILES
           else "set model.head_model to the head model the data was tracked with")
    offset = first.params.get("static_offset")
    if offset is not None and use_static_offset:
        rows = int(np.shape(offset)[0])
        if rows not in (num_vertices, num_template_vertices):
            raise DatasetError(f"{where}: static_offset has {rows} vertex rows but model.head_model={head_model} has "
                               f"{num_template_vertices} ({num_vertices} with teeth); the data was tracked with "
                               f"{tracked}; {fix}")
    messages = []
    configured = configured_version(head_model)
    if data_model is not None and configured is not None and configured != data_model:
        named = f" ({FLAME_NAMES[configured]})" if configured in FLAME_NAMES else ""
        messages.append(f"{where}: the data was tracked with {tracked} but model.head_model={head_model}{named}; "
                        f"its coefficients will drive a different head; {fix}")
    for key, size, flag in (("expr", n_expr, "model.n_expr"), ("shape", n_shape, "model.n_shape")):
        have = int(np.size(first.params.get(key, ())))
        if have > size:
            messages.append(f"{where}: {key} has {have} coefficients, {flag}={size} keeps the first {size} "
                            f"(set {flag}={have} to use them all)")
    for m in messages:
        warn(m)
    return messages
