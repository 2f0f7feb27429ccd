"""Tooling that verifies and measures every GPU path on a machine with an NVIDIA GPU in one call
(``gpu/check.sh``; see gpu/README.md). Development only: not part of the installed product."""
