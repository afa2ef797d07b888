"""Each client command against a live gateway: what it prints (plain lines when stdout is not a terminal,
the API's JSON with --json), its exit code, and abbreviated task ids."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import time
import uuid

from shared import tasks as t
from tests.cli.conftest import COLLECT, assert_plain
from tests.cli.test_id_prefix import make_task
from tests.conftest import count_responses, new_key


def error_line(result) -> str:
    """The one line a failed command writes to stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_upload_prints_the_queued_task_and_follow_exits_0_once_it_completed(cli, rt):
    # Given a CSV file of 300 responses
    path = cli.csv_file(300, seed=11)
    # When it is uploaded without --follow
    result = cli.run("upload", str(path))
    # Then one plain line starts with the new task's id, and the command ends at once
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout)
    task_id, state = result.stdout.split()[:2]
    assert uuid.UUID(task_id) and state == "queued"
    # When another file is uploaded with --follow
    result = cli.run("upload", str(cli.csv_file(400, seed=12, name="more.csv")), "--follow")
    # Then it prints a plain line per change until the task completed, then the result, and exits 0
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout)
    lines = result.stdout.splitlines()
    followed = lines[0].split()[0]
    assert lines[-2].split()[:3] == [followed, "completed", "100.0%"]
    assert "rows inserted 400" in lines[-1]
    assert count_responses(rt, followed) == 400


def test_upload_json_prints_the_apis_task(cli):
    result = cli.run("upload", str(cli.csv_file(50, seed=13)), "--json")
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["state"] == "queued" and task["kind"] == "upload"
    assert task["params"]["filename"] == "responses.csv"
    # --json with --follow prints the finished task
    result = cli.run("--json", "upload", str(cli.csv_file(60, seed=14, name="b.csv")), "--follow")
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["state"] == "completed" and task["result"]["rows_inserted"] == 60


def peak_memory_mb(cli, *args: str) -> tuple[int, float]:
    """Exit code and peak resident memory (MB) of one `collect ARGS` run."""
    process = subprocess.Popen([COLLECT, *args], env=cli.env(), cwd=cli.cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def test_upload_streams_the_file_without_holding_it_in_memory(cli):
    # Given a 48 MB file (a valid header, then long rows the import will reject)
    path = cli.cwd / "big.csv"
    with path.open("w") as file:
        file.write("response_id,form_id,submitted_at\n")
        for _ in range(4800):
            file.write("x" * 10_000 + "\n")
    # When it is uploaded, compared with a command that sends nothing
    code, baseline = peak_memory_mb(cli, "tasks")
    assert code == 0
    code, uploading = peak_memory_mb(cli, "upload", str(path))
    # Then the upload's peak memory grew by far less than the file's size
    assert code == 0
    assert uploading - baseline < 16, (baseline, uploading)
    newest = json.loads(cli.run("tasks", "--json").stdout)["tasks"][0]
    assert newest["params"]["filename"] == "big.csv"
    cli.api("POST", f"/api/revoke/{newest['task_id']}/")  # spares the worker 4,800 rejections


def test_a_refused_upload_is_one_line_from_the_problem_and_exit_1(cli):
    path = cli.cwd / "bad.csv"
    path.write_text("name,age\nx,1\n")
    result = cli.run("upload", str(path))
    assert result.returncode == 1
    assert "response_id" in error_line(result)


def test_follow_exits_1_when_the_task_is_revoked_and_revoke_takes_a_prefix(cli, rt):
    # Given an upload followed by `collect upload --follow` (stdout a pipe)
    follower = cli.start("upload", str(cli.csv_file(60_000, seed=15)), "--follow")
    task_id = follower.stdout.readline().split()[0]
    cli.wait_until(task_id, lambda task: task["progress"]["done"] > 0)
    # When it is revoked by the first 8 characters of its id
    result = cli.run("revoke", task_id[:8], "--wait", "20")
    # Then revoke prints the revoked task and exits 0, and the follower exits 1
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == [task_id, "revoked"]
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 1, err
    assert_plain(out)
    assert out.splitlines()[-1].split()[:2] == [task_id, "revoked"]
    assert count_responses(rt, task_id) == 0


def test_ctrl_c_during_follow_asks_and_revoke_exits_1_or_detach_leaves_the_task_running(cli, rt):
    # Given two uploads followed with stdout a pipe: one answers the Ctrl-C question on stdin, one has no stdin
    def followed(rows: int, seed: int, stdin) -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen([COLLECT, "upload", str(cli.csv_file(rows, seed, name=f"{seed}.csv")), "--follow"],
                                   env=cli.env(), cwd=cli.cwd, text=True, stdin=stdin, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        task_id = process.stdout.readline().split()[0]
        cli.wait_until(task_id, lambda task: task["progress"]["done"] > 0)
        return process, task_id

    revoking, revoked_id = followed(30_000, 21, subprocess.PIPE)
    # When Ctrl-C is pressed and "revoke" answered
    revoking.send_signal(signal.SIGINT)
    out, err = revoking.communicate("revoke\n", timeout=60)
    # Then the task is revoked (its rows deleted) and the command exits 1
    assert revoking.returncode == 1, err
    assert "pause it, revoke it, or detach" in err and f"Task {revoked_id} is revoked." in out
    assert cli.task(revoked_id)["state"] == "revoked" and count_responses(rt, revoked_id) == 0
    # When nobody can answer (stdin closed), the command detaches: exit 0, the task goes on to completion
    detaching, detached_id = followed(3_000, 22, subprocess.DEVNULL)
    detaching.send_signal(signal.SIGINT)
    out, err = detaching.communicate(timeout=60)
    assert detaching.returncode == 0, err
    assert f"Detached; task {detached_id} goes on" in out
    assert cli.wait_until(detached_id, lambda task: task["state"] == "completed")


def test_follow_exits_1_when_the_task_fails_and_shows_its_error(cli, rt):
    # Given a queued task followed by `collect task --follow`
    task_id = str(uuid.uuid4())
    make_task(rt, cli.key, task_id)
    follower = cli.start("task", task_id[:8], "--follow")
    assert follower.stdout.readline().split()[:2] == [task_id, "queued"]
    # When its worker records a failure (through the state machine, as the batch runner does)
    with rt.db.transaction() as cur:
        t.apply(cur, t.FAIL, uuid.UUID(task_id), actor="worker:test", reason="internal_error",
                error={"code": "internal_error", "message": "disk on fire"})
    # Then the follower exits 1 with the error
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 1, err
    assert out.splitlines()[-2].split()[:2] == [task_id, "failed"]
    assert out.splitlines()[-1] == "result: error internal_error: disk on fire"


def test_pause_and_resume_by_prefix_then_follow_to_completion(cli, rt):
    # Given a running upload
    result = cli.run("upload", str(cli.csv_file(60_000, seed=16)))
    task_id = result.stdout.split()[0]
    cli.wait_until(task_id, lambda task: task["progress"]["done"] > 0)
    # When it is paused by prefix, waiting for the worker
    paused = cli.run("pause", task_id[:10], "--wait", "20", "--json")
    # Then the API's JSON shows it paused
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["state"] == "paused"
    frozen = cli.task(task_id)["progress"]["done"]
    # And `collect task` shows the pause deadline as a countdown (PAUSE_TIMEOUT_SECONDS is 300 here)
    shown = cli.run("task", task_id[:8]).stdout
    assert re.search(r"^pause deadline: .*Z \(auto-revoked in [45]:\d\d\)$", shown, re.MULTILINE), shown
    # And pausing it again is refused: one line from the 409 problem, exit 1
    again = cli.run("pause", task_id[:8])
    assert again.returncode == 1
    assert error_line(again) == f"Error: Invalid Task Transition: cannot pause task {task_id}: it is paused"
    assert cli.task(task_id)["progress"]["done"] == frozen
    # When it is resumed and followed with `collect task --follow`
    resumed = cli.run("resume", task_id[:8])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split()[:2] == [task_id, "queued"]
    followed = cli.run("task", task_id[:8], "--follow")
    # Then it completes with every row exactly once
    assert followed.returncode == 0, followed.stderr
    assert_plain(followed.stdout)
    assert count_responses(rt, task_id) == 60_000


def test_export_follow_downloads_the_file_and_download_fetches_it_again(cli):
    # Given 250 uploaded responses of 2024
    upload = cli.run("upload", str(cli.csv_file(250, seed=17)), "--follow")
    assert upload.returncode == 0, upload.stderr
    # When they are exported with --follow -o FILE
    result = cli.run("export", "--from", "2024-01-01", "--to", "2024-12-31", "--follow", "-o", "out.csv")
    # Then the command exits 0 once the file is saved, with every row
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout)
    assert "Saved out.csv." in result.stdout
    rows = list(csv.reader(io.StringIO((cli.cwd / "out.csv").read_text(), newline="")))
    assert rows[0][:3] == ["response_id", "form_id", "submitted_at"] and len(rows) == 251
    assert not list(cli.cwd.glob("*.part"))
    # And `collect download PREFIX` saves the same bytes under the server's file name
    task_id = result.stdout.split()[0]
    again = cli.run("download", task_id[:8])
    assert again.returncode == 0, again.stderr
    assert (cli.cwd / "export-2024-01-01-2024-12-31.csv").read_bytes() == (cli.cwd / "out.csv").read_bytes()
    # And -o - writes it to stdout, and only it (an export followed with -o - reports on stderr)
    piped = cli.run("download", task_id, "-o", "-")
    assert piped.stdout.encode() == (cli.cwd / "out.csv").read_bytes()
    followed = cli.run("export", "--from", "2024-01-01", "--to", "2024-12-31", "--follow", "-o", "-")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.encode() == (cli.cwd / "out.csv").read_bytes()
    assert " completed 100.0% 250/250 rows" in followed.stderr


def test_export_usage_errors_exit_2(cli):
    # A malformed date: the API's 400, one line naming the parameter
    bad_date = cli.run("export", "--from", "2024-13-01", "--to", "2024-12-31")
    assert bad_date.returncode == 2
    assert "from_date" in error_line(bad_date)
    # -o without --follow, and a missing --to: usage errors before any request
    assert cli.run("export", "--from", "2024-01-01", "--to", "2024-01-02", "-o", "x.csv").returncode == 2
    assert cli.run("export", "--from", "2024-01-01").returncode == 2
    assert not (cli.cwd / "x.csv").exists()


def test_download_of_an_upload_is_refused_with_exit_2(cli):
    task_id = cli.run("upload", str(cli.csv_file(10, seed=18))).stdout.split()[0]
    result = cli.run("download", task_id)
    assert result.returncode == 2
    assert "not an export" in error_line(result)


def test_tasks_lists_filters_and_prints_json(cli):
    # Given a completed upload and a queued task that no worker picks up
    done_id = cli.run("upload", str(cli.csv_file(20, seed=19)), "--follow").stdout.split()[0]
    queued_id = str(uuid.uuid4())
    make_task(cli.rt, cli.key, queued_id)
    # Then the list is plain lines: a header and one line per task with its whole id, newest first (even
    # where the environment asks for colours)
    result = cli.run("tasks", FORCE_COLOR="1", TTY_COMPATIBLE="1")
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "KIND", "STATE"]
    assert [line.split()[:3] for line in lines[1:]] == [[queued_id, "upload", "queued"],
                                                         [done_id, "upload", "completed"]]
    assert "responses.csv" in lines[2]
    # And filters narrow it
    filtered = cli.run("tasks", "--state", "completed", "--kind", "upload")
    assert [line.split()[0] for line in filtered.stdout.splitlines()[1:]] == [done_id]
    # And --json is the API's page
    page = json.loads(cli.run("tasks", "--json", "--state", "queued").stdout)
    assert page["total"] == 1 and page["tasks"][0]["task_id"] == queued_id
    # And a bad filter is the API's 400: exit 2
    bad = cli.run("tasks", "--state", "sleeping")
    assert bad.returncode == 2 and "state must be one of" in error_line(bad)


def test_tasks_watch_shows_each_change_until_ctrl_c(cli):
    # Given a queued task and `collect tasks --watch` with stdout a pipe
    task_id = str(uuid.uuid4())
    make_task(cli.rt, cli.key, task_id)
    watcher = cli.start("tasks", "--watch")
    time.sleep(2)
    # When the task is paused, then Ctrl-C is pressed
    assert cli.api("POST", f"/api/pause/{task_id}/").json()["state"] == "paused"
    time.sleep(2.5)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    # Then it exits 0, having printed the list again (plain lines) when the state changed
    assert watcher.returncode == 0, err
    assert_plain(out)
    states = [line.split()[2] for line in out.splitlines() if line.startswith(task_id)]
    assert states[0] == "queued" and states[-1] == "paused", out


def test_task_shows_details_and_events_by_prefix(cli):
    task_id = cli.run("upload", str(cli.csv_file(30, seed=20)), "--follow").stdout.split()[0]
    result = cli.run("task", task_id[:8], "--events")
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout)
    fields = dict(line.split(":", 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert fields["task"].strip() == task_id and fields["state"].strip() == "completed"
    assert "rows inserted 30" in fields["result"]
    assert "queued -> running" in result.stdout and "running -> completed" in result.stdout
    as_json = json.loads(cli.run("task", task_id, "--events", "--json").stdout)
    assert as_json["task_id"] == task_id and [e["to_state"] for e in as_json["events"]][-1] == "completed"


def test_task_ids_resolve_by_unique_prefix_within_the_organization(cli, rt):
    # Given two tasks whose ids share 8 characters, and a task of another organization
    base = uuid.uuid4().hex[:8]
    first, second = f"{base}-aaaa-4aaa-8aaa-aaaaaaaaaaaa", f"{base}-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
    make_task(rt, cli.key, first)
    make_task(rt, cli.key, second)
    foreign = str(uuid.uuid4())
    make_task(rt, new_key(rt), foreign)
    # Then an ambiguous prefix is a usage error listing the matches
    ambiguous = cli.run("task", base)
    assert ambiguous.returncode == 2
    assert "ambiguous" in error_line(ambiguous) and first in ambiguous.stderr and second in ambiguous.stderr
    # And a longer prefix picks one
    assert json.loads(cli.run("task", f"{base}-b", "--json").stdout)["task_id"] == second
    # And fewer than 8 characters, or another organization's task (by prefix or whole id), are usage errors
    assert "first 8 or more characters" in error_line(cli.run("pause", base[:7]))
    for name in (foreign[:8], foreign):
        result = cli.run("pause", name)
        assert result.returncode == 2, result.stderr
        error_line(result)
