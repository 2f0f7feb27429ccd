"""Clips named by a path under a data root (the service's path requests, the workers' jobs):
resolved so that no path, ``..`` or symbolic link can lead outside the root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from mofo.shared.errors import ClipNotFound, PathOutsideRoot


def resolve_under_root(root: Path, relative: str) -> tuple[Path, str]:
    """``relative`` under ``root`` → (real path, id); the id is the POSIX path under the root,
    normalised (``a/../b.mp4`` is ``b.mp4``), as clips under a folder are named.

    Symbolic links are followed before the check. Messages never show ``root`` itself.
    """
    if "\x00" in relative or relative.startswith(("/", "\\")) or ":" in relative.split("/")[0]:
        raise PathOutsideRoot(f"path {relative!r} must be relative to the data root")
    root = Path(root).resolve()
    try:
        target = (root / relative).resolve()
        is_file = target.is_file()
    except (OSError, ValueError) as exc:  # name too long, too many links, ...
        why = getattr(exc, "strerror", None) or exc
        raise ClipNotFound(f"path {relative[:200]!r} cannot be read: {why}") from None
    if not target.is_relative_to(root):
        raise PathOutsideRoot(f"path {relative!r} leads outside the data root")
    rel = PurePosixPath(*target.relative_to(root).parts).as_posix()
    if not is_file:
        raise ClipNotFound(f"{rel}: no such file under the data root")
    return target, rel
