"""Following a task until it ends: a live progress bar on a terminal, a plain line per change otherwise.
Ctrl-C asks whether to pause the task, revoke it, or detach (stop watching, the task goes on)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from services.client.api import Api
from services.client.errors import ExitCode
from services.client.render import (
    FINAL_STATES,
    SHORT_ID,
    Output,
    countdown,
    done_of_total,
    eta,
    percent,
    rate,
    task_summary,
)

POLL_SECONDS = 0.5
# Without a terminal, a progress line is printed at most this often (a change of state always is).
PLAIN_EVERY_SECONDS = 2.0
# How long a pause or revoke chosen after Ctrl-C waits for the worker to confirm it (the API's maximum).
CONFIRM_WAIT_SECONDS = 30
INTERRUPT_CHOICES = ("pause", "revoke", "detach")


def outcome(task: dict[str, Any]) -> ExitCode:
    """0 when the task completed, 1 when it failed or was revoked (or is being revoked)."""
    return ExitCode.FAILED if task["state"] in ("failed", "revoked", "revoking") else ExitCode.OK


def follow(api: Api, task: dict[str, Any], out: Output) -> tuple[dict[str, Any], ExitCode]:
    """Show the task's progress until it completes, fails or is revoked; return its last state and the exit
    code. A paused task is still followed (it may be resumed, or revoked by the pause timeout)."""
    try:
        if out.live:
            task = _bar_until_final(api, task, out)
        else:
            task = _lines_until_final(api, task, out)
    except KeyboardInterrupt:
        return _interrupted(api, task, out)
    return task, outcome(task)


def _fields(task: dict[str, Any], out: Output) -> dict[str, Any]:
    progress, state = task["progress"], out.state(task["state"])
    if task["state"] == "paused" and task.get("pause_deadline"):
        state += f" ({countdown(task['pause_deadline'])})"
    return {"completed": progress["done"], "total": progress["total"], "percent": percent(task),
            "done": done_of_total(task), "rate": rate(task), "eta": eta(task), "state": state}


def _bar_until_final(api: Api, task: dict[str, Any], out: Output) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[percent]:>6}"),
               TextColumn("{task.fields[done]}"), TextColumn("{task.fields[rate]}"),
               TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[state]}"))
    with Progress(*columns, console=out.console, refresh_per_second=10) as progress:
        bar = progress.add_task(escape(f"{task['kind']} {task['task_id'][:SHORT_ID]}"), **_fields(task, out))
        while task["state"] not in FINAL_STATES:
            time.sleep(POLL_SECONDS)
            task = api.task(task["task_id"])
            progress.update(bar, **_fields(task, out))
    return task


def _lines_until_final(api: Api, task: dict[str, Any], out: Output) -> dict[str, Any]:
    printed_state, printed_at, printed_line = None, 0.0, None
    while True:
        line, now = task_summary(task), time.monotonic()
        if not out.as_json and (task["state"] != printed_state
                                or (line != printed_line and now - printed_at >= PLAIN_EVERY_SECONDS)):
            out.line(line)
            printed_state, printed_at, printed_line = task["state"], now, line
        if task["state"] in FINAL_STATES:
            return task
        time.sleep(POLL_SECONDS)
        task = api.task(task["task_id"])


def _interrupted(api: Api, task: dict[str, Any], out: Output) -> tuple[dict[str, Any], ExitCode]:
    task_id = task["task_id"]
    try:
        choice = click.prompt(f"\nStopped following task {task_id}: pause it, revoke it, or detach (it goes on)",
                              type=click.Choice(INTERRUPT_CHOICES), default="detach", err=True)
    except click.Abort:  # no one to answer (stdin closed) or a second Ctrl-C: just stop watching
        choice = "detach"
    if choice == "detach":
        out.note(f"Detached; task {task_id} goes on: `collect task {task_id[:SHORT_ID]}` shows it.")
        return api.task(task_id), ExitCode.OK
    task = api.control(choice, task_id, wait=CONFIRM_WAIT_SECONDS)
    if choice == "pause":
        out.note(f"Task {task_id} is {task['state']}; `collect resume {task_id[:SHORT_ID]}` continues it.")
        return task, ExitCode.OK
    out.note(f"Task {task_id} is {task['state']}.")
    return task, outcome(task)
