"""Sends the messages a test scripted, in order: SCRIPT is a pickle of (delay_s, output_id, value, metadata).

A value is a pyarrow Array; metadata may hold `timestamp` (a datetime) to stamp a frame and its prompts alike.
Then it stays LINGER seconds, or until the file UNTIL exists (the test has seen what it waited for): its
outputs closing is what ends the nodes downstream.
"""

import os
import pickle
import time

from dora import Node


def main():
    with open(os.environ["SCRIPT"], "rb") as f:
        steps = pickle.load(f)
    node = Node()
    for delay, output, value, metadata in steps:
        time.sleep(delay)
        node.send_output(output, value, metadata)
    time.sleep(float(os.environ.get("LINGER", "0")))
    until = os.environ.get("UNTIL")
    deadline = time.monotonic() + 900  # a hang guard: the test creates the file
    while until and not os.path.exists(until) and time.monotonic() < deadline:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
