"""DTYPE=auto's measurement kept for later starts (choices.py): real node starts in real dataflows, their
choices file in a cache directory of the test's own (XDG_CACHE_HOME), and the file's bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dora_sam2.choices import ChoicesFile, choices_path
from dora_sam2.devices import cpu_has_fast_bf16
from dora_sam2.settings import FixedLimits

from support.dataflows import assert_no_traceback, camera, flow, run_dataflow, sam2

native_bf16 = pytest.mark.skipif(
    not cpu_has_fast_bf16(), reason="DTYPE=auto measures only on a CPU with native bf16 (AMX or AVX512-BF16) and "
    "this one has neither: it runs fp32 without measuring, so there is no choice to keep")

MEASURED = "DTYPE=auto: one encode takes"  # the line of a start that measured
KEPT_FROM = "as measured on this machine"  # the line of a start that read an earlier measurement


def start(directory: Path, model: Path, cache: Path, **env) -> list[str]:
    """The node started as a user starts it (DTYPE=auto, its warm-up on) in a dataflow of one frame: its lines."""
    directory.mkdir(parents=True)
    node_env = {"WARMUP": "1", "DTYPE": "auto", "DEVICE": "cpu", "XDG_CACHE_HOME": str(cache), **env}
    run = run_dataflow(directory, flow(camera(1), sam2(str(model), {"image": "camera/image"}, env=node_env,
                                                       stats=None)), timeout=600)
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    return run.node_log("sam2")


def lines(log: list[str], text: str) -> list[str]:
    return [line for line in log if text in line]


def entries(cache: Path) -> list[dict]:
    return json.loads((cache / "dora-sam2" / "choices.json").read_text())["entries"]


@native_bf16
def test_the_first_start_measures_and_saves_the_choice_and_the_next_reads_it(tmp_path, micro_model_dir):
    cache = tmp_path / "cache"
    saved = cache / "dora-sam2" / "choices.json"
    first = start(tmp_path / "first", micro_model_dir, cache)
    [measured] = lines(first, MEASURED)
    assert "measured now (none kept for this machine, model, input size and versions)" in measured
    assert f"the choice saved in {saved} for later starts" in measured
    [entry] = entries(cache)
    dtype = entry["choice"]["dtype"]
    assert f"here: {dtype} kept" in measured
    assert entry["key"]["model"]["directory"] == str(micro_model_dir.resolve())
    assert entry["key"]["image_size"] == 256  # the micro model's own input
    assert lines(first, "warm-up: decode (the measuring's encodes were its first encode)")

    second = start(tmp_path / "second", micro_model_dir, cache)
    assert not lines(second, MEASURED)
    [kept] = lines(second, "DTYPE=auto")
    assert f"DTYPE=auto: {dtype}, {KEPT_FROM} at {entry['measured']}" in kept
    assert f"read from {saved}; REMEASURE=1 measures again" in kept
    assert lines(second, "warm-up: first encode + decode")
    assert entries(cache) == [entry]  # nothing measured, nothing rewritten


@native_bf16
def test_the_node_runs_in_the_dtype_the_file_keeps(tmp_path, micro_model_dir):
    """A kept choice is what the node runs, not what it would have measured: the file edited to the other
    dtype, the node says it runs that one."""
    cache = tmp_path / "cache"
    start(tmp_path / "first", micro_model_dir, cache)
    content = json.loads((cache / "dora-sam2" / "choices.json").read_text())
    other = {"float32": "bfloat16", "bfloat16": "float32"}[content["entries"][0]["choice"]["dtype"]]
    content["entries"][0]["choice"]["dtype"] = other
    (cache / "dora-sam2" / "choices.json").write_text(json.dumps(content))
    [kept] = lines(start(tmp_path / "second", micro_model_dir, cache), "DTYPE=auto")
    assert f"DTYPE=auto: {other}, {KEPT_FROM}" in kept


@native_bf16
@pytest.mark.parametrize("change", ["new weights", "IMAGE_SIZE", "REMEASURE=1"])
def test_a_changed_model_or_input_size_or_remeasure_measures_again(tmp_path, micro_model_dir, change):
    from dora_sam2.random_model import make_random_model

    model, cache = tmp_path / "model", tmp_path / "cache"
    shutil.copytree(micro_model_dir, model)
    start(tmp_path / "first", model, cache)
    [before] = entries(cache)
    env = {}
    if change == "new weights":  # the same files, written again: a fine-tuned model saved over the old one
        make_random_model(model, size="micro", seed=1)
    elif change == "IMAGE_SIZE":
        env = {"IMAGE_SIZE": "512"}
    else:
        env = {"REMEASURE": "1"}
    [measured] = lines(start(tmp_path / "again", model, cache, **env), "DTYPE=auto")
    assert MEASURED in measured
    after = entries(cache)
    if change == "REMEASURE=1":
        assert "measured now (REMEASURE=1)" in measured
        assert [e["key"] for e in after] == [before["key"]]  # the measurement replaced, not added
    else:
        assert "measured now (none kept" in measured
        assert after[0] == before and len(after) == 2 and after[1]["key"] != before["key"]


@native_bf16
@pytest.mark.parametrize("damage", ["cut short", "not ours", "over its bound", "a directory", "no directory",
                                    "cannot be written"])
def test_a_choices_file_that_cannot_be_used_is_one_line_and_the_node_measures(tmp_path, micro_model_dir, damage):
    cache = tmp_path / "cache"
    path = cache / "dora-sam2" / "choices.json"
    path.parent.mkdir(parents=True)
    if damage == "cut short":
        path.write_text('{"format": 1, "entries": [{"key": {"choice": "dty')
    elif damage == "not ours":
        path.write_text('{"format": 1, "entries": [["float32", 1.0]]}')
    elif damage == "over its bound":
        path.write_text('{"format": 1, "entries": []}' + " " * FixedLimits.CHOICES_FILE_BYTES)
    elif damage == "a directory":  # neither read nor written
        path.mkdir()
    elif damage == "no directory":  # a file where its directory should be: neither read nor written
        path.parent.rmdir()
        path.parent.write_text("")
    else:  # read (there is none yet) but not written: its lock cannot be taken (root writes a read-only file)
        path.with_name("choices.json.lock").mkdir()
    log = start(tmp_path / "start", micro_model_dir, cache)
    [said] = lines(log, "WARNING")  # one line, naming the file
    assert "Traceback" not in "\n".join(log), log
    [measured] = lines(log, MEASURED)
    if damage == "cannot be written":
        assert said.startswith(f"WARNING dora-sam2: could not keep the measured choice in {path} (IsADirectoryError")
        assert said.endswith("the next start measures again; point XDG_CACHE_HOME at a writable directory to keep it")
    else:
        assert said.startswith(f"WARNING dora-sam2: could not read the measured choices kept in {path} (")
        assert said.endswith("measuring as if none were kept; the file is replaced if it can be written")
    if damage in ("cut short", "not ours", "over its bound"):  # replaced by what was measured
        assert len(entries(cache)) == 1 and "the choice saved in" in measured
    else:
        assert "saved" not in measured


def test_the_file_keeps_the_newest_choices_up_to_its_bound(tmp_path):
    choices = ChoicesFile(tmp_path / "choices.json")
    for index in range(FixedLimits.CHOICES_KEPT + 1):
        assert choices.keep_dtype({"model": f"m{index}"}, "float32", {"float32": 1.0, "bfloat16": 2.0})
    kept = [entry["key"]["model"] for entry in json.loads((tmp_path / "choices.json").read_text())["entries"]]
    assert kept == [f"m{index}" for index in range(1, FixedLimits.CHOICES_KEPT + 1)]
    assert choices.find_dtype({"model": "m0"}) is None
    assert choices.find_dtype({"model": "m64"}).value == "float32"
    assert (tmp_path / "choices.json").stat().st_size < FixedLimits.CHOICES_FILE_BYTES / 10


def test_a_choice_measured_again_replaces_the_one_kept(tmp_path):
    choices = ChoicesFile(tmp_path / "choices.json")
    choices.keep_dtype({"model": "m"}, "float32", {"float32": 1.0, "bfloat16": 2.0})
    choices.keep_dtype({"model": "m"}, "bfloat16", {"float32": 2.0, "bfloat16": 1.0})
    assert len(json.loads((tmp_path / "choices.json").read_text())["entries"]) == 1
    assert choices.find_dtype({"model": "m"}).value == "bfloat16"


def test_the_file_lives_where_the_user_s_cache_does(tmp_path):
    """As huggingface_hub places its own: XDG_CACHE_HOME, else ~/.cache (also when it is set empty)."""
    assert choices_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "dora-sam2" / "choices.json"
    home = Path.home()
    assert choices_path({}) == home / ".cache" / "dora-sam2" / "choices.json"
    assert choices_path({"XDG_CACHE_HOME": ""}) == home / ".cache" / "dora-sam2" / "choices.json"
    assert choices_path({"XDG_CACHE_HOME": "~/elsewhere"}) == home / "elsewhere" / "dora-sam2" / "choices.json"


def test_after_measuring_the_warm_up_encodes_nothing_more(micro_model_dir):
    """One encode serves the measuring and the warm-up: the kept dtype's last measuring encode is the
    warm-up's, which only decodes; a warm-up with no measuring before it encodes once."""
    from dora_sam2.model import Sam2Backend

    backend = Sam2Backend.load(str(micro_model_dir), dtype="float32")
    encodes = []
    backend.model.vision_encoder.register_forward_hook(lambda *_: encodes.append(backend.dtype))
    backend.warmup()
    assert len(encodes) == 1
    backend.choose_dtype_by_measuring(repeats=1)
    measuring = len(encodes)
    assert measuring == 1 + 4  # an untimed and a timed encode in each of fp32 and bf16
    backend.warmup()
    assert len(encodes) == measuring
    backend.warmup()  # the measuring's embedding served once
    assert len(encodes) == measuring + 1 and encodes[-1] == backend.dtype


# ---------------------------------------------------------------------------- memory attention's way (track mode)

TRACK = {"MODE": "track", "DTYPE": "float32"}  # float32: measured on any CPU, and no dtype to measure first


def entries_of(cache: Path, choice: str) -> list[dict]:
    return [entry for entry in entries(cache) if entry["key"]["choice"] == choice]


def test_a_track_start_measures_memory_attention_keeps_the_fastest_and_the_next_reads_it(tmp_path, micro_model_dir):
    """The key names the choice and the dtype it was measured in, beside the machine, model and versions."""
    from dora_sam2.memory_attention import ATTENTION_PATHS

    cache = tmp_path / "cache"
    [measured] = lines(start(tmp_path / "first", micro_model_dir, cache, **TRACK), "memory attention:")
    assert "one layer in float32 takes fused " in measured
    assert "measured now (none kept for this machine, model, input size and versions)" in measured
    [entry] = entries_of(cache, "attention")
    assert entry["key"]["choice"] == "attention" and entry["key"]["dtype"] == "float32"
    assert {"cpu", "cores", "threads", "model", "image_size", "versions"} <= set(entry["key"])
    seconds = entry["choice"]["seconds"]
    assert list(seconds) == [str(path) for path in ATTENTION_PATHS]
    kept = entry["choice"]["attention"]
    assert kept == min(seconds, key=seconds.get) and f"here: {kept} kept; measured now" in measured

    [read] = lines(start(tmp_path / "second", micro_model_dir, cache, **TRACK), "memory attention:")
    assert f"memory attention: {kept}, {KEPT_FROM} at {entry['measured']} (one layer in float32: " in read
    assert entries_of(cache, "attention") == [entry]


@pytest.mark.parametrize("change", ["the kept path", "the transformers version"])
def test_the_node_runs_the_kept_attention_path_unless_it_was_kept_for_other_versions(tmp_path, micro_model_dir,
                                                                                      change):
    """The file edited: to another path, the node says it runs that one; to a key of another transformers
    version (what an upgrade leaves behind), the node measures again and keeps both."""
    cache = tmp_path / "cache"
    start(tmp_path / "first", micro_model_dir, cache, **TRACK)
    content = json.loads((cache / "dora-sam2" / "choices.json").read_text())
    [entry] = [e for e in content["entries"] if e["key"]["choice"] == "attention"]
    other = "blocks of 128" if entry["choice"]["attention"] == "fused" else "fused"
    entry["choice"]["attention"] = other
    if change == "the transformers version":
        entry["key"]["versions"]["transformers"] = "4.0.0"
    (cache / "dora-sam2" / "choices.json").write_text(json.dumps(content))
    [said] = lines(start(tmp_path / "second", micro_model_dir, cache, **TRACK), "memory attention:")
    if change == "the kept path":
        assert said.startswith(f"INFO dora-sam2: memory attention: {other}, {KEPT_FROM}"), said
    else:
        assert "measured now (none kept" in said
        assert [e["key"]["versions"]["transformers"] for e in entries_of(cache, "attention")][0] == "4.0.0"
        assert len(entries_of(cache, "attention")) == 2


@native_bf16
def test_segment_mode_measures_no_attention_and_dtype_auto_keeps_both_choices_apart(tmp_path, micro_model_dir):
    """Segment mode reads no memory; track mode with DTYPE=auto keeps its dtype and, in it, its attention path."""
    cache = tmp_path / "cache"
    assert not lines(start(tmp_path / "segment", micro_model_dir, cache), "memory attention:")
    assert [e["key"]["choice"] for e in entries(cache)] == ["dtype"]
    start(tmp_path / "track", micro_model_dir, cache, MODE="track")
    [dtype, attention, group] = entries(cache)
    assert [e["key"]["choice"] for e in (dtype, attention, group)] == ["dtype", "attention", "memory group"]
    assert attention["key"]["dtype"] == dtype["choice"]["dtype"]


ISA_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}  # what a CPU without AVX-512 runs


@native_bf16
def test_a_start_under_isa_caps_offers_no_emulated_bf16_and_reads_no_choice_made_without_them(tmp_path,
                                                                                              micro_model_dir):
    """Capped to AVX2, oneDNN emulates bf16 hundreds of times slower while /proc/cpuinfo still lists
    AVX512-BF16: DTYPE=auto takes fp32 without timing bf16, and an attention path measured without the caps
    is not what the capped kernels would choose, so it is measured again and kept apart."""
    cache = tmp_path / "cache"
    start(tmp_path / "free", micro_model_dir, cache, **TRACK)
    capped = start(tmp_path / "capped", micro_model_dir, cache, MODE="track", **ISA_CAPS)
    assert not lines(capped, MEASURED)
    assert lines(capped, "warm-up: first encode + decode")
    [said] = lines(capped, "memory attention:")
    assert "one layer in float32 takes" in said and "measured now (none kept" in said
    free, kept_capped = entries_of(cache, "attention")
    assert "isa_caps" not in free["key"] and kept_capped["key"]["isa_caps"] == ISA_CAPS
    assert kept_capped["key"]["cpu_capability"] == "AVX2" != free["key"]["cpu_capability"]


def test_a_track_start_measures_the_memory_encoder_s_batch_keeps_the_cheapest_and_the_next_reads_it(
        tmp_path, micro_model_dir):
    """How many objects' memories to encode at once: timed per object for 1, 2, 4 and 8, the cheapest kept
    under a key that names the dtype, and read by the next start."""
    cache = tmp_path / "cache"
    [measured] = lines(start(tmp_path / "first", micro_model_dir, cache, **TRACK), "memory encoder batch:")
    assert "one object's memory in float32 takes 1 at once " in measured and "8 at once " in measured
    assert "measured now (none kept" in measured
    [entry] = entries_of(cache, "memory group")
    assert entry["key"]["dtype"] == "float32"
    seconds = entry["choice"]["seconds"]
    assert list(seconds) == ["1 at once", "2 at once", "4 at once", "8 at once"]
    kept = entry["choice"]["memory_group"]
    assert f"{kept} at once" == min(seconds, key=seconds.get) and f"here: {kept} kept; measured now" in measured

    [read] = lines(start(tmp_path / "second", micro_model_dir, cache, **TRACK), "memory encoder batch:")
    assert f"memory encoder batch: {kept}, {KEPT_FROM} at {entry['measured']}" in read
    assert entries_of(cache, "memory group") == [entry]
