"""Upload: import a CSV file of form responses, as a pausable task."""

KIND = "upload"
QUEUE = "upload"
ACTOR = "run_upload"
