"""``make load``: a locust load test of the local system, its data check, and the seed-000
profile against the naive peer (``python -m tools.load``; see ``tools.load.run``).

Only ``locustfile`` imports locust, and only inside the locust process it runs in: importing
locust monkey-patches the standard library with gevent, which the runner (threads, the
``LocalSystem`` supervisor, subprocesses) must never get.
"""
