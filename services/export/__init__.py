"""Export: write an organization's form responses in a date range to a CSV file, as a pausable task."""

KIND = "export"
QUEUE = "export"
ACTOR = "run_export"
