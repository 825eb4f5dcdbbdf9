"""Training and fine-tuning a SAM 2-family checkpoint on a dataset in `dora-sam2-dataset`'s layout.

The data path: data.py reads the dataset (COCO instances; frames of one camera, in order, are a clip)
into `ImageSample`s and `ClipSample`s; prompts.py samples what a detector or a person would give (a box,
clicks) from each object's true mask; steps.py runs the model's own streaming path (video.py's
`Sam2StreamingModel`, with gradients) over a sample and scores it with SAM 2's losses (losses.py);
trainer.py is the loop (optimiser, schedule, time budget, resumable checkpoints) and cli.py the
`dora-sam2-train` command. Its output is a checkpoint directory that `MODEL=dir` loads unchanged.
"""
