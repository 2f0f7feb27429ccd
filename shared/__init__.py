"""MOFO core library: clip decoding, TV-L1 optical flow, motion boundaries, motion boxes."""

# One import name per module: this folder is installed as mofo.shared (pyproject's package-dir).
# Imported under its folder's bare name (a checkout's root on sys.path), it stops here instead of
# loading a second copy of every module beside the installed one.
if __name__ != "mofo.shared":
    raise ImportError(f"import mofo.shared, not {__name__} (install the project: make setup)")

__version__ = "0.1.0"
