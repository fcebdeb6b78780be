"""Error types that decide the CLI's exit code."""


class SpecError(ValueError):
    """Bad user input (spec key, file, value). The CLI prints the message on one line and exits 2."""


class RunError(RuntimeError):
    """A failure while running (workers crashed, tracking store unreachable). Exit code 1."""


class Terminated(KeyboardInterrupt):
    """Stopped by SIGTERM (a preempted node, a drain, `kill`) after checkpointing: exit code 143 (128 + 15)."""
