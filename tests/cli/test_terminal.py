"""`collect upload --follow` at a terminal (a pseudo-terminal): the transfer bar, then a live progress bar
redrawn in place, and Ctrl-C asking whether to pause, revoke or detach."""

from __future__ import annotations

import json
import re
import time

import pexpect

from tests.cli.conftest import COLLECT

# Rich redraws its live display by returning to the line's start and erasing it.
REDRAW = b"\r\x1b[2K"
PERCENT = re.compile(rb"(\d+\.\d)%")


def at_terminal(cli, *args: str) -> pexpect.spawn:
    return pexpect.spawn(COLLECT, list(args), env=cli.env(TERM="xterm-256color"), cwd=str(cli.cwd),
                         dimensions=(40, 160), timeout=90)


def test_follow_at_a_terminal_redraws_the_progress_bar_until_completed(cli, rt):
    # Given a CSV of 60,000 responses (a few seconds of work: several polls of the task while it runs)
    path = cli.csv_file(60_000, seed=40)
    # When it is uploaded with --follow in a terminal
    child = at_terminal(cli, "upload", str(path), "--follow")
    child.expect(pexpect.EOF)
    child.close()
    output = child.before
    # Then it exits 0 once completed
    assert child.exitstatus == 0, output[-2000:]
    # And the bytes' transfer had a bar of their own (name, bytes done/total)
    assert re.search(rb"upload responses\.csv.*?(\d+\.\d)/\1 MB", output)
    # And the task's bar was redrawn in place, frame after frame, with the percent moving, the done/total
    # with its unit, the rate, the ETA and the state
    frames = [frame for frame in output.split(REDRAW) if b"upload " in frame and b"running" in frame]
    assert len(frames) >= 3, output[-2000:]
    assert len({found.group(1) for frame in frames if (found := PERCENT.search(frame))}) >= 2, frames
    assert any(re.search(rb"/\d+\.\d MB .*B/s ETA \d+:\d\d", frame) for frame in frames), frames[-1]
    assert b"completed" in output.split(REDRAW)[-1]


def test_ctrl_c_during_follow_offers_pause_and_pauses_the_task(cli, rt):
    # Given an upload followed at a terminal, running
    child = at_terminal(cli, "upload", str(cli.csv_file(60_000, seed=41)), "--follow")
    child.expect(rb"upload ([0-9a-f]{8}) .*?running")
    prefix = child.match.group(1).decode()
    # When Ctrl-C is pressed, the question is asked, and "pause" is answered
    child.sendintr()
    child.expect(r"pause it, revoke it, or detach .*\[detach\]: ")
    child.sendline("pause")
    child.expect(pexpect.EOF)
    child.close()
    # Then the command says so and exits 0, and the task is paused with its rows frozen
    assert child.exitstatus == 0, child.before
    assert b"is paused" in child.before
    paused = json.loads(cli.run("task", prefix, "--json").stdout)
    assert paused["state"] == "paused" and paused["progress"]["done"] < paused["progress"]["total"]
    time.sleep(1)
    assert cli.task(paused["task_id"])["progress"]["done"] == paused["progress"]["done"]
