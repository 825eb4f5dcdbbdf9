"""TICKS ticks, INTERVAL seconds apart, then exits: a timer that ends, so the nodes fed by it end too."""

import os
import time

import pyarrow as pa
from dora import Node


def main():
    node = Node()
    for _ in range(int(os.environ.get("TICKS", "5"))):
        node.send_output("tick", pa.array([]))
        time.sleep(float(os.environ.get("INTERVAL", "0.2")))


if __name__ == "__main__":
    main()
