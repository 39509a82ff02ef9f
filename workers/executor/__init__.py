"""Executors (SPEC section 11): run units of work on a box that reaches Tactus only over HTTP.

- :mod:`workers.executor.api`: what the executor needs of mx (claim, heartbeat, outcome,
  leave), as a Protocol the command line fills with an HTTP client, and its errors;
- :mod:`workers.executor.retry`: backoff while mx is unreachable, fixed or exponential, with
  jitter;
- :mod:`workers.executor.run`: running one claimed unit of work, by the shell driver or a worker
  class, within its timeout;
- :mod:`workers.executor.loop`: the executor: its slots, its heartbeats and its drain.
"""
