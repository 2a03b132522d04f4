"""Dataset readers: VHAP/GaussianAvatars, INSTA/metrical-tracker and IMavatar/PointAvatar exports,
converted at load time into one convention (`records`, `conventions`).

    load_dataset(root, format=None, **kwargs) -> SequenceDataset   # auto-detects the format
    detect_format(root) -> "vhap" | "insta" | "imavatar"
    load_vhap(root), load_insta(root, test_frames=None), load_imavatar(root, test_subdirs=None, ...)
    check_dataset(root, format=None, check_images=True, sample=None) -> DatasetReport
    check_head_model(dataset, head_model, num_vertices, ...)   # before training: errors / warnings
"""

from .check import DatasetReport, check_dataset, report_table, run_check
from .detect import FORMATS, detect_format, load_dataset, normalize_format
from .headmodel import check_head_model
from .imavatar import load_imavatar
from .insta import load_frame_file, load_insta
from .records import DatasetError, DatasetWarning, FrameRecord, SequenceDataset, read_image
from .vhap import load_vhap

__all__ = [
    "FORMATS", "DatasetError", "DatasetReport", "DatasetWarning", "FrameRecord", "SequenceDataset",
    "check_dataset", "check_head_model",
    "detect_format", "load_dataset", "load_frame_file", "load_imavatar", "load_insta", "load_vhap",
    "normalize_format", "read_image", "report_table", "run_check",
]
