"""Batch workers (``mofo worker``): RQ jobs that fill the Redis box cache."""

# One import name per module: this folder is installed as mofo.workers (pyproject's package-dir).
# Imported under its folder's bare name (a checkout's root on sys.path), it stops here instead of
# loading a second copy of every module beside the installed one.
if __name__ != "mofo.workers":
    raise ImportError(f"import mofo.workers, not {__name__} (install the project: make setup)")
