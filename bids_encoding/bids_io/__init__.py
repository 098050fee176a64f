"""Reading BIDS inputs: datasets, runs, events, stimuli. Never writes, never fits a model."""

from .dataset import check_dataset, load_layout, validate_dataset
from .fmri import BoldRun, collect_bold_runs

__all__ = ["BoldRun", "check_dataset", "collect_bold_runs", "load_layout", "validate_dataset"]
