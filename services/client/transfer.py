"""Moving file bytes: an upload streamed from disk and a download streamed to disk, each with its own
byte-transfer bar on a terminal."""

from __future__ import annotations

import sys
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from services.client.api import Api
from services.client.render import Output, clean


def _byte_bar(out: Output, description: str) -> Progress:
    return Progress(TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=out.console)


def upload_file(api: Api, path: Path, out: Output) -> dict[str, Any]:
    """Send the file as it is read (64 KiB at a time: it is never in memory whole) and return the new task."""
    with path.open("rb") as file:
        if not out.live:
            return api.upload(path.name, file)
        with _byte_bar(out, f"upload {clean(path.name)}") as progress:
            # The wrapped file advances the bar as httpx reads it into the request body.
            with progress.wrap_file(file, total=path.stat().st_size, description="upload") as reader:
                return api.upload(path.name, reader)


def attachment_name(response: httpx.Response, task_id: str) -> str:
    """The file name the server suggests (Content-Disposition), reduced to a bare name in this directory."""
    header = Message()
    header["content-disposition"] = response.headers.get("content-disposition", "")
    name = Path(clean(header.get_filename() or "")).name
    return name if name not in ("", ".", "..") else f"export-{task_id}.csv"


def download_file(api: Api, task_id: str, out: Output, output: str | None) -> str:
    """Save a completed export's file as `output` (`-`: stdout; default: the server's file name) and return
    where it went. The bytes go to `<name>.part` first, renamed once complete: never a truncated file."""
    with api.download(task_id) as response:
        if output == "-":
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return "-"
        target = Path(output or attachment_name(response, task_id))
        partial = target.with_name(target.name + ".part")
        total = int(response.headers["content-length"]) if "content-length" in response.headers else None
        try:
            with partial.open("wb") as file:
                if not out.live:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                else:
                    with _byte_bar(out, f"download {clean(target.name)}") as progress:
                        bar = progress.add_task("download", total=total)
                        for chunk in response.iter_bytes():
                            file.write(chunk)
                            progress.advance(bar, len(chunk))
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return str(target)
