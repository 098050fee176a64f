"""Models: encoding (features -> brain) and their cross-validation. No BIDS, no Nipype here."""
