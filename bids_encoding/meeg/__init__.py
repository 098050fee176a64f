"""EEG/MEG data access: reading, preprocessing and epochs (``preprocessing``)."""
