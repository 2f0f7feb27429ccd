"""Errors a user can act on. Each carries a message fit to show as-is (CLI, HTTP detail)."""


class MofoError(Exception):
    """Base class for errors caused by input or settings, not by a bug."""


class ClipError(MofoError):
    """A clip cannot be used: unreadable, not a video, or outside the configured limits."""


class NotAVideo(ClipError):
    """The file is empty, corrupt, or holds no video stream."""


class ClipTooLarge(ClipError):
    """The clip exceeds a limit (bytes, resolution, duration, frames), found before decoding."""


class ClipTooShort(ClipError):
    """The clip has fewer than two usable frames, so no motion can be measured."""


class DeviceError(MofoError):
    """The requested device is not available (e.g. CUDA asked for on a CPU-only machine)."""
