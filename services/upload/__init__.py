"""Upload: import a CSV file of form responses, as a pausable task."""

from shared.kinds import TaskKind, register
from shared.services import UPLOAD

# The one registration line: the control core, the sweep and the gateway know the kind from here on.
KIND_SPEC = register(TaskKind(UPLOAD.task_kind, queue=UPLOAD.queue, actor_name="run_upload", progress_unit="bytes"))
# The names other modules of the package (and the tests) use.
KIND, QUEUE, ACTOR = KIND_SPEC.name, KIND_SPEC.queue, KIND_SPEC.actor_name
# stored_files.purpose of an uploaded file (kept UPLOAD_FILE_RETENTION_HOURS after the import completes).
FILE_PURPOSE = "upload"
