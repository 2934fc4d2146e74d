"""`python -m workers.health`: exit 0 when a drawer worker of this host beats in Redis (a container health
check: the worker is up, its models are loaded and its heartbeat thread runs)."""

from __future__ import annotations

import socket
import sys

from studio.settings import Settings
from workers.jobs import redis_client
from workers.pool import PoolRecords


def main() -> int:
    pool = Settings().drawer
    try:
        beats = PoolRecords(redis_client(pool.broker_url, pool.connect_timeout_s), pool.prefix).workers()
    except Exception as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    host = socket.gethostname()
    mine = [beat.name for beat in beats if beat.name.endswith(f"@{host}")]
    print(f"workers on {host}: {mine or 'none'}")
    return 0 if mine else 1


if __name__ == "__main__":
    sys.exit(main())
