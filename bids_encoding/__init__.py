"""bids-encoding: model-based encoding and decoding of brain data, as a BIDS App."""

__version__ = "0.1.0"
