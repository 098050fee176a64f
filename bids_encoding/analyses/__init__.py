"""The analyses, siblings that never import each other: each one's fit function (a plain function that also
works in a notebook) and the outputs it writes.

``encoding`` (voxelwise encoding models), ``decoding`` (fMRI decoding and searchlight), ``embedding`` (latent
codes of a region), ``time_decoding`` and ``trf`` (EEG/MEG decoding over time and temporal response functions)
and ``group_stats`` (the group level's tests).
"""
