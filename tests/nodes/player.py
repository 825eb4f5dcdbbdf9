"""Sends the messages a test scripted, in order: SCRIPT is a pickle of (delay_s, output_id, value, metadata).

A value is a pyarrow Array; metadata may hold `timestamp` (a datetime) to stamp a frame and its prompts alike.
A step whose output is "wait-for-answers" waits until its `answers` input (the node's answers) has
brought that many messages: the next phase starts once the node is there, at any machine's pace. A step
whose output is "wait-for-close" waits until that input has closed: the node feeding it has ended.
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
    answers = 0
    for delay, output, value, metadata in steps:
        time.sleep(delay)
        if output == "wait-for-answers":
            while answers < value:
                event = node.next()
                if event is None:
                    raise SystemExit(f"the dataflow ended after {answers} of the {value} answers awaited")
                answers += event["type"] == "INPUT" and event["id"] == "answers"
        elif output == "wait-for-close":
            event = node.next()
            while event is not None and not (event["type"] == "INPUT_CLOSED" and event["id"] == "answers"):
                event = node.next()
        else:
            node.send_output(output, value, metadata)
    time.sleep(float(os.environ.get("LINGER", "0")))
    until = os.environ.get("UNTIL")
    deadline = time.monotonic() + 900  # a hang guard: the test creates the file
    while until and not os.path.exists(until) and time.monotonic() < deadline:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
