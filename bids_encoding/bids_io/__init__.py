"""Reading BIDS inputs: datasets, runs, events, stimuli, and this app's own participant outputs for the group
level. Never writes, never fits a model."""

from .dataset import check_dataset, dataset_root, load_layout, validate_dataset
from .fmri import BoldRun, check_same_grid, collect_bold_runs
from .meeg import MEEGRun, collect_meeg_runs, datatypes_present, read_recording
from .runs import Run

__all__ = ["BoldRun", "MEEGRun", "Run", "check_dataset", "check_same_grid", "collect_bold_runs", "collect_meeg_runs", "dataset_root", "datatypes_present",
           "load_layout", "read_recording", "validate_dataset"]
