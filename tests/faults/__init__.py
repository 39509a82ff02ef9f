"""The fault-injection suite of issue 12: real daemons driven through their public interfaces
while a TCP proxy owned by the tests takes the store (a private PostgreSQL cluster) or the broker
(RabbitMQ) away, while hostile bytes sit on their queues, or while a SIGKILL lands in a chosen
crash window. Every command counts its own runs, so "lost" and "ran twice" are numbers.

Run it (about 4 minutes; it needs ``initdb``/``pg_ctl`` and RabbitMQ on 127.0.0.1:5672, skipped
without them locally and failing with ``CI=true``)::

    python -m pytest tests/faults -rfEs -p no:cacheprovider

Modules: ``proxy.py`` (the proxy and its tripwire), ``pgcluster.py`` (the private cluster),
``installation.py`` (the daemons), ``counting.py`` and ``count_run.py`` (the counts),
``drill.py`` (outage windows and verdicts), ``conftest.py`` (fixtures); one ``test_*.py`` per
fault, ``test_proxy.py``, ``test_counting.py`` and ``test_harness.py`` prove the tools.
"""
