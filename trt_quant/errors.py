"""The project's own exceptions: one sentence that names the fix, shown by the CLI without a traceback."""

from __future__ import annotations


class TrtQuantError(Exception):
    """A mistake the user can fix; the message is one sentence naming the fix (CLI exit code 2)."""


class ArtifactError(TrtQuantError):
    """An artifact directory or one of its files is missing, corrupt, modified or incompatible."""


class InputError(TrtQuantError):
    """Runtime inputs that do not fit the model (missing names, wrong dtype, wrong rank, bad shapes)."""


class GpuUnavailableError(TrtQuantError):
    """A GPU step was asked for on a machine without an NVIDIA GPU or without TensorRT."""


class EngineMismatchError(ArtifactError):
    """A TensorRT engine built for another GPU or TensorRT version (or unreadable by this one)."""
