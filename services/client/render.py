"""How the client shows tasks: tables and colours on a terminal, plain lines when stdout is not one (no
control characters at all, for scripts and logs), or the API's own JSON with --json."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

STATE_STYLES = {
    "queued": "cyan", "running": "blue", "pausing": "yellow", "paused": "bold yellow",
    "revoking": "magenta", "revoked": "red", "completed": "green", "failed": "bold red",
}
FINAL_STATES = frozenset({"completed", "failed", "revoked"})
# How many characters of an id the terminal table shows; every command accepts such a prefix back.
SHORT_ID = 8
# C0 and C1 control characters: in a server-supplied string they could move the cursor or recolour the
# terminal (a file named "\x1b[2J..."), and plain output promises none.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LIST_COLUMNS = ("ID", "KIND", "STATE", "PROGRESS", "DONE", "RATE", "ETA", "CREATED", "FILE / RANGE")


def clean(value: object) -> str:
    """Server-supplied text made safe to print: every control character becomes '?'."""
    return _CONTROL.sub("?", str(value))


def quantity(amount: float, unit: str) -> str:
    """12.3 MB for bytes, 12,345 rows for anything else."""
    if unit == "bytes":
        return decimal(int(amount))
    return f"{amount:,.0f} {clean(unit)}"


def done_of_total(task: dict[str, Any]) -> str:
    progress = task["progress"]
    done, total, unit = progress["done"], progress["total"], progress["unit"]
    if total is None:
        return quantity(done, unit)
    if unit == "bytes":
        return f"{decimal(done)}/{decimal(total)}"
    return f"{done:,}/{total:,} {clean(unit)}"


def percent(task: dict[str, Any]) -> str:
    value = task["progress"]["percent"]
    return "-" if value is None else f"{value:.1f}%"


def rate(task: dict[str, Any]) -> str:
    value = task.get("rate_per_second")
    return "-" if value is None else f"{quantity(value, task['progress']['unit'])}/s"


def duration(seconds: float) -> str:
    """4:12, or 1:04:12 past an hour."""
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


def eta(task: dict[str, Any]) -> str:
    value = task.get("eta_seconds")
    return "-" if value is None else duration(value)


def subject(task: dict[str, Any]) -> str:
    """What the task works on: an upload's file name, an export's date range (and form)."""
    params = task.get("params") or {}
    if "from_date" in params:
        text = f"{params['from_date']}..{params.get('to_date')}"
        return clean(text + (f" form {params['form_id']}" if params.get("form_id") else ""))
    return clean(params.get("filename") or "")


def moment(value: str | None) -> str:
    """An API timestamp to the second, in UTC: 2026-01-31 12:00:05Z."""
    if not value:
        return "-"
    return clean(value.replace("T", " ")[:19] + "Z")


def countdown(deadline: str) -> str:
    left = (datetime.fromisoformat(deadline.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    return f"auto-revoked in {duration(left)}" if left > 0 else "auto-revoke is due"


def result_text(task: dict[str, Any]) -> str:
    """A finished task's result in words (rows inserted 20000, rows rejected 2, ...), or its error."""
    if task.get("error"):
        error = task["error"]
        return f"error {clean(error.get('code', ''))}: {clean(error.get('message', ''))}"
    result = task.get("result") or {}
    return ", ".join(f"{clean(key).replace('_', ' ')} {clean(value)}" for key, value in result.items()
                     if not isinstance(value, list | dict))


def task_summary(task: dict[str, Any]) -> str:
    """One plain line: id state percent done/total rate ETA."""
    return (f"{task['task_id']} {task['state']} {percent(task)} {done_of_total(task)} rate {rate(task)} "
            f"ETA {eta(task)}")


class Output:
    """Where a command writes. `live` is true on a terminal without --json: progress bars and tables."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.live = sys.stdout.isatty() and not as_json
        # Only ever used when stdout is a terminal, so FORCE_COLOR and friends cannot put ANSI into a pipe.
        self.console = Console(highlight=False) if self.live else None
        self._data_on_stdout = False

    def data_on_stdout(self) -> None:
        """Stdout will carry a file's bytes (`-o -`): from now on lines go to stderr, and there are no bars."""
        self._data_on_stdout, self.live = True, False

    def line(self, text: str) -> None:
        click.echo(text, err=self._data_on_stdout)

    def note(self, text: str) -> None:
        """A message for the person at the terminal: on stderr under --json, which keeps stdout pure JSON."""
        click.echo(text, err=self.as_json or self._data_on_stdout)

    def json(self, body: Any) -> None:
        # ensure_ascii: a control character in the data is written as \u001b, never raw.
        click.echo(json.dumps(body, indent=2))

    def state(self, state: str) -> str:
        """The state as rich markup: a coloured badge."""
        return f"[{STATE_STYLES.get(state, 'default')}]{escape(clean(state))}[/]"

    def tasks(self, tasks: list[dict[str, Any]]) -> Table | list[str]:
        """The task list: a table for the terminal, or aligned plain lines with whole ids."""
        if self.live:
            table = Table(*LIST_COLUMNS, box=None, header_style="bold")
            for task in tasks:
                bar = ProgressBar(total=100, completed=task["progress"]["percent"] or 0, width=10)
                table.add_row(task["task_id"][:SHORT_ID], escape(clean(task["kind"])), self.state(task["state"]),
                              bar, done_of_total(task), rate(task), eta(task), moment(task["created_at"]),
                              escape(subject(task)))
            return table
        rows = [LIST_COLUMNS] + [
            (task["task_id"], clean(task["kind"]), clean(task["state"]), percent(task), done_of_total(task),
             rate(task), eta(task), moment(task["created_at"]), subject(task)) for task in tasks]
        widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS) - 1)]
        return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
                for row in rows]

    def show(self, rendered: Table | list[str]) -> None:
        if isinstance(rendered, list):
            for text in rendered:
                self.line(text)
        else:
            self.console.print(rendered)

    def task(self, task: dict[str, Any]) -> None:
        """One task in detail: parameters, progress, checkpoint position, result, first rejections, events."""
        fields = [("task", task["task_id"]), ("kind", clean(task["kind"])), ("state", clean(task["state"])),
                  ("progress", f"{percent(task)}  {done_of_total(task)}"), ("rate", rate(task)), ("eta", eta(task))]
        params = task.get("params") or {}
        if "from_date" in params:
            fields.append(("range", subject(task)))
        elif params.get("filename"):
            size = params.get("size_bytes")
            fields.append(("file", subject(task) + (f" ({decimal(size)})" if isinstance(size, int) else "")))
        fields += [(name, moment(task.get(key))) for name, key in (
            ("created", "created_at"), ("started", "started_at"), ("paused", "paused_at"),
            ("finished", "finished_at")) if task.get(key)]
        if task.get("pause_deadline") and task["state"] == "paused":
            fields.append(("pause deadline", f"{moment(task['pause_deadline'])} ({countdown(task['pause_deadline'])})"))
        if task.get("revoke_reason"):
            fields.append(("revoke reason", clean(task["revoke_reason"])))
        if result_text(task):
            fields.append(("result", result_text(task)))
        for rejection in (task.get("result") or {}).get("rejections") or []:
            fields.append(("rejected", f"line {clean(rejection.get('line'))}: {clean(rejection.get('reason'))}"))
        width = max(len(name) for name, _ in fields) + 1
        for name, value in fields:
            if self.live and name == "state":
                self.console.print(f"{name + ':':<{width}} {self.state(value)}")
            else:
                self.line(f"{name + ':':<{width}} {value}")
        if "events" in task:
            self.line("")
            self.show(self.events(task["events"]))

    def events(self, events: list[dict[str, Any]]) -> Table | list[str]:
        """Who did what, when and why."""
        rows = [(moment(e["at"]), clean(e["from_state"] or "-"), clean(e["to_state"]), clean(e["actor"]),
                 clean(e["reason"] or "")) for e in events]
        if self.live:
            table = Table("AT", "FROM", "TO", "BY", "WHY", box=None, header_style="bold")
            for at, before, after, actor, reason in rows:
                table.add_row(at, self.state(before), self.state(after), escape(actor), escape(reason))
            return table
        return [f"{at}  {before} -> {after}  by {actor}" + (f"  ({reason})" if reason else "")
                for at, before, after, actor, reason in rows]
