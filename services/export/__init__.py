"""Export: write an organization's form responses in a date range to a CSV file, as a pausable task."""

from shared.kinds import TaskKind, register

KIND_SPEC = register(TaskKind("export", queue="export", actor_name="run_export", progress_unit="rows"))
# The names other modules of the package (and the tests) use.
KIND, QUEUE, ACTOR = KIND_SPEC.name, KIND_SPEC.queue, KIND_SPEC.actor_name
