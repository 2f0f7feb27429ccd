"""MOFO pretraining, finetuning and evaluation under DeepSpeed (``mofo pretrain``, ...)."""

# One import name per module: this folder is installed as mofo.training (pyproject's package-dir).
# Imported under its folder's bare name (a checkout's root on sys.path), it stops here instead of
# loading a second copy of every module beside the installed one.
if __name__ != "mofo.training":
    raise ImportError(f"import mofo.training, not {__name__} (install the project: make setup)")
