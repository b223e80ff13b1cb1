"""What went wrong, by cause. A service's exit status follows from the cause, never from Python's
exception type: a numpy ``ValueError`` or a full disk's ``OSError`` while running is not a
configuration problem, and must not stop a service for good."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A setting, a file or a model that a person must fix: exit 2, which systemd does not restart."""


class CredentialsRefused(RuntimeError):
    """The broker refused this client for a reason retrying will not fix (credentials, a ban, a
    refused certificate, a disabled user): exit 3, not restarted."""


class SourceLost(RuntimeError):
    """The camera or video stopped giving frames while running: exit 4, restarted (it may come back)."""


#: Exit status per cause; anything else that ends a running service exits 1, and systemd restarts it.
EXIT_STATUS = ((ConfigurationError, 2), (CredentialsRefused, 3), (SourceLost, 4))


def exit_status(exc: BaseException) -> int:
    return next((code for cls, code in EXIT_STATUS if isinstance(exc, cls)), 1)
