"""MOFO core library: clip decoding, TV-L1 optical flow, motion boundaries, motion boxes."""

__version__ = "0.1.0"
