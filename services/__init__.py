"""The motion service (``mofo serve``): the HTTP motion API and its page."""

# One import name per module: this folder is installed as mofo.services (pyproject's package-dir).
# Imported under its folder's bare name (a checkout's root on sys.path), it stops here instead of
# loading a second copy of every module beside the installed one.
if __name__ != "mofo.services":
    raise ImportError(f"import mofo.services, not {__name__} (install the project: make setup)")
