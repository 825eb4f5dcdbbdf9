"""A failed demo reads well: the real demo dataflow run as demo.sh runs it (scripts/demo_run.py), with a bad
setting or no weights, ends with the failed node's sentence once and the next step for that cause; no
other node says anything."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from support.dataflows import BIN, ROOT

SCRIPT = ROOT / "scripts" / "demo_run.py"
KEPT_OUT = ("MODEL", "MODE", "DEVICE", "DTYPE", "VIDEO", "BOXES", "HF_HUB_OFFLINE")  # the tests set their own


def demo_run(tmp_path, env: dict, *flags: str) -> tuple[subprocess.CompletedProcess, str]:
    """demo.sh's run of examples/demo.yml: (what the user sees, dora's whole log)."""
    full = {k: v for k, v in os.environ.items() if k not in KEPT_OUT}
    full.update({"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OUT_DIR": str(tmp_path / "demo"),
                 "RUST_BACKTRACE": "0", "HF_HUB_OFFLINE": "1", "WARMUP": "0",
                 "BOXES": '[[20, 90, 160, 180, "block"]]', **env})
    log = tmp_path / "dora.log"
    result = subprocess.run([sys.executable, str(SCRIPT), "examples/demo.yml", str(log), *flags], cwd=ROOT,
                            env=full, capture_output=True, text=True, timeout=600)  # a hang guard only
    return result, log.read_text()


def ends_with_one_sentence(result, node: str, sentence: str) -> str:
    """The run failed, said `sentence` exactly once, as the failure of `node`, then the next step: returned."""
    seen = result.stdout + result.stderr
    assert result.returncode != 0, seen
    assert "Traceback" not in seen and seen.count(sentence) == 1, seen
    failed, step, log = result.stderr.rstrip().splitlines()[-3:]
    assert failed.startswith(f"demo: {node} failed: ") and sentence in failed, seen
    assert step.startswith("demo: next: ") and log.startswith("demo: dora's whole log: "), seen
    return step


@pytest.mark.dataflow
def test_a_bad_setting_with_random_weights_says_fix_that_setting_not_use_random_weights(tmp_path, model_dir):
    result, log = demo_run(tmp_path, {"MODEL": str(model_dir), "MODE": "tracking"}, "--random-weights")
    step = ends_with_one_sentence(result, "sam2", "MODE='tracking' is not one of segment, track.")
    assert "MODE=tracking" in step and "unset MODE" in step and "--random-weights" not in step
    assert "Traceback" not in log  # the other four nodes left without a word: dora says why they stopped
    assert log.count("This error occurred because node `sam2` exited before connecting to dora") == 4


@pytest.mark.dataflow
def test_no_weights_and_no_network_suggests_the_offline_demo_and_says_so_to_demo_sh(tmp_path):
    result, _ = demo_run(tmp_path, {})
    step = ends_with_one_sentence(result, "sam2", "MODEL=facebook/sam2.1-hiera-tiny is not in the Hugging Face cache")
    assert "./demo.sh --world" in step and "./demo.sh --random-weights" in step
    assert result.returncode == 3  # demo.sh then runs the offline demo


@pytest.mark.dataflow
def test_a_bad_box_list_stops_the_detector_and_the_loaded_sam2_node_leaves_quietly(tmp_path, model_dir):
    """The detector fails at once; SAM 2 loads its model, then finds the dataflow going down."""
    result, log = demo_run(tmp_path, {"MODEL": str(model_dir), "BOXES": "[[1, 2, 3]]"})
    step = ends_with_one_sentence(result, "detector", "BOXES=[[1, 2, 3]] is not a JSON list of")
    assert "unset BOXES" in step
    assert "Traceback" not in log and "sam2: INFO dora-sam2: model" in result.stdout


@pytest.mark.dataflow
def test_a_dataflow_dora_cannot_start_is_said_as_dora_s(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("nodes:\n  - id: a\n    path: no-such-node-here\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(broken), str(tmp_path / "dora.log")], cwd=tmp_path,
                            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    said = result.stderr.rstrip().splitlines()
    failed = [line for line in said if line.startswith("demo: ")][0]
    assert failed == "demo: dora failed: Dataflow could not be validated.", result.stderr
    assert "no-such-node-here" in result.stderr and "dora could not run the dataflow" in said[-2], result.stderr


# ---------------------------------------------------------------------------- the advice alone


def demo_module():
    spec = importlib.util.spec_from_file_location("demo_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_crash_is_not_taken_for_a_setting():
    demo = demo_module()
    crash = demo.Failure("sam2", ["ValueError: MODEL=x went wrong inside"], sentence=False)
    assert "crash" in demo.next_step(crash, random_weights=False, environ={})


def test_an_unreadable_random_weight_model_is_made_anew():
    demo = demo_module()
    broken = demo.Failure("sam2", ["MODEL=/r could not be read as a SAM2 checkpoint (bad file)."], sentence=True)
    step = demo.next_step(broken, random_weights=True, environ={"MODEL": "/r"})
    assert "delete that directory" in step and "/r" in step


def test_a_setting_the_shell_did_not_set_is_not_blamed_on_it():
    demo = demo_module()
    said = demo.Failure("sam2", ["EVERY_FRAME='x' is not a boolean."], sentence=True)
    assert demo.next_step(said, random_weights=False, environ={}) == "do what the line says, then run ./demo.sh again."


@pytest.mark.dataflow
def test_the_world_demo_answers_every_frame_with_a_track_for_each_object_its_detector_sees(tmp_path, dataflow,
                                                                                          micro_model_dir):
    """examples/world.yml (./demo.sh --world) on a short world clip: the detector reads the clip's truth,
    so the first answer with tracks (frame 0's, or the next when its boxes come after the frame was
    answered) holds one per object the world says is mostly in view on frame 0."""
    import json

    from support.dataflows import example_flow, lossless

    world = tmp_path / "world"
    subprocess.run([str(BIN / "dora-sam2-world"), str(world), "--seed", "2005", "--clips", "1", "--frames", "12",
                    "--size", "160x120", "--footage", "none"], check=True, capture_output=True, timeout=120)
    truth = json.loads((world / "annotations.json").read_text())
    first = next(i["id"] for i in truth["images"] if i["frame"] == 0)
    seen = [a for a in truth["annotations"] if a["image_id"] == first and a["area"] > 0 and a["visibility"] >= 0.5]
    run = dataflow(example_flow("world.yml", 12, {
        "camera": {"VIDEO": str(world / "videos" / "random-2005-0000.mp4")},
        "detector": {"TRUTH": str(world / "annotations.json"), "CLIP": "random-2005-0000", "EVERY": "5"},
        "sam2": {"MODEL": str(micro_model_dir), "WARMUP": "0"}}, {"masks": lossless("sam2/masks")}))
    assert run.returncode == 0, run.log[-3000:]
    answers = run.events()
    assert len(answers) == 12
    counts = [int(a["metadata"]["num_masks"]) for a in answers]
    assert next(c for c in counts if c) == len(seen) > 1, counts
    assert len(list((run.out / "frames").glob("frame_*.png"))) == 12
