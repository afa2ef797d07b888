"""Upload: import a CSV file of form responses, as a pausable task."""

from shared.services import UPLOAD

KIND = UPLOAD.task_kind
QUEUE = UPLOAD.queue
ACTOR = "run_upload"
