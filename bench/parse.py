"""How long `events.parse_batch` takes on a 500-event batch of the built-in types.

    python -m bench.parse            # best and median of 15 runs, in CPU time

CPU time of this process, not wall time, so that other load on the machine counts less.
"""

from __future__ import annotations

import statistics
import time
import timeit

import orjson

from wsbroadcast.events import parse_batch


def batch() -> bytes:
    events = []
    for i in range(500):
        if i % 3 == 0:
            data = {"post_id": f"post-{i}", "action": "updated", "title": "A title", "tags": ["a"]}
            events.append({"type": "blog_update", "data": data})
        elif i % 3 == 1:
            data = {"post_id": f"post-{i}", "comment_id": f"c{i}", "action": "created"}
            events.append(
                {"type": "comment_update", "data": data, "timestamp": "2024-01-01T00:00:00+02:00"}
            )
        else:
            data = {"message": "maintenance at 22:00", "level": "info"}
            events.append({"type": "system_notification", "data": data})
    return orjson.dumps(events)


def main() -> None:
    body = batch()
    runs = [
        min(timeit.repeat(lambda: parse_batch(body), number=50, repeat=3, timer=time.process_time))
        / 50
        for _ in range(15)
    ]
    print(
        f"parse_batch, 500 events, {len(body)} bytes: best {min(runs) * 1e6:.0f} us, "
        f"median {statistics.median(runs) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
