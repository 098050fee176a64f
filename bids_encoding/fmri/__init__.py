"""fMRI data access, the one home of it: masks and regions (``masks``), BOLD as samples x locations
(``bold``), event designs on the TR grid (``design``) and trial responses (``trials``).

Every fMRI analysis reads its data through these modules, so that a change to how BOLD
is read changes encoding, decoding and embedding alike.
"""
