"""The errors pfnr raises. The CLI maps each class to an exit code in one place."""


class PfnrError(Exception):
    """Base class: a failure the user can act on; its message is one line."""

    exit_code = 1


class InputError(PfnrError):
    """A video, frame range or output path the user gave cannot be used."""


class ArchiveError(PfnrError):
    """An archive file is missing, corrupt, truncated, foreign or too new."""


class ConfigError(PfnrError):
    """Settings that cannot work together (bad preset, capacity, bits, ...)."""

    exit_code = 2


class UsageError(PfnrError):
    """A request that does not make sense for this archive (unknown session, ...)."""

    exit_code = 2


class DistributedError(PfnrError):
    """The processes of one torchrun encode disagree or lost each other."""
