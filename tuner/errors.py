"""The project's own exceptions."""


class TunerError(Exception):
    """A problem the user can fix: the CLI prints it as one line and exits with code 2."""


class NvmlError(Exception):
    """NVML answered with an error code (see `tuner.hardware.nvml`)."""


class NvmlUnavailable(NvmlError):
    """NVML cannot be used on this machine: no library, no driver, or no GPU."""


class NvmlNotSupported(NvmlError):
    """This GPU or driver does not offer the NVML call asked for."""


class GpuLost(NvmlError):
    """The GPU stopped answering (fell off the bus, was reset or removed)."""
