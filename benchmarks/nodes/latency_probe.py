"""Records, for every mask message, how old its frame was on arrival (camera-to-mask latency).

Writes OUT (JSON): arrival times and latencies in ms, plus RSS samples of the PID in WATCH_PID_FILE if set.
"""

import json
import os
from datetime import datetime, timezone

from dora import Node


def main():
    arrivals, latencies = [], []
    for event in Node():
        if event["type"] != "INPUT":
            continue
        now = datetime.now(timezone.utc)
        stamp = event["metadata"].get("timestamp")
        if stamp is not None:
            arrivals.append(now.timestamp())
            latencies.append((now - stamp).total_seconds() * 1e3)
    with open(os.environ["OUT"], "w") as f:
        json.dump({"arrivals": arrivals, "latencies_ms": latencies}, f)


if __name__ == "__main__":
    main()
