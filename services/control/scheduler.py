"""The scheduler process: periodiq (`python -m services.control.scheduler MODULE...`, the arguments of
the `periodiq` command), except that a periodic message it cannot send because Redis is unavailable is
logged and skipped instead of ending the process.

periodiq lets the error end the process, and a restarted periodiq sends at once and dies again: during
a Redis outage it crash-loops, and `collect up` stops the whole stack once a process has exited more than
five times in a minute. Skipping is safe: every periodic job here (the sweep, export retention) looks at
PostgreSQL afresh each time, so the next run does what the skipped one would have done.
"""

from __future__ import annotations

import logging

import periodiq

from shared.health import report_failure
from shared.wake import BROKER_UNAVAILABLE

logger = logging.getLogger(__name__)


class ResilientScheduler(periodiq.Scheduler):
    def send_actors(self, actors, now) -> None:
        for actor in actors:
            try:
                super().send_actors([actor], now)
            except BROKER_UNAVAILABLE as exc:
                reason = report_failure("Redis", exc)
                logger.warning("skipped %s at %s: Redis unavailable (%s); its next run catches up",
                               actor.actor_name, now, reason)


def main() -> None:
    # periodiq's entry point builds its scheduler by this module-level name; it has no other hook.
    periodiq.Scheduler = ResilientScheduler
    periodiq.entrypoint()


if __name__ == "__main__":
    main()
