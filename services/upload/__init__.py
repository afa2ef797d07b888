"""Upload: import a CSV file of form responses, as a pausable task."""

KIND = "upload"
QUEUE = "upload"
ACTOR = "run_upload"
# stored_files.purpose of an uploaded file (kept UPLOAD_FILE_RETENTION_HOURS after the import completes).
FILE_PURPOSE = "upload"
