"""The shipped examples and node manifests: every port typed, the examples validate with dora's strict type
check (which refuses a mistyped wiring), and the demo runs end to end and draws the masks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.dataflows import BIN, ROOT, run_dataflow

EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
TYPES = ROOT / "examples" / "types"  # dora loads types/ beside a dataflow
# dora-node.yml describes one node (one entrypoint): the SAM 2 node's at the root, its sister nodes' in hub/.
MANIFESTS = [ROOT / "dora-node.yml", *sorted((ROOT / "hub").glob("*/dora-node.yml"))]
# For the dora 0.5 runtime, which refuses a node's output_types and input_types ("unknown field").
DORA_05 = "rerun-dora05.yml"


def dora(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dora"), *args], capture_output=True, text=True, cwd=cwd,
                          env={"RUST_BACKTRACE": "0", "PATH": str(BIN)})


def validate_strictly(dataflow: Path) -> subprocess.CompletedProcess:
    return dora("validate", "--strict-types", "--offline", str(dataflow))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def by_entrypoint() -> dict[str, dict]:
    return {manifest["entrypoint"]: manifest for manifest in map(load, MANIFESTS)}


def example_copy(directory: Path, name: str = "detection.yml", rewire=lambda nodes: None) -> Path:
    """examples/`name` in `directory` with the examples' types/ beside it, `rewire` applied to its nodes."""
    spec = load(ROOT / "examples" / name)
    rewire({node["id"]: node for node in spec["nodes"]})
    shutil.copytree(TYPES, directory / "types")
    (directory / name).write_text(yaml.safe_dump(spec, sort_keys=False))
    return directory / name


@pytest.mark.parametrize("dataflow", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_dataflows_validate_with_strict_types(dataflow):
    result = validate_strictly(dataflow)
    assert result.returncode == 0 and "All type annotations OK." in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("dataflow", [p for p in EXAMPLES if p.name != DORA_05],
                         ids=[p.name for p in EXAMPLES if p.name != DORA_05])
def test_every_port_of_every_example_is_typed(dataflow):
    """A timer input is typed by dora itself (std/core/v1/UInt64)."""
    untyped = []
    for node in load(dataflow)["nodes"]:
        for output in node.get("outputs", []):
            if output not in node.get("output_types", {}):
                untyped.append(f"{node['id']}/{output}")
        for name, source in node.get("inputs", {}).items():
            source = source["source"] if isinstance(source, dict) else source
            if not source.startswith("dora/timer/") and name not in node.get("input_types", {}):
                untyped.append(f"{node['id']} input {name}")
    assert not untyped


def test_the_dora_05_example_carries_no_types():
    """dora 0.5 refuses a dataflow whose node has output_types: "unknown field `output_types`"."""
    assert not [node["id"] for node in load(ROOT / "examples" / DORA_05)["nodes"]
                if "output_types" in node or "input_types" in node]


@pytest.mark.parametrize("dataflow", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_our_nodes_are_wired_and_typed_in_the_examples_as_their_manifests_say(dataflow):
    manifests = by_entrypoint()
    ours = [node for node in load(dataflow)["nodes"] if node.get("path") in manifests]
    assert ours
    for node in ours:
        manifest = manifests[node["path"]]
        for kind, wired in (("inputs", list(node.get("inputs", {}))), ("outputs", node.get("outputs", []))):
            declared = manifest[kind]
            assert set(wired) <= set(declared), (node["id"], kind)
            typed = node.get(kind.removesuffix("s") + "_types", {})
            assert typed == {port: declared[port]["type"] for port in typed}, (node["id"], kind)
        required = [port for port, spec in manifest["inputs"].items() if spec.get("required", True)]
        assert set(required) <= set(node.get("inputs", {})), node["id"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[load(p)["name"] for p in MANIFESTS])
def test_node_manifests_validate(manifest):
    result = dora("validate", "--node-manifest", str(manifest))
    assert result.returncode == 0 and "Node manifest OK" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[load(p)["name"] for p in MANIFESTS])
def test_every_port_of_every_manifest_is_typed(manifest):
    spec = load(manifest)
    assert not [port for kind in ("inputs", "outputs") for port, entry in (spec[kind] or {}).items()
                if not entry.get("type")]


def test_our_types_are_defined_alike_for_the_examples_and_in_every_manifest():
    """dora reads our types from types/ beside a dataflow and from the `types` a manifest ships, and validates
    a manifest against its own types only: each holds the same definitions."""
    package = TYPES / "dora-sam2" / "vision" / "v1.yml"
    defined = {f"dora-sam2/vision/v1/{name}": spec for name, spec in load(package)["types"].items()}
    assert defined
    for manifest in MANIFESTS:
        assert load(manifest)["types"] == defined, manifest


def test_a_broken_dataflow_does_not_validate(tmp_path):
    """The check above can fail: an input wired to an output nobody declares is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("nodes:\n  - id: a\n    path: a.py\n    inputs: {image: nowhere/image}\n")
    assert validate_strictly(broken).returncode != 0


def _union_into_masks(nodes):
    nodes["report"]["inputs"]["masks"] = "sam2/mask"


def _frames_into_boxes(nodes):
    nodes["sam2"]["inputs"]["bbox"] = "camera/image"


@pytest.mark.parametrize("rewire, refusal", [
    (_union_into_masks, 'type mismatch on input "masks": upstream sam2/mask declares "std/core/v1/UInt8", '
                        'but expected "dora-sam2/vision/v1/InstanceMasks"'),
    (_frames_into_boxes, 'type mismatch on input "bbox": upstream camera/image declares "std/media/v1/Image", '
                         'but expected "std/vision/v1/BoundingBox"'),
], ids=["union mask into masks", "frames into boxes"])
def test_a_mistyped_wiring_is_refused(tmp_path, rewire, refusal):
    """The strict check can fail: examples/detection.yml, copied as it is, validates; with one input wired to
    an output of another type, it is refused, naming the input and both types."""
    assert validate_strictly(example_copy(tmp_path / "as is")).returncode == 0
    result = validate_strictly(example_copy(tmp_path / "rewired", rewire=rewire))
    assert result.returncode != 0 and refusal in result.stdout, result.stdout + result.stderr


def test_without_our_types_beside_it_a_dataflow_naming_them_is_refused(tmp_path):
    example = example_copy(tmp_path)
    shutil.rmtree(tmp_path / "types")
    result = validate_strictly(example)
    assert result.returncode != 0
    assert 'unknown type "dora-sam2/vision/v1/InstanceMasks" on output "masks"' in result.stdout, result.stdout


def every_port_flow(click_masks: str) -> str:
    """Our four nodes, every port of each wired, and not one type annotation on them."""
    return f"""
nodes:
  - id: camera
    path: camera.py
    outputs: [image]
    output_types: {{image: std/media/v1/Image}}
  - id: detector
    path: detector.py
    outputs: [bbox]
    output_types: {{bbox: std/vision/v1/BoundingBox}}
  - id: words
    path: words.py
    outputs: [phrases, ended]
    output_types: {{phrases: std/core/v1/String, ended: std/core/v1/Int64}}
  - id: sam2
    path: dora-sam2
    inputs: {{image: camera/image, bbox: detector/bbox, boxes2d: detector/bbox, points: click/points,
              text: words/phrases, reset: click/reset, remove: words/ended}}
    outputs: [mask, masks, overlay, boxes2d]
  - id: click
    path: hub/dora-sam2-click/dora-sam2-click
    inputs: {{image: camera/image, mask: sam2/mask, masks: {click_masks}}}
    outputs: [points, reset]
  - id: rerun
    path: hub/dora-sam2-rerun/dora-sam2-rerun
    inputs: {{image: camera/image, mask: sam2/mask, masks: sam2/masks, bbox: sam2/boxes2d, boxes2d: detector/bbox}}
  - id: dataset
    path: hub/dora-sam2-dataset/dora-sam2-dataset
    inputs: {{image: camera/image, masks: sam2/masks, mask: sam2/mask}}
    outputs: [done]
  - id: viewer
    path: viewer.py
    inputs: {{overlay: sam2/overlay, done: dataset/done}}
    input_types: {{overlay: std/media/v1/Image, done: std/core/v1/UInt8}}
"""


@pytest.mark.parametrize("click_masks, accepted", [("sam2/masks", True), ("sam2/mask", False)],
                         ids=["as declared", "union mask into masks"])
def test_the_manifests_alone_type_a_dataflow_of_our_nodes(tmp_path, click_masks, accepted):
    """dora reads the dora-node.yml its entrypoint names beside a node's path (as `hub:` does), checks the wiring
    against the typed ports and registers the types it ships: here no node of ours is annotated and there
    is no types/ folder. dora 1.1 also injects the types of ports a dataflow leaves unwired, then warns that
    they are not wired ('output_types key "mask" not found in outputs list'), fatal under --strict-types:
    so this dataflow wires every port."""
    shutil.copy(ROOT / "dora-node.yml", tmp_path)
    shutil.copytree(ROOT / "hub", tmp_path / "hub")
    (tmp_path / "every-port.yml").write_text(every_port_flow(click_masks))
    result = dora("validate", "--strict-types", "--offline", "every-port.yml", cwd=tmp_path)
    injected = [line for line in result.stdout.splitlines() if "injected" in line and "contract type(s)" in line]
    assert len(injected) == 4, result.stdout  # sam2, click, rerun, dataset
    if accepted:
        assert result.returncode == 0 and "All type annotations OK." in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert ('node "click": type mismatch on input "masks": upstream sam2/mask declares "std/core/v1/UInt8", '
                'but expected "dora-sam2/vision/v1/InstanceMasks"') in result.stdout, result.stdout


@pytest.mark.dataflow
def test_demo_dataflow_writes_annotated_frames(tmp_path, model_dir):
    """Run from the repository root, as demo.sh does. There dora 1.x's `uv run which` must leave the
    project alone (pyproject's tool.uv managed = false): a uv sync would swap in a CUDA torch. With
    dora's runtime type check on, an output whose Arrow type is not the declared one would fail its send."""
    out = tmp_path / "demo"
    shutil.copytree(TYPES, tmp_path / "types")
    demo = (ROOT / "examples" / "demo.yml").read_text()
    assert 'FRAMES: "60"' in demo  # a node's env in the YAML wins over the one dora runs in
    run = run_dataflow(tmp_path, demo.replace("path: nodes/", f"path: {ROOT}/examples/nodes/").replace(
        'FRAMES: "60"', 'FRAMES: "6"'), cwd=ROOT, env={
        "MODEL": str(model_dir), "OUT_DIR": str(out), "DORA_RUNTIME_TYPE_CHECK": "error",
        "BOXES": '[[20, 90, 160, 180, "block"], [430, 190, 530, 290, "disc"]]'})
    assert run.returncode == 0, run.log[-4000:]
    assert not (ROOT / "uv.lock").exists()
    # dora's static check ("type warning") and its runtime ones ("type mismatch", "expected Arrow type")
    assert not [line for line in run.log.splitlines()
                if any(s in line for s in ("type warning", "type mismatch", "expected Arrow type"))]
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 6 and (out / "overlay.mp4").stat().st_size > 0  # every frame answered: a clip
    assert any("block covers" in line for line in run.node_log("report"))
