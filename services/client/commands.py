"""The client commands of `collect`: login, logout, upload, export, pause, resume, revoke, tasks, task, download.

Each takes --url, --key and --json, which `collect` itself takes too (`collect --url U tasks` and
`collect tasks --url U` both work; the command's own wins). Exit codes: services.client.errors.ExitCode."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.live import Live

from services.client import config
from services.client.api import Api
from services.client.errors import ClientError, ExitCode
from services.client.follow import follow
from services.client.render import FINAL_STATES, Output, result_text, task_summary
from services.client.transfer import download_file, upload_file

_META = "collect.client."
WATCH_SECONDS = 1.0
CONTROL_WAIT_MAX = 30
COMMANDS: list[click.Command] = []


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        # Not given here (None, or False for --json): a value given to the group stays in force.
        if value:
            ctx.meta[_META + name] = value

    return callback


def connection_options(f: Callable) -> Callable:
    """--url, --key and --json, for the `collect` group and for each client command."""
    f = click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_remember("json"),
                     help="Print the API's JSON (client commands).")(f)
    f = click.option("--key", metavar="KEY", expose_value=False, callback=_remember("key"),
                     help=f"API key (overrides {config.KEY_ENV} and `collect login`).")(f)
    return click.option("--url", metavar="URL", expose_value=False, callback=_remember("url"),
                        help=f"Gateway URL (overrides {config.URL_ENV} and `collect login`; "
                             f"default {config.DEFAULT_URL}).")(f)


class Client:
    """What a client command works with: its output, and the API configured flag > environment > login file."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.out = Output(as_json=bool(meta.get(_META + "json")))
        self.url_flag, self.key_flag = meta.get(_META + "url"), meta.get(_META + "key")
        self._api: Api | None = None

    @property
    def config(self) -> config.ClientConfig:
        return config.resolve(self.url_flag, self.key_flag)

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.config)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def client_command(name: str, **settings: Any) -> Callable[[Callable[..., ExitCode | None]], click.Command]:
    """A click command taking the connection options, called as f(client, **params); its return value is
    the exit code."""

    def decorate(f: Callable[..., ExitCode | None]) -> click.Command:
        @functools.wraps(f)
        def run(**params: Any) -> None:
            ctx = click.get_current_context()
            client = Client(ctx.meta)
            try:
                code = f(client, **params)
            finally:
                client.close()
            ctx.exit(int(code or ExitCode.OK))

        command = click.command(name, **settings)(connection_options(run))
        COMMANDS.append(command)
        return command

    return decorate


def add_client_commands(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)


def _started(client: Client, task: dict[str, Any], follow_it: bool) -> tuple[dict[str, Any], ExitCode]:
    """Report a task just created or acted on, or follow it to its end."""
    code = ExitCode.OK
    if follow_it:
        task, code = follow(client.api, task, client.out)
    if client.out.as_json:
        client.out.json(task)
        return task, code
    if not follow_it:
        client.out.line(task_summary(task))
    if task["state"] in FINAL_STATES and result_text(task):
        client.out.line(f"result: {result_text(task)}")
    return task, code


@client_command("login")
def login(client: Client) -> ExitCode:
    """Check an API key against the server and store it with the URL for the other commands.

    The key is asked for without echoing it, or read from stdin when stdin is not a terminal
    (`collect login --url URL < keyfile`). It goes to config.json in your config directory
    ($XDG_CONFIG_HOME/collect), a file only you can read (0600)."""
    url = client.config.url
    api_key = client.key_flag
    if not api_key:
        if sys.stdin.isatty():
            api_key = click.prompt("API key", hide_input=True, err=True)
        else:
            api_key = sys.stdin.readline()
    api_key = api_key.strip()
    if not api_key:
        raise ClientError("no API key given", ExitCode.USAGE)
    api = Api(config.ClientConfig(url, api_key))
    try:
        api.tasks(limit=1)
    finally:
        api.close()
    path = config.login_path()
    config.save_login(path, url, api_key)
    client.out.note(f"Logged in to {url}; the key is stored in {path} (readable by you only).")
    return ExitCode.OK


@client_command("logout")
def logout(client: Client) -> ExitCode:
    """Delete the URL and API key stored by `collect login`."""
    path = config.login_path()
    path.unlink(missing_ok=True)
    client.out.note(f"Removed {path}.")
    return ExitCode.OK


FOLLOW_HELP = "Show the task's progress until it ends; exit 0 if it completed, 1 if it failed or was revoked."


@client_command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--follow", "follow_it", is_flag=True, help=FOLLOW_HELP)
def upload_csv(client: Client, file: Path, follow_it: bool) -> ExitCode:
    """Upload a CSV file of responses; it is imported as a task (streamed from disk, with a progress bar)."""
    task = upload_file(client.api, file, client.out)
    return _started(client, task, follow_it)[1]


@client_command("export")
@click.option("--from", "from_date", required=True, metavar="DATE", help="YYYY-MM-DD or an ISO-8601 date-time.")
@click.option("--to", "to_date", required=True, metavar="DATE", help="YYYY-MM-DD (the whole day) or a date-time.")
@click.option("--form", "form_id", metavar="ID", help="Only this form's responses.")
@click.option("--follow", "follow_it", is_flag=True, help=FOLLOW_HELP + " Downloads the file when completed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="With --follow: save the file here (- for stdout; default: the server's file name).")
def export_range(client: Client, from_date: str, to_date: str, form_id: str | None, follow_it: bool,
           output: str | None) -> ExitCode:
    """Export the responses submitted in a date range to a CSV file, as a task."""
    if output and not follow_it:
        raise click.UsageError("-o/--output needs --follow (or run `collect download TASK -o FILE` later)")
    if output == "-" and client.out.as_json:
        raise click.UsageError("-o - and --json would both write to stdout")
    if output == "-":
        client.out.data_on_stdout()
    task, code = _started(client, client.api.export(from_date, to_date, form_id), follow_it)
    if follow_it and task["state"] == "completed":
        saved = download_file(client.api, task["task_id"], client.out, output)
        if saved != "-":
            client.out.note(f"Saved {saved}.")
    return code


def _control_command(action: str, summary: str) -> None:
    @client_command(action, help=f"{summary} TASK is an id or its first 8 or more characters.",
                    short_help=summary.split(":")[0] + ".")
    @click.argument("task")
    @click.option("--wait", type=click.FloatRange(0, CONTROL_WAIT_MAX), metavar="SECONDS",
                  help=f"Wait up to SECONDS (at most {CONTROL_WAIT_MAX}) for the worker to act.")
    def command(client: Client, task: str, wait: float | None) -> ExitCode:
        task_id = client.api.resolve(task)
        _started(client, client.api.control(action, task_id, wait), follow_it=False)
        return ExitCode.OK


_control_command("pause", "Pause a task: a running one stops at its next batch boundary and releases its worker; "
                          "one left paused too long is revoked.")
_control_command("resume", "Resume a paused task: it continues from its checkpoint.")
_control_command("revoke", "Revoke a task: stop it and roll back what it did.")


@client_command("tasks")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only tasks in this state (queued, running, pausing, paused, revoking, revoked, completed, "
                   "failed); repeatable.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND", help="Only tasks of this kind (upload, export).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--watch", is_flag=True, help="Show the list again every second until Ctrl-C.")
def list_tasks(client: Client, states: tuple[str, ...], kinds: tuple[str, ...], limit: int, offset: int,
          watch: bool) -> ExitCode:
    """List your organization's tasks, newest first."""
    out = client.out

    def page() -> dict[str, Any]:
        return client.api.tasks(states, kinds, limit=limit, offset=offset)

    if not watch:
        found = page()
        if out.as_json:
            out.json(found)
        else:
            out.show(out.tasks(found["tasks"]))
            if found["total"] > offset + len(found["tasks"]):
                out.note(f"({len(found['tasks'])} of {found['total']}; see --limit and --offset)")
        return ExitCode.OK
    try:
        if out.live:
            with Live(out.tasks(page()["tasks"]), console=out.console, auto_refresh=False) as live:
                while True:
                    time.sleep(WATCH_SECONDS)
                    live.update(out.tasks(page()["tasks"]), refresh=True)
        shown = None
        while True:
            found = page()
            current = [json.dumps(found)] if out.as_json else out.tasks(found["tasks"])
            if current != shown:
                if shown is not None and not out.as_json:
                    out.line("")
                out.show(current)
                shown = current
            time.sleep(WATCH_SECONDS)
    except KeyboardInterrupt:
        return ExitCode.OK


@client_command("task")
@click.argument("task")
@click.option("--events", is_flag=True, help="Also show the event log: who did what, when and why.")
@click.option("--follow", "follow_it", is_flag=True, help=FOLLOW_HELP)
def show_task(client: Client, task: str, events: bool, follow_it: bool) -> ExitCode:
    """Show one task: parameters, progress, result and rejections. TASK is an id or its first 8+ characters."""
    task_id = client.api.resolve(task)
    found = client.api.task(task_id, events=events)
    if follow_it:
        return _started(client, found, follow_it=True)[1]
    if client.out.as_json:
        client.out.json(found)
    else:
        client.out.task(found)
    return ExitCode.OK


@client_command("download")
@click.argument("task")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Save the file here (- for stdout; default: the server's file name, in this directory).")
def download_export(client: Client, task: str, output: str | None) -> ExitCode:
    """Download a completed export's CSV file. TASK is an id or its first 8 or more characters."""
    saved = download_file(client.api, client.api.resolve(task), client.out, output)
    if saved != "-":
        client.out.note(f"Saved {saved}.")
    return ExitCode.OK
