"""Export: write an organization's form responses in a date range to a CSV file, as a pausable task."""

from shared.services import EXPORT

KIND = EXPORT.task_kind
QUEUE = EXPORT.queue
ACTOR = "run_export"
