"""The actors package's exceptions."""


class ActorsError(Exception):
    """Root of every error raised by `actors`."""


class StepTimedOut(ActorsError):
    """A reply an order was waiting for never came (its peer died or stalled)."""


class EventRejected(ActorsError):
    """The store refused an order's event under the status rules."""
