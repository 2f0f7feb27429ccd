"""Errors a user can act on. Each carries a message fit to show as-is (CLI, HTTP detail).

The leaf classes say which limit or fault it was, so that the HTTP service can answer each with
its own status and problem type; catch the base classes where the difference does not matter.
"""


class MofoError(Exception):
    """Base class for errors caused by input or settings, not by a bug."""


class ClipError(MofoError):
    """A clip cannot be used: unreadable, not a video, or outside the configured limits."""


class ClipNotFound(ClipError):
    """The clip's path does not exist (or is a directory)."""


class PathOutsideRoot(ClipError):
    """A clip's path is absolute, or leads out of the data root (``..``, a symbolic link)."""


class NotAVideo(ClipError):
    """The file is empty, corrupt, or holds no video stream."""


class EmptyClip(NotAVideo):
    """The file or upload has no bytes at all."""


class CorruptClip(NotAVideo):
    """The file is a video container, but its stream breaks or ends early (truncated)."""


class ClipTooLarge(ClipError):
    """The clip exceeds a limit (bytes, resolution, duration, frames), found before decoding."""


class FileTooLarge(ClipTooLarge):
    """The file has more bytes than allowed."""


class ResolutionTooHigh(ClipTooLarge):
    """The frames are wider or taller than allowed."""


class ClipTooLong(ClipTooLarge):
    """The clip lasts longer, or holds more frames, than allowed."""


class WorkTooLarge(ClipTooLarge):
    """Motion analysis of the clip would exceed a work limit (working size × frames, or a working
    long side from an extreme aspect ratio), found before its frames are decoded."""


class FrameSizeChanged(ClipError):
    """The frame size changes mid-stream; boxes for one size cannot be given in another."""


class ClipTooShort(ClipError):
    """The clip has fewer than two usable frames, so no motion can be measured."""


class Cancelled(MofoError):
    """The work was given up before it was done: a request's timeout or disconnect, or a job
    cancelled by its client."""


class DeviceError(MofoError):
    """The requested device is not available (e.g. CUDA asked for on a CPU-only machine)."""
