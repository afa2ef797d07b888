"""WorkerPrometheus: Dramatiq's own Prometheus middleware, for the processes that boot as Dramatiq workers.

Dramatiq's `Prometheus` middleware exports its standard metrics (`dramatiq_messages_total`,
`dramatiq_message_duration_milliseconds`, ...) and ours (shared.metrics: batch durations, pause latency,
transitions) from an HTTP server that the `dramatiq` command forks next to its worker processes. It reads
two environment variables when imported:

* `dramatiq_prom_port` (default 9191): the exporter's port. Each `dramatiq` command starts its own
  exporter, so two of them on one machine need two ports (`collect up` gives each domain its own);
  a port that is taken makes that exporter exit, while its workers go on without metrics.
* `dramatiq_prom_db` (default `<tmp>/dramatiq-prometheus`): prometheus_client's multiprocess directory,
  which the exporter adds up. It is never cleared: each `dramatiq` command needs a directory of its own
  (otherwise each exporter serves the others' counts too) that is empty when it starts (otherwise it
  serves the previous run's counts).

It cannot run outside a booted worker: its instruments are created by `after_process_boot`, which the
`dramatiq` command emits but the gateway, the scheduler and an in-process `dramatiq.Worker` never do, and
every other hook uses them. This subclass keeps those hooks inert until the process has booted, so one
broker setup (shared.broker) serves every kind of process.
"""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus


class WorkerPrometheus(Prometheus):
    def __init__(self) -> None:
        super().__init__()
        self.booted = False

    def after_process_boot(self, broker) -> None:
        super().after_process_boot(broker)
        self.booted = True

    def after_worker_shutdown(self, broker, worker) -> None:
        if self.booted:
            super().after_worker_shutdown(broker, worker)

    def after_nack(self, broker, message) -> None:
        if self.booted:
            super().after_nack(broker, message)

    def after_enqueue(self, broker, message, delay) -> None:
        if self.booted:
            super().after_enqueue(broker, message, delay)

    def before_delay_message(self, broker, message) -> None:
        if self.booted:
            super().before_delay_message(broker, message)

    def before_process_message(self, broker, message) -> None:
        if self.booted:
            super().before_process_message(broker, message)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if self.booted:
            super().after_process_message(broker, message, result=result, exception=exception)

    after_skip_message = after_process_message


def exporter_environment(directory: str, port: int) -> dict[str, str]:
    """The environment of one `dramatiq` command whose exporter serves `directory` (which must be its own
    and empty) on `port`. PROMETHEUS_MULTIPROC_DIR is set too, so that every metric of the worker goes to
    the same directory whenever prometheus_client is first imported."""
    return {"dramatiq_prom_db": directory, "dramatiq_prom_port": str(port), "PROMETHEUS_MULTIPROC_DIR": directory}
