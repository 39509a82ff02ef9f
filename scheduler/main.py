"""The scheduler as an OS process: open the store and broker, run until SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from db.clock import StoreClock
from db.errors import TactusError
from db.outage import Outages, open_patient_store
from mq.message import status_queue
from mq.patient import open_patient_broker
from scheduler.config import SchedulerConfig
from scheduler.presence import Presence
from scheduler.service import Scheduler

if TYPE_CHECKING:
    from db.clock import Clock
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")


def run_scheduler(
    settings: Settings,
    *,
    stop_event: threading.Event | None = None,
    clock: Clock | None = None,
    install_signals: bool = True,
) -> int:
    """Run the scheduler until ``stop_event`` is set or SIGTERM/SIGINT arrives.

    SIGHUP re-reads the registry at once. The store is the only state: killing this process at
    any instant loses nothing, and a new one carries on. An outage of the store or the broker,
    at start or later, is waited out (:mod:`db.outage`), however long it lasts.

    Returns:
        The process exit code (0 after a graceful stop).
    """
    stop_event = stop_event or threading.Event()
    if install_signals and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    outages = Outages.with_backoff_max(timedelta(seconds=settings.outage_backoff_max))
    store = open_patient_store(settings.store_uri, outages.store, stopping=stop_event)
    try:
        store.init_schema()
        broker = open_patient_broker(
            settings.broker_uri,
            store,
            outages.broker,
            visibility=timedelta(seconds=settings.visibility_timeout),
            stopping=stop_event,
        )
        broker.declare(status_queue(settings.queue_prefix))
    except TactusError:
        if stop_event.is_set():
            store.close()
            return 0  # stopped while waiting for the store or the broker at start
        raise
    scheduler_clock = clock or StoreClock(store.impatient())
    presence = Presence(
        store.impatient(),
        scheduler_clock,
        box_id=settings.box_id,
        interval=timedelta(seconds=settings.heartbeat_interval),
    )
    scheduler = Scheduler(
        store,
        broker,
        scheduler_clock,
        SchedulerConfig.from_settings(settings),
        outages=outages,
        store_steady_for=presence.steady_for,
    )
    if install_signals and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: _reload(scheduler))
    log.info(
        "scheduler starting: store %s, broker %s, box %s",
        store.describe(),
        broker.describe(),
        settings.box_id,
    )
    presence.start()
    scheduler.start()
    try:
        stop_event.wait()
    finally:
        log.info("scheduler stopping")
        presence.stop()
        scheduler.stop()
        broker.close()
        store.close()
    return 0


def _reload(scheduler: Scheduler) -> None:
    log.info("SIGHUP: reloading the registry")
    scheduler.request_reload()
