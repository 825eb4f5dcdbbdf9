"""Records every input it gets: OUT_DIR/events.jsonl (id, type, metadata) and OUT_DIR/NNNN.npy (values)."""

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
from dora import Node


def plain(value):
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main():
    out = Path(os.environ["OUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    node = Node()
    index = 0
    with open(out / "events.jsonl", "w") as log:
        for event in node:
            if event["type"] != "INPUT":
                continue
            array = event["value"].to_numpy(zero_copy_only=False)
            np.save(out / f"{index:04d}.npy", array)
            received = datetime.now().astimezone().isoformat()
            log.write(json.dumps({"index": index, "id": event["id"], "type": str(event["value"].type),
                                  "received": received,
                                  "metadata": {k: plain(v) for k, v in event["metadata"].items()}}) + "\n")
            log.flush()
            index += 1


if __name__ == "__main__":
    main()
