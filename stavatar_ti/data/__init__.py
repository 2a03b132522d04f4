"""Dataset readers: VHAP/GaussianAvatars, INSTA/metrical-tracker and IMavatar/PointAvatar exports,
converted at load time into one convention (`records`, `conventions`).

    load_dataset(root, format=None, **kwargs) -> SequenceDataset   # auto-detects the format
    detect_format(root) -> "vhap" | "insta" | "imavatar"
    load_vhap(root), load_insta(root, test_frames=350), load_imavatar(root, test_subdirs=None, ...)
    check_dataset(root, format=None, check_images=True, sample=None) -> DatasetReport
"""

from .check import DatasetReport, check_dataset, report_table, run_check
from .detect import FORMATS, detect_format, load_dataset, normalize_format
from .imavatar import load_imavatar
from .insta import load_frame_file, load_insta
from .records import DatasetError, FrameRecord, SequenceDataset, read_image
from .vhap import load_vhap

__all__ = [
    "FORMATS", "DatasetError", "DatasetReport", "FrameRecord", "SequenceDataset", "check_dataset",
    "detect_format", "load_dataset", "load_frame_file", "load_imavatar", "load_insta", "load_vhap",
    "normalize_format", "read_image", "report_table", "run_check",
]
