"""Control requests cannot race a worker into `failed`.

A seeded random scheduler sends random sequences of pause / resume / revoke, with random gaps of 0-100 ms,
to uploads and exports that real worker processes run in batches of 20 rows (so requests land before, in
and between batches, and on confirmations). Each sequence is checked against a model of the state machine:
which requests may be accepted, the final state (the one the last accepted request asked for), and the work
(exact rows; export bytes identical to an export nobody touched, or a prefix of them while paused).
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dramatiq.brokers.redis import RedisBroker

from services.control.commands import TaskControl
from services.upload.sample_data import csv_bytes
from tests.conftest import auth, get_task, new_key, upload, wait_for, wait_for_state
from tests.export.conftest import rows_of
from tests.faults.conftest import (
    SEED,
    STABLE_STATES,
    export_bytes,
    kill,
    running_worker,
    start_worker,
    task_files,
    task_rows,
)

SEQUENCES = 200
DRIVERS = 6
UPLOAD_ROWS = 300
EXPORT_ROWS = 300
TINY_BATCHES = {"UPLOAD_BATCH_ROWS": "20", "EXPORT_BATCH_ROWS": "20"}
# A crashed worker's tasks are taken over one lease after its last batch.
CRASH_RECOVERY = {**TINY_BATCHES, "TASK_LEASE_SECONDS": "1"}
CRASHES = 3
YEAR = {"from_date": "2024-01-01", "to_date": "2024-12-31"}
# What a request leaves the task in when it is accepted.
ACCEPTED_STATES = {"pause": {"paused", "pausing"}, "resume": {"queued", "running"}, "revoke": {"revoking", "revoked"}}


@dataclass
class Model:
    """The control state machine as the client sees it: what the task should end as, given the requests
    accepted so far. `intent` is `complete` (run to the end), `paused` or `revoked`."""

    intent: str = "complete"
    history: list[tuple[str, int, str]] = field(default_factory=list)

    def accepts(self, request: str) -> bool:
        """Whether the state machine can accept `request` now (a refusal is always possible: the task may
        have completed meanwhile)."""
        return {"pause": self.intent == "complete", "resume": self.intent == "paused",
                "revoke": self.intent != "revoked"}[request]

    def apply(self, request: str, status: int, state: str) -> None:
        self.history.append((request, status, state))
        if status == 409:
            return
        assert status in (200, 202), self.history
        assert self.accepts(request), f"{request} accepted against the model: {self.history}"
        assert state in ACCEPTED_STATES[request], self.history
        self.intent = {"pause": "paused", "resume": "complete", "revoke": "revoked"}[request]

    def legal_final_states(self) -> set[str]:
        # A pause asked for during the last batch may meet the end of the work: the task completes.
        return {"complete": {"completed"}, "paused": {"paused", "completed"}, "revoked": {"revoked"}}[self.intent]


class Scenario:
    def __init__(self, rt, client, key_uploads: str, key_exports: str, reference: bytes) -> None:
        self.rt, self.client = rt, client
        self.keys = {"upload": key_uploads, "export": key_exports}
        self.reference = reference
        self.outcomes: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, seed: int) -> str:
        key = self.keys[kind]
        if kind == "upload":
            started = upload(self.client, key, csv_bytes(UPLOAD_ROWS, seed=10_000 + seed))
        else:
            started = self.client.simulate_post("/api/export/", params=YEAR, headers=auth(key))
        assert started.status_code == 202, started.text
        return started.json["task_id"]

    def run(self, seed: int) -> None:
        """One random sequence of requests against one new task, checked against the model."""
        rng = random.Random(f"{SEED}:{seed}")
        kind = rng.choice(("upload", "export"))
        key = self.keys[kind]
        task_id = self.start(kind, seed)
        model = Model()
        for _ in range(rng.randint(1, 6)):
            time.sleep(rng.uniform(0, 0.1))
            request = rng.choices(("pause", "resume", "revoke"), weights=(5, 5, 1))[0]
            answer = self.client.simulate_post(f"/api/{request}/{task_id}", headers=auth(key))
            model.apply(request, answer.status_code, answer.json["state"])
        context = f"seed {SEED}:{seed}, {kind} {task_id}, requests {model.history}"
        final = wait_for_state(self.client, key, task_id, *STABLE_STATES, timeout=120)
        assert final["state"] in model.legal_final_states(), (final["state"], final["error"], context)
        if final["state"] == "paused":
            self.check_paused_work(kind, task_id, context)
            assert self.client.simulate_post(f"/api/resume/{task_id}", headers=auth(key)).status_code == 202
            final = wait_for_state(self.client, key, task_id, *STABLE_STATES, timeout=120)
            assert final["state"] == "completed", (final, context)
        if final["state"] == "completed":
            self.check_complete_work(kind, task_id, final, context)
        else:
            assert task_rows(self.rt.db, task_id) == 0 and task_files(self.rt.db, task_id) == 0, context
        with self._lock:
            self.outcomes[model.intent] = self.outcomes.get(model.intent, 0) + 1

    def check_paused_work(self, kind: str, task_id: str, context: str) -> None:
        """Paused: exactly the checkpoint's committed work is stored."""
        with self.rt.db.transaction() as cur:
            cur.execute("SELECT checkpoint FROM tasks WHERE id = %s", (task_id,))
            checkpoint = cur.fetchone()["checkpoint"] or {}
        if kind == "upload":
            assert task_rows(self.rt.db, task_id) == checkpoint.get("rows_inserted", 0), context
        else:
            stored = export_bytes(self.rt.db, task_id) or b""
            assert len(stored) == checkpoint.get("bytes", len(stored)), context
            assert self.reference.startswith(stored), context

    def check_complete_work(self, kind: str, task_id: str, task: dict, context: str) -> None:
        if kind == "upload":
            assert task["result"]["rows_inserted"] == UPLOAD_ROWS, context
            assert task_rows(self.rt.db, task_id) == UPLOAD_ROWS, context
        else:
            assert export_bytes(self.rt.db, task_id) == self.reference, context


def setup_scenario(rt, client) -> Scenario:
    """Two organizations: one for the uploads, one holding the rows every export exports (uploads in the
    same organization would change what an export finds), and the bytes of an export nobody touched."""
    key_uploads, key_exports = new_key(rt), new_key(rt)
    source = upload(client, key_exports, csv_bytes(EXPORT_ROWS, seed=99)).json["task_id"]
    assert wait_for_state(client, key_exports, source, "completed", "failed", timeout=120)["state"] == "completed"
    reference_task = client.simulate_post("/api/export/", params=YEAR, headers=auth(key_exports)).json["task_id"]
    assert wait_for_state(client, key_exports, reference_task, "completed", "failed", timeout=120)["state"] == \
        "completed"
    reference = export_bytes(rt.db, reference_task)
    assert reference and len(rows_of(reference)) == EXPORT_ROWS + 1
    return Scenario(rt, client, key_uploads, key_exports, reference)


class CrashingWorker:
    """The worker process, killed outright (SIGKILL) and started again at seeded random moments, with a
    scheduler's sweep every few seconds (it re-sends the messages a killed worker had taken)."""

    def __init__(self, rt, namespace: str, crashes: int) -> None:
        self.namespace = namespace
        self.crashes_left = crashes
        self.crashed = 0
        self.rng = random.Random(f"{SEED}:crashes")
        self.control = TaskControl(rt.db, RedisBroker(url=rt.settings.redis_url, namespace=namespace), rt.settings)
        self.process = start_worker(namespace, threads=DRIVERS, **CRASH_RECOVERY)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crashing-worker", daemon=True)

    def __enter__(self) -> CrashingWorker:
        return self

    def start_crashing(self) -> None:
        self._thread.start()

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join(30)
        kill(self.process, signal.SIGTERM)

    def _run(self) -> None:
        next_crash = time.monotonic() + self.rng.uniform(1, 3)
        while not self._done.wait(0.5):
            if self.crashes_left and time.monotonic() >= next_crash:
                kill(self.process)
                self.process = start_worker(self.namespace, threads=DRIVERS, **CRASH_RECOVERY)
                self.crashes_left -= 1
                self.crashed += 1
                next_crash = time.monotonic() + self.rng.uniform(1, 3)
            self.control.sweep()


def test_random_control_sequences_end_as_the_last_accepted_request_asked(rt, fault_client, namespace):
    # Given worker processes that run uploads and exports in batches of 20 rows, and crash now and then
    with CrashingWorker(rt, namespace, crashes=CRASHES) as worker:
        scenario = setup_scenario(rt, fault_client)
        worker.start_crashing()
        # When 200 seeded random sequences of pause/resume/revoke, 0-100 ms apart, are sent to new tasks
        # (several tasks at a time, as many as the worker has threads)
        with ThreadPoolExecutor(DRIVERS) as pool:
            for future in [pool.submit(scenario.run, seed) for seed in range(SEQUENCES)]:
                future.result()
    # Then (checked in each sequence) every task ended as its last accepted request asked, never failed,
    # with its work exact; and the runs covered every kind of ending, and the crashes happened
    assert sum(scenario.outcomes.values()) == SEQUENCES
    assert {"complete", "paused", "revoked"} <= set(scenario.outcomes), scenario.outcomes
    assert worker.crashed == CRASHES


def test_twenty_concurrent_pause_and_resume_calls_leave_a_legal_state(rt, fault_client, namespace):
    # Given an upload running in batches of 20 rows
    key = new_key(rt)
    rows = 20_000
    with running_worker(namespace, threads=2, **TINY_BATCHES):
        task_id = upload(fault_client, key, csv_bytes(rows, seed=uuid.uuid4().int % 10_000)).json["task_id"]
        wait_for(lambda: get_task(fault_client, key, task_id)["progress"]["done"] > 0, timeout=60)
        for round_ in range(5):
            # When 20 pause and resume calls arrive at once
            barrier = threading.Barrier(20)

            def call(i: int, barrier: threading.Barrier = barrier) -> int:
                barrier.wait()
                request = "pause" if i % 2 == 0 else "resume"
                return fault_client.simulate_post(f"/api/{request}/{task_id}", headers=auth(key)).status_code

            with ThreadPoolExecutor(20) as pool:
                statuses = list(pool.map(call, range(20)))
            assert set(statuses) <= {200, 202, 409} and {200, 202} & set(statuses), statuses
            # Then the task settles in the state the last accepted call asked for, never failed
            last = last_control_request(rt, task_id)
            state = wait_for_state(fault_client, key, task_id, "paused", "running", "queued", "completed",
                                   "failed", timeout=60)["state"]
            if last == "pause":
                state = wait_for_state(fault_client, key, task_id, "paused", "completed", "failed")["state"]
                assert state in ("paused", "completed"), (round_, statuses)
            else:
                assert state in ("running", "queued", "completed"), (round_, state, statuses)
        # And once resumed it imports every row exactly once
        fault_client.simulate_post(f"/api/resume/{task_id}", headers=auth(key))
        task = wait_for_state(fault_client, key, task_id, "completed", "failed", timeout=120)
        assert task["state"] == "completed", task["error"]
        assert task["result"]["rows_inserted"] == rows and task_rows(rt.db, task_id) == rows


def last_control_request(rt, task_id: str) -> str:
    """The request of the last transition a caller (not a worker) made, from the task's event log."""
    with rt.db.transaction() as cur:
        cur.execute(
            """SELECT to_state FROM task_events WHERE task_id = %s AND actor NOT LIKE 'worker:%%'
               ORDER BY id DESC LIMIT 1""",
            (task_id,),
        )
        to_state = cur.fetchone()["to_state"]
    return {"paused": "pause", "pausing": "pause", "queued": "resume", "running": "resume"}[to_state]
