"""The baseline: what the published node does. Every prompt message, in order (FIFO, dora's default
queue), re-encodes the newest frame in fp32 and decodes with transformers' own forward. Its latency
counts from the frame the boxes were found on: that is how old the answer's information is."""

import torch
from dora import Node

from dora_sam2 import codecs
from dora_sam2.model import Sam2Backend
from dora_sam2.settings import Settings


def main():
    settings = Settings.from_env()  # the benchmark sets DTYPE=float32
    model = Sam2Backend.load(settings.model, device=settings.device, dtype=settings.dtype,
                             image_size=settings.image_size)
    node, newest = Node(), None
    for event in node:
        if event["type"] != "INPUT":
            continue
        if event["id"] == "image":
            newest = codecs.decode_frame("image", event["value"], event["metadata"])
            continue
        if newest is None:
            continue
        prompt = codecs.decode_boxes(event["id"], event["value"], event["metadata"])
        points = torch.from_numpy(model.model_points(prompt, newest.width, newest.height))[None]
        with torch.inference_mode():
            out = model.model(pixel_values=model.preprocess(newest.rgb), input_points=points,
                              input_labels=torch.from_numpy(prompt.point_labels)[None], multimask_output=False)
        masks, _ = model.postprocess(out.pred_masks[0, :, 0], out.iou_scores[0, :, 0], newest.width, newest.height)
        metadata = {"width": newest.width, "height": newest.height, "num_masks": len(masks)}
        if prompt.timestamp is not None:  # latency counts from the frame the boxes were found on
            metadata["timestamp"] = prompt.timestamp
        node.send_output("mask", codecs.pa.array(masks.reshape(-1).view("uint8")), metadata)


if __name__ == "__main__":
    main()
