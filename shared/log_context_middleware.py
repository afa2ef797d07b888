"""LogContext: every log line a worker writes while processing a message names its task.

In a `dramatiq` worker process it also installs the JSON log format (shared.logs), so the workers log
like the gateway does.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Middleware

from shared import logs


class LogContext(Middleware):
    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        logs.configure_logging()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        # Task actors take the task id as their first argument (shared.broker.send_task_message).
        logs.task_id.set(str(message.args[0]) if message.args else None)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result=None, exception=None) -> None:
        logs.task_id.set(None)

    after_skip_message = after_process_message
