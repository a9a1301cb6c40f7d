"""What the HAProxy adapter raises: one small hierarchy, so the sync engine can tell "nothing
was sent" (:class:`UnsafeRuntimeArgument`) from "HAProxy's state is now unknown"
(:class:`RuntimeConnectionLost`) and from "HAProxy said no" (:class:`RuntimeCommandError`)."""

from __future__ import annotations


class HAProxyRuntimeError(Exception):
    """Base class of everything the adapter raises."""


class UnsafeRuntimeArgument(HAProxyRuntimeError, ValueError):
    """A key, value, map path or raw command failed validation; nothing was sent."""


class RuntimeUnavailable(HAProxyRuntimeError):
    """The Runtime API socket cannot be reached (HAProxy down, wrong path, refused)."""


class RuntimeConnectionLost(RuntimeUnavailable):
    """The connection broke (EOF, reset, timeout) while commands were in flight.

    ``completed`` replies were received; the outcome of the others is unknown, so the
    caller must re-read state (or resync) rather than blindly resend a write.
    """

    def __init__(self, message: str, completed: int = 0) -> None:
        super().__init__(message)
        self.completed = completed


class RuntimeCommandError(HAProxyRuntimeError):
    """HAProxy answered a command with an error or an unexpected reply."""

    def __init__(self, command: str, reply: str, message: str = "") -> None:
        self.command = command
        self.reply = reply
        super().__init__(message or f"{command!r} failed: {reply.strip()[:500]!r}")
