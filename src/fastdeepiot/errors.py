"""Typed errors. The CLI turns every `UserError` into its message and exit code 2."""

from numbers import Integral


class UserError(Exception):
    """Bad input the user can fix: the message says what is wrong and what to do."""


class UnknownNameError(UserError, KeyError):
    """A name (device, layer family, task, ...) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(UserError):
    """The measurement database is unreadable, corrupt, or from another device."""


class UnmodelledLayerError(UserError):
    """A network contains layers the time model cannot price."""


class DataMissingError(UserError):
    """A data set is not installed; the message says how to install it."""


class TargetUnreachableError(UserError):
    """A compression target (time or accuracy) cannot be met."""


class CheckpointError(UserError):
    """A checkpoint is unreadable, unsafe, malformed, too large, or made for another task or network."""


def check_whole(value, name: str, lo: int = 0, hi: int | None = None) -> int:
    """`value` as an int when it is a whole number >= `lo` (and <= `hi` when given; a numpy integer too,
    never a bool), else a UserError naming `name`: the one check of the API's count, seed and thread
    arguments (and CompressConfig's counts)."""
    if (isinstance(value, bool) or not isinstance(value, Integral) or value < lo
            or (hi is not None and value > hi)):
        rule = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise UserError(f"{name} must be a whole number {rule}, got {value!r}")
    return int(value)


MAX_SEED = 2**32 - 1  # numpy's and torch's generators (and scikit-learn's random_state) take seeds up to this


def check_seed(seed, name: str = "seed") -> int:
    """A seed every generator here takes as it is: a whole number in [0, MAX_SEED] (numpy would fold a
    larger one modulo 2**32 into another run's seed, torch overflows, scikit-learn refuses it)."""
    return check_whole(seed, name, 0, MAX_SEED)
