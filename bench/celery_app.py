"""The baseline most Python teams would build: a Celery task per postback, Redis as the
broker, ``requests`` to send. Used by ``bench/drain.py --celery N``."""

from __future__ import annotations

import os

import requests
from celery import Celery

app = Celery("bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/9"))
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=4,
                broker_connection_retry_on_startup=True)
session = requests.Session()


@app.task(name="send")  # type: ignore[untyped-decorator]
def send(url: str) -> int:
    response = session.get(url, timeout=15)
    return response.status_code
