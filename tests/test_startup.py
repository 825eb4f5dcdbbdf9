"""Starting the node: a bad setting or a missing model is one sentence and a non-zero exit, never a traceback."""

from __future__ import annotations

import ast
import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dora_sam2.settings import ConfigError, Settings, variables

BIN = Path(sys.executable).parent


def start(env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("MODEL", "DEVICE", "DTYPE")}
    full.update({"HF_HUB_OFFLINE": "1", **env})
    return subprocess.run([str(BIN / "dora-sam2")], env=full, capture_output=True, text=True, timeout=120)


def one_sentence(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def test_offline_without_cached_weights_says_what_to_do():
    line = one_sentence(start({}))
    assert "facebook/sam2.1-hiera-tiny" in line and "internet" in line and "set MODEL" in line


@pytest.mark.parametrize("model,download", [
    ("facebook/sam2.1-hiera-small", "`hf download facebook/sam2.1-hiera-small --local-dir sam2.1-hiera-small`"),
    ("yonigozlan/EdgeTAM-hf", "`hf download yonigozlan/EdgeTAM-hf --local-dir EdgeTAM-hf`"),
    ("facebook/sam3", "`hf download facebook/sam3 --local-dir sam3`"),
])
def test_offline_the_download_suggested_is_the_model_named(model, download):
    line = one_sentence(start({"MODEL": model}))
    assert f"MODEL={model} is not in the Hugging Face cache" in line and download in line
    gated = "gated" in line and "https://huggingface.co/facebook/sam3" in line and "hf auth login" in line
    assert gated == (model == "facebook/sam3")


def test_an_unreachable_hub_is_said_after_one_request_not_after_the_download_s_retries():
    """With no network the hub's download retries five times with backoff (23 s of silence); the node asks
    once and says so. The hub here is a local port that reads each request and hangs up without an answer."""
    import socket
    import threading

    requests = []

    def hang_up(server):
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with connection, connection.makefile("rb") as request:
                requests.append(request.readline().decode(errors="replace"))

    with socket.create_server(("127.0.0.1", 0)) as server:
        threading.Thread(target=hang_up, args=(server,), daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        line = one_sentence(start({"HF_HUB_OFFLINE": "", "HF_ENDPOINT": endpoint, "NO_PROXY": "127.0.0.1",
                                   "no_proxy": "127.0.0.1"}))
    assert "is not in the Hugging Face cache and the hub cannot be reached" in line
    assert "hf download facebook/sam2.1-hiera-tiny" in line
    asked = [request for request in requests if "/facebook/sam2.1-hiera-tiny/" in request]
    assert len(asked) == 1, requests


@pytest.mark.parametrize("model,expected", [
    ("/no/such/dir", "is not a directory"),
    ("./", "holds no config.json"),
])
def test_bad_model_directories(model, expected):
    assert expected in one_sentence(start({"MODEL": model}))


def test_an_image_size_hieras_windows_cannot_take(model_dir):
    line = one_sentence(start({"MODEL": str(model_dir), "IMAGE_SIZE": "528"}))
    assert "IMAGE_SIZE=528 does not fit" in line and "multiple of 32" in line


def test_edgetam_without_timm_says_what_to_install(tmp_path):
    try:
        import timm  # noqa: F401
    except Exception:  # not installed, or torchvision built for another torch: the node must say so
        pass
    else:
        pytest.skip("timm imports here")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "edgetam_video"}))
    line = one_sentence(start({"MODEL": str(tmp_path), "MODE": "track"}))
    assert "is EdgeTAM" in line and "pip install 'dora-sam2[edgetam]'" in line


def test_meta_s_original_edgetam_id_points_to_the_one_transformers_loads():
    line = one_sentence(start({"MODEL": "facebook/EdgeTAM"}))
    assert "MODEL=yonigozlan/EdgeTAM-hf" in line


def test_a_checkpoint_that_is_not_sam2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "not SAM2" in one_sentence(start({"MODEL": str(tmp_path)}))


def test_cuda_asked_for_on_a_machine_without_it():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "sees no CUDA GPU" in one_sentence(start({"DEVICE": "cuda"}))


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:-1"])
def test_a_device_the_api_is_handed_that_is_none_is_a_setting_error(name):
    """Sam2Backend.load(device=...) past Settings: a configuration error in one sentence, not torch's own."""
    from dora_sam2.devices import resolve_device

    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device(name)


@pytest.mark.parametrize("env,message", [
    ({"DEVICE": "tpu"}, "DEVICE='tpu' is not one of"),
    ({"DTYPE": "int8"}, "DTYPE='int8' is not one of"),
    ({"FRAME_BUFFER": "0"}, "FRAME_BUFFER=0 is below its minimum"),
    ({"FRAME_BUFFER": "many"}, "is not an integer"),
    ({"WARMUP": "maybe"}, "is not a boolean"),
    ({"MODE": "follow"}, "MODE='follow' is not one of segment, track"),
    ({"MATCH_IOU": "1.5"}, "MATCH_IOU=1.5 is above its maximum of 1"),
    ({"MAX_OBJECTS": "0"}, "MAX_OBJECTS=0 is below its minimum"),
    ({"LOST_FRAMES": "soon"}, "is not an integer"),
    ({"IMAGE_SIZE": "big"}, "is not an integer"),
    ({"MIN_CONFIDENCE": "50"}, "MIN_CONFIDENCE=50.0 is above its maximum of 1"),
    ({"MASK_LAYOUT": "grid"}, "MASK_LAYOUT='grid' is not one of union, stack"),
    ({"NON_OVERLAP": "yes"}, "NON_OVERLAP='yes' is not one of off, memory, all"),
    ({"FIRST_BOXES_SECONDS": "-1"}, "FIRST_BOXES_SECONDS=-1.0 is not a finite number of at least 0"),
    ({"REVIVE_REACH_GROWTH": "1e300"}, "REVIVE_REACH_GROWTH=1e\\+300 is above its maximum of 1000"),
])
def test_bad_settings(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
    assert message.split("=")[0] in one_sentence(start(env))


@pytest.mark.parametrize("env,sentence", [
    ({"MIN_CONFIDENCE": "50"}, "MIN_CONFIDENCE=50.0 is above its maximum of 1: a confidence is from 0 to 1."),
    ({"MIN_CONFIDENCE": "1.01"}, "MIN_CONFIDENCE=1.01 is above its maximum of 1: a confidence is from 0 to 1."),
    ({"MIN_CONFIDENCE": "-0.5"},
     "MIN_CONFIDENCE=-0.5 is not a finite number of at least 0: a confidence is from 0 to 1."),
    ({"MATCH_IOU": "30"}, "MATCH_IOU=30.0 is above its maximum of 1: an IoU is from 0 to 1."),
    ({"MATCH_IOU": "inf"}, "MATCH_IOU=inf is not a finite number of at least 0: an IoU is from 0 to 1."),
])
def test_a_confidence_or_an_iou_past_its_range_is_one_sentence_naming_the_range(env, sentence):
    """A confidence or an IoU above 1 means nothing (MIN_CONFIDENCE=50, meant as a percent, would drop
    every box): the sentence names the setting, the value and the range."""
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == sentence


def test_a_confidence_and_an_iou_take_both_ends_of_their_range():
    for value in ("0", "1"):
        settings = Settings.from_env({"MIN_CONFIDENCE": value, "MATCH_IOU": value})
        assert (settings.min_confidence, settings.match_iou) == (float(value), float(value))
    assert Settings.from_env({"MIN_CONFIDENCE": "1"}).phrase_min_score == 1.0


def test_a_sister_nodes_jpeg_quality_or_port_past_its_range_is_one_sentence_naming_the_range():
    from dora_sam2.dataset import _jpeg_quality
    from dora_sam2.rerun_viewer import _port

    assert _jpeg_quality({"JPEG_QUALITY": "100"}) == 100 and _jpeg_quality({"JPEG_QUALITY": "1"}) == 1
    assert _port({"RERUN_WEB_PORT": "65535"}, "RERUN_WEB_PORT", 9090) == 65535
    for refuse, sentence in [
        (lambda: _jpeg_quality({"JPEG_QUALITY": "101"}),
         "JPEG_QUALITY=101 is above its maximum of 100: a JPEG quality is from 1 to 100."),
        (lambda: _jpeg_quality({"JPEG_QUALITY": "0"}),
         "JPEG_QUALITY=0 is below its minimum of 1: a JPEG quality is from 1 to 100."),
        (lambda: _port({"RERUN_WEB_PORT": "65536"}, "RERUN_WEB_PORT", 9090),
         "RERUN_WEB_PORT=65536 is above its maximum of 65535: a TCP port is from 1 to 65535."),
    ]:
        with pytest.raises(ConfigError) as refused:
            refuse()
        assert str(refused.value) == sentence


def test_settings_defaults_and_overrides():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env({"MODEL": "facebook/sam2.1-hiera-large", "DEVICE": "CUDA:1", "DTYPE": "bfloat16"})
    assert (settings.model, settings.device, settings.dtype) == ("facebook/sam2.1-hiera-large", "cuda:1", "bfloat16")


def test_the_readme_limits_table_is_the_code():
    """Each row of the README's Limits table: its setting changes that bound, and its default is the code's."""
    import re

    from support.dataflows import ROOT

    from dora_sam2.settings import Limits

    section = (ROOT / "README.md").read_text().split("### Limits", 1)[1].split("\n\n", 3)[2]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([0-9.]+)`", section, re.M)
    fields = {name: path.removeprefix("limits.") for name, path in variables().items() if path.startswith("limits.")}
    assert sorted(name for name, _ in rows) == sorted(fields), rows
    for name, default in rows:
        field = fields[name]
        assert getattr(Limits(), field) == type(getattr(Limits(), field))(default), name
        assert getattr(Limits.from_env({name: "7"}), field) == 7, name
    assert Settings.from_env({"MAX_BOXES": "7"}).limits.max_boxes == 7
    with pytest.raises(ConfigError, match="MAX_PIXELS=0 is below its minimum of 1"):
        Settings.from_env({"MAX_PIXELS": "0"})


@pytest.mark.parametrize("size,fits", [(512, True), (768, True), (640, False), (128, False)])
def test_edgetam_input_sizes_follow_its_perceiver_grid(size, fits):
    """EdgeTAM's perceiver cuts the memory (size / 16) into 16 x 16 windows: multiples of 256 only."""
    from transformers import EdgeTamVideoConfig

    from dora_sam2.loading import ModelLoadError, at_input_size

    config = EdgeTamVideoConfig()
    if fits:
        resized = at_input_size(config, size)
        assert resized.memory_attention_rope_feat_sizes == [size // 16] * 2
        assert resized.memory_attention_rope_k_sizes == [16, 16]  # the perceiver's grid does not change
        assert resized.prompt_encoder_config.image_size == size
    else:
        with pytest.raises(ModelLoadError, match=f"IMAGE_SIZE={size} does not fit .*multiple of 256"):
            at_input_size(config, size)


# ---------------------------------------------------------------------------- the node-hub manifest


class _Reads(dict):
    """An empty environment that remembers every key the code asks it for."""

    def __init__(self):
        super().__init__()
        self.asked = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return default


# Limits of the click server and of consumers pairing answers with frames: Settings reads every limit
# (one table for all nodes), the sam2 node uses none of these.
OTHER_NODES_LIMITS = {"MAX_CONNECTIONS", "MAX_CLIENT_CONNECTIONS", "READ_TIMEOUT", "MAX_WAITING", "MAX_MASKS"}


def manifest() -> dict:
    import yaml

    from support.dataflows import ROOT

    return yaml.safe_load((ROOT / "dora-node.yml").read_text())


# A value unlike the default, for the variables whose default plus 7 is not one.
UNLIKE_DEFAULT = {"MIN_CONFIDENCE": "0.5", "MATCH_IOU": "0.5", "DEVICE": "cpu", "DTYPE": "float32", "MODE": "track",
                  "MASK_LAYOUT": "stack", "NON_OVERLAP": "memory"}


def unlike_default(name: str, default) -> str:
    if name in UNLIKE_DEFAULT:
        return UNLIKE_DEFAULT[name]
    if isinstance(default, bool):
        return "0" if default else "1"
    if default is None or isinstance(default, (int, float)):
        return str(int(default or 0) + 7)
    return "cup"


def test_from_env_reads_each_variable_of_the_mapping_into_its_field_and_no_other_variable():
    """`variables()` is the one mapping of variables to fields: from_env asks for these and no others, and
    each, set, changes the field it names (a drifted name, `STATS_EVERY` read into `stats_every_s`, fails)."""
    env = _Reads()
    Settings.from_env(env)
    assert env.asked == set(variables())
    default = Settings()

    def field(settings, path):
        for name in path.split("."):
            settings = getattr(settings, name)
        return settings

    for name, path in variables().items():
        value = unlike_default(name, field(default, path))
        assert field(Settings.from_env({name: value}), path) != field(default, path), (name, value)


def test_the_manifest_lists_every_setting_the_node_reads_and_its_true_default():
    listed = manifest()["env"]
    assert set(listed) == set(variables()) - OTHER_NODES_LIMITS
    for key, entry in listed.items():  # setting the listed default changes nothing
        if "default" in entry:
            value = entry["default"]
            value = ("1" if value else "0") if isinstance(value, bool) else str(value)
            assert Settings.from_env({key: value}) == Settings.from_env({}), key


def test_the_manifest_lists_what_the_node_reads_and_sends(caplog):
    from dora_sam2.node import OUTPUTS, Adapter
    from dora_sam2.scheduling import SegmentScheduler
    from dora_sam2.stats import Stages, Stats

    listed = manifest()
    assert list(listed["outputs"]) == list(OUTPUTS)
    stats = Stats(Stages(), every_s=0)
    adapter = Adapter(None, SegmentScheduler(None, stats), stats, ["mask"])
    message = {"type": "INPUT", "value": pa.array([1.0]), "metadata": {}}
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        list(adapter.inputs([{**message, "id": name} for name in [*listed["inputs"], "image_left", "colour"]]))
    ignored = [r.getMessage() for r in caplog.records if "is not one this node reads" in r.getMessage()]
    assert ignored == ["input 'colour' is not one this node reads (image*, bbox, boxes2d, points, text, reset, remove); "
                       "ignoring it"]


# The sister nodes' code, each node's modules; what they read is found in the source, as the settings call it.
SISTER_NODES = {
    "dora-sam2-click": ["click", "click_server", "click_connections", "click_requests", "click_view", "access"],
    "dora-sam2-rerun": ["rerun_viewer"],
    "dora-sam2-dataset": ["dataset"],
}
SETTING_READERS = {"int_setting", "float_setting", "bool_setting", "_port"}  # (env, NAME, default, ...)


def _source_tree(module: str) -> ast.Module:
    return ast.parse(Path(importlib.import_module(f"dora_sam2.{module}").__file__).read_text())


def _literal(node):
    return node.value if isinstance(node, ast.Constant) else None


def _is_environment(node) -> bool:
    return (isinstance(node, ast.Name) and node.id == "env") or (isinstance(node, ast.Attribute)
                                                                   and node.attr == "environ")


def _env_reads(tree) -> dict[str, object]:
    """Each variable read by name in `tree` (`env.get`, `os.environ[...]`, the setting readers) -> its
    literal default (None where there is none)."""
    reads = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and _is_environment(node.func.value) and node.args and isinstance(_literal(node.args[0]), str):
            reads[node.args[0].value] = _literal(node.args[1]) if len(node.args) > 1 else None
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in SETTING_READERS \
                and len(node.args) > 2 and isinstance(_literal(node.args[1]), str):
            reads[node.args[1].value] = _literal(node.args[2])
        elif isinstance(node, ast.Subscript) and _is_environment(node.value) and isinstance(_literal(node.slice), str):
            reads.setdefault(node.slice.value, None)
    return reads


def _limits_used(trees) -> set[str]:
    """The Limits fields the node's code reads, its own or through the codecs functions it calls (and those
    call in turn)."""
    from dataclasses import fields

    from dora_sam2.settings import Limits

    names = {f.name for f in fields(Limits)}

    def read(node) -> set[str]:
        return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr in names}

    codecs = {f.name: (read(f), {n.id for n in ast.walk(f) if isinstance(n, ast.Name)})  # inside codecs: by name
              for f in ast.walk(_source_tree("codecs")) if isinstance(f, ast.FunctionDef)}
    limits, calls = set(), set()
    for tree in trees:  # the nodes call codecs.<function>
        limits |= read(tree)
        calls |= {n.attr for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "codecs" and n.attr in codecs}
    seen = set()
    while calls - seen:
        name = (calls - seen).pop()
        seen.add(name)
        limits |= codecs[name][0]
        calls |= codecs[name][1] & set(codecs)
    return limits


def _shown(value) -> str:
    """A default as the environment would carry it, so that 10 and 10.0, True and true compare equal."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value in (None, ""):
        return ""
    try:
        return repr(float(value))
    except ValueError:
        return str(value)


@pytest.mark.parametrize("name", SISTER_NODES)
def test_a_sister_nodes_manifest_lists_every_setting_its_code_reads_and_its_default(name):
    """Each hub manifest's env names what that node reads and nothing else: its own variables, and the
    limits its code uses (Limits.from_env reads them all; the rest mean nothing to this node), each
    default the code's own."""
    from dataclasses import asdict

    import yaml

    from dora_sam2.settings import Limits
    from support.dataflows import ROOT

    listed = yaml.safe_load((ROOT / "hub" / name / "dora-node.yml").read_text()).get("env", {})
    trees = [_source_tree(module) for module in SISTER_NODES[name]]
    own = {key: default for tree in trees for key, default in _env_reads(tree).items()}
    limits = {field.upper(): default for field, default in asdict(Limits()).items() if field in _limits_used(trees)}
    assert set(listed) == set(own) | set(limits)
    for key, default in {**own, **limits}.items():
        assert _shown(listed[key].get("default")) == _shown(default), key


# ---------------------------------------------------------------------------- the transformers we build on


def test_a_transformers_that_moved_what_we_run_is_one_sentence_naming_the_supported_range(tmp_path, model_dir):
    """The node on a transformers whose video module lost a helper we call (as a later release may do):
    one sentence before any model is loaded, not an AttributeError on the first frame."""
    (tmp_path / "sitecustomize.py").write_text(
        "import transformers.models.sam2_video.modeling_sam2_video as video\ndel video.get_1d_sine_pe\n")
    line = one_sentence(start({"MODEL": str(model_dir), "PYTHONPATH": str(tmp_path)}))
    assert "get_1d_sine_pe" in line and "pip install 'transformers>=5.24,<5.25'" in line


def test_a_model_without_the_modules_the_loop_runs_is_one_sentence(model_dir):
    from dora_sam2 import compat
    from dora_sam2.loading import load_sam2

    model = load_sam2(str(model_dir), video=True)
    compat.check_model(model, video=True)  # the transformers we test with has all of them
    del model.memory_encoder
    with pytest.raises(compat.UnsupportedTransformers, match="has no memory_encoder .Sam2VideoModel."):
        compat.check_model(model, video=True)


def test_pyproject_bounds_transformers_to_the_range_the_start_up_check_names():
    import tomllib

    from dora_sam2 import compat
    from support.dataflows import ROOT

    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"transformers{compat.TRANSFORMERS_RANGE}" in requirements


# ---------------------------------------------------------------------------- the README's tables


def readme_section(heading: str) -> str:
    """The README's text under `heading`, to the next heading: a `#` line inside a code block is a comment."""
    from support.dataflows import ROOT

    kept, fenced = [], False
    for line in (ROOT / "README.md").read_text().split(f"\n{heading}\n", 1)[1].splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            break
        kept.append(line)
    return "\n".join(kept)


def readme_table(heading: str) -> dict[str, str]:
    """The README table under `heading`: each row's first cell (a `SETTING`) -> its second (the default)."""
    rows = {}
    for line in readme_section(heading).splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_readme_names_every_setting_and_limit_the_node_reads_with_its_true_default():
    """The Settings and Limits tables hold the variables of `variables()`, no more, no less, each limit in the
    Limits table; a default written as a literal (`3`, `auto`) is the default: setting it changes nothing."""
    settings, limits = readme_table("### Settings (env)"), readme_table("### Limits")
    assert set(settings) | set(limits) == set(variables())
    assert {name for name, path in variables().items() if path.startswith("limits.")} == set(limits)
    for key, default in {**settings, **limits}.items():
        literal = default.split(" ")[0]
        if literal.startswith("`") and literal.endswith("`"):
            assert Settings.from_env({key: literal.strip("`")}) == Settings.from_env({}), key


def test_the_readme_settings_table_states_the_range_of_each_setting_the_code_bounds_on_both_sides():
    """A setting with a maximum (a confidence, an IoU: values past 1 mean nothing) says its range in its
    Settings row as `low` to `high`, and the code takes both ends and refuses a step past either: a bound
    moved in the code or in the README alone fails, as does a maximum added without its range in the row."""
    import re

    def refusal(name: str, value: str) -> str | None:
        try:
            Settings.from_env({name: value})
        except ConfigError as error:
            return str(error)
        return None

    stated = {}
    for line in readme_section("### Settings (env)").splitlines():
        row, bounds = re.match(r"\| `([A-Z_]+)` \|", line), re.search(r"`(-?[0-9.]+)` to `(-?[0-9.]+)`", line)
        if row and bounds:
            stated[row[1]] = bounds.groups()
    own = {name: path for name, path in variables().items() if not path.startswith("limits.")}
    bounded = {name for name in own if "above its maximum" in (refusal(name, "1000000000") or "")}
    assert {"MIN_CONFIDENCE", "MATCH_IOU"} <= bounded
    assert set(stated) == bounded
    for name, (low, high) in stated.items():
        kind = type(getattr(Settings(), own[name]))
        step = 1 if kind is int else 0.001
        for end in (low, high):
            assert getattr(Settings.from_env({name: end}), own[name]) == kind(end), (name, end)
        assert "above its maximum" in (refusal(name, str(kind(high) + step)) or ""), name
        assert refusal(name, str(kind(low) - step)) is not None, name


def test_the_readme_limits_table_names_every_fixed_limit_with_its_value():
    """Each bound of `FixedLimits` is a row of the README's Limits table marked fixed, with the code's value,
    and each such row is one of them: a bound added without its row, or a row left for one gone, fails."""
    import re

    from dora_sam2.settings import FixedLimits

    fixed = {name: value for name, value in vars(FixedLimits).items() if name.isupper()}
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \(fixed\) \| `([0-9.]+)`", readme_section("### Limits"), re.M))
    assert sorted(rows) == sorted(fixed), "FixedLimits and the README's fixed rows differ"
    for name, literal in rows.items():
        assert type(fixed[name])(literal) == fixed[name], name


# ---------------------------------------------------------------------------- the README's command lines

# Where the README describes each console script that takes flags. A script that takes flags later and has
# no section here fails the test below, as does a flag its section does not name.
COMMAND_SECTIONS = {
    "dora-sam2-random-model": "### Without weights (offline machines, CI)",
    "dora-sam2-world": "## A synthetic world with ground truth (`dora-sam2-world`)",
    "dora-sam2-train": "## Train or fine-tune (`dora-sam2-train`)",
}


class ParserBuilt(Exception):
    """Raised where main would parse its arguments: main stops there, having run nothing but the parser."""


def command_parser(module, monkeypatch):
    """The parser `module.main` parses with: its `_parser()` where main builds it so, else the one main
    builds itself, caught at its first parse (nothing after it runs: no model built, no file written)."""
    import argparse

    if hasattr(module, "_parser"):
        return module._parser()

    def stop(parser, *args, **kwargs):
        raise ParserBuilt(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(ParserBuilt) as built:
        module.main([])
    return built.value.args[0]


def imports_argparse(module: str) -> bool:
    """Whether `module`'s source imports argparse, read without importing it (a node's module is not run)."""
    import importlib.util

    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    return any(isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names)
               or isinstance(node, ast.ImportFrom) and node.module == "argparse" for node in ast.walk(tree))


def test_the_readme_names_every_flag_of_every_console_script_where_it_describes_that_command(monkeypatch):
    """Each flag of each console script's parser is named in the README's section on that command, so a
    flag added without its words fails. The scripts that take no flags (the dataflow nodes) import no
    argparse, and are never called here: calling one would start a node."""
    import re
    import tomllib

    from support.dataflows import ROOT

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {name: target.split(":")[0] for name, target in scripts.items()}
    with_flags = {name for name, module in modules.items() if imports_argparse(module)}
    assert with_flags == set(COMMAND_SECTIONS), "a console script's flags have no README section named here"
    missing = []
    for name in sorted(with_flags):
        section = readme_section(COMMAND_SECTIONS[name])
        for action in command_parser(importlib.import_module(modules[name]), monkeypatch)._actions:
            for flag in action.option_strings if action.dest != "help" else ():
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section):
                    missing.append(f"{name} {flag}")
    assert not missing, f"flags the README does not name where it describes their command: {missing}"
