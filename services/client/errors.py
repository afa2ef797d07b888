"""The client's exit codes and the one exception that carries them to click."""

from __future__ import annotations

from enum import IntEnum

import click


class ExitCode(IntEnum):
    # The task completed, or the command did what it was asked (a pause was accepted, a list was printed).
    OK = 0
    # The task failed or was revoked, or the server refused the operation (409, 410, 413, 422, 5xx).
    FAILED = 1
    # A usage or configuration error: a bad argument (unknown or ambiguous task, bad date), a missing or
    # wrong API key (401), a server that cannot be reached. Click uses 2 for usage errors too.
    USAGE = 2


class ClientError(click.ClickException):
    """An error shown as one line (`Error: ...`) on stderr, ending the command with `exit_code`."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = int(exit_code)
