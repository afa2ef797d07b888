"""Export: write an organization's form responses in a date range to a CSV file, as a pausable task."""

from shared.kinds import TaskKind, register
from shared.services import EXPORT

# The one registration line: the control core, the sweep and the gateway know the kind from here on.
KIND_SPEC = register(TaskKind(EXPORT.task_kind, queue=EXPORT.queue, actor_name="run_export", progress_unit="rows"))
# The names other modules of the package (and the tests) use.
KIND, QUEUE, ACTOR = KIND_SPEC.name, KIND_SPEC.queue, KIND_SPEC.actor_name
