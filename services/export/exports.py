"""The export domain as the API and the scheduler use it: start an export, find its file, expire old files.
Each call is its own transaction, owned here so the resources only parse and answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from services import export
from services.export.exporter import FILE_PURPOSE
from services.export.params import ExportRange
from shared import storage
from shared import tasks as t
from shared.tasks import TaskState
from shared.wake import wake_task


class NotAnExport(LookupError):
    """The task exists but is not an export, so it has no file to download."""

    def __init__(self, task: t.Task) -> None:
        super().__init__(f"task {task.id} is not an export (it is {task.kind!r}); only exports have a file "
                         "to download")


class ExportNotCompleted(Exception):
    """The export has not completed (yet, or ever): its file cannot be downloaded."""

    def __init__(self, task: t.Task) -> None:
        super().__init__(f"the export is {task.state}: its file can be downloaded once it is completed")
        self.state = str(task.state)
        self.task_id = task.id


class Exports:
    """An organization's exports: started as tasks, their files kept in storage until retention deletes them."""

    def __init__(self, db, broker) -> None:
        self.db = db
        self.broker = broker

    def start(self, organization_id: uuid.UUID, requested_by: str, wanted: ExportRange) -> t.Task:
        """Store a queued export task and send its message (with Redis down the sweep sends it later)."""
        with self.db.transaction() as cur:
            task = export.KIND_SPEC.create(cur, organization_id=organization_id, params=wanted.to_params(),
                                           actor=requested_by)
        wake_task(self.db, self.broker, task)
        return task

    def file(self, organization_id: uuid.UUID, task_id: uuid.UUID) -> dict | None:
        """The completed export's stored file (id, filename, size_bytes), or None when retention deleted it.
        Raises TaskNotFound, NotAnExport, or ExportNotCompleted."""
        with self.db.transaction() as cur:
            task = t.get_task(cur, task_id, organization_id)
            if task.kind != export.KIND:
                raise NotAnExport(task)
            if task.state is not TaskState.COMPLETED:
                raise ExportNotCompleted(task)
            return storage.task_file(cur, task_id, FILE_PURPOSE)

    def file_chunks(self, file_id: uuid.UUID) -> Iterator[bytes]:
        """The stored file's bytes, one short transaction per chunk (a slow client holds none open)."""
        return storage.iter_chunks(self.db, file_id)

    def delete_expired_files(self, retention_hours: int) -> list[uuid.UUID]:
        """Delete the files of exports that completed more than `retention_hours` ago; returns their tasks.
        The task rows stay, so their download answers 410 Gone."""
        with self.db.transaction() as cur:
            return storage.delete_files_of_finished_tasks(cur, purpose=FILE_PURPOSE, kind=export.KIND,
                                                          state=TaskState.COMPLETED, hours=retention_hours)
