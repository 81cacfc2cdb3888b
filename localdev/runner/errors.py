"""The runner's one error: what it cannot drive as given."""


class RunnerError(Exception):
    """The app, host.json or a connection cannot be driven as given; the message says how to fix it."""
