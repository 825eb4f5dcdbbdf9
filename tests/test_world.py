"""The synthetic world: seeded clips whose ground truth is exact (dora_sam2.world, `dora-sam2-world`).

Expected values come from what is asked for (a disc of radius 20, an occlusion of half a second) or from
the pixels themselves (a solid red object's mask is where the image is red), never from the renderer's
own bookkeeping."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dora_sam2.world import (SCENARIOS, Format, Look, Scene, Texture, Thing, crossing, exit_and_return, frames,
                             from_json, occlusion, random_scene, to_json)
from dora_sam2.world.looks import outline
from dora_sam2.world.writer import WorldWriter

SMALL = Format(160, 120, fps=30, frames=60)
RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 40), (20, 40, 230), (90, 90, 90)
WORLD = [str(Path(sys.executable).parent / "dora-sam2-world")]


def solid(colour) -> Texture:
    return Texture("solid", (colour,))


def still(fmt: Format, x: float, y: float, radius: float, angle: float = 0.0) -> np.ndarray:
    return np.tile([x, y, radius, angle], (fmt.frames, 1))


def states(scene: Scene, track_id: int) -> str:
    """The object's state on each frame: v seen, h wholly hidden in the frame, o out of the frame."""
    return "".join("v" if o.area else "h" if o.silhouette else "o"
                   for frame in frames(scene) for o in frame.objects if o.track_id == track_id)


def runs(text: str) -> list[tuple[str, int]]:
    return [(state, len(list(group))) for state, group in itertools.groupby(text)]


def test_the_same_seed_draws_the_same_clip_and_another_seed_another():
    def clip(seed):
        return [(f.rgb, f.ids, [(o.track_id, o.label, o.mask, o.silhouette) for o in f.objects])
                for f in frames(random_scene(seed, Format(96, 72, fps=30, frames=12)))]

    first, again, other = clip((4, 2)), clip((4, 2)), clip((4, 3))
    for (rgb, ids, objects), (rgb2, ids2, objects2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(rgb, rgb2)
        np.testing.assert_array_equal(ids, ids2)
        assert len(objects) == len(objects2)
        for (track, label, mask, silhouette), (track2, label2, mask2, silhouette2) in zip(objects, objects2):
            assert (track, label, silhouette) == (track2, label2, silhouette2)
            np.testing.assert_array_equal(mask, mask2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_a_scene_written_as_json_and_read_back_draws_the_same_frames():
    scene = crossing(9, Format(96, 72, fps=30, frames=8))
    back = from_json(to_json(scene))
    assert to_json(back) == to_json(scene)
    for drawn, redrawn in zip(frames(scene), frames(back), strict=True):
        np.testing.assert_array_equal(drawn.rgb, redrawn.rgb)
        np.testing.assert_array_equal(drawn.ids, redrawn.ids)


def test_a_mask_is_exactly_the_pixels_its_object_shows():
    """Solid colours, no light change or noise: a red ring with a grey hole, a green box over part of it and
    a blue occluder over part of both. Each mask must be exactly where the image has its colour."""
    fmt = Format(120, 90, fps=10, frames=3)
    rng = np.random.default_rng(0)
    ring = Thing(Look("ring", outline("ring", rng), solid(RED)), still(fmt, 50.3, 45.6, 30, 10), 1, depth=0)
    box = Thing(Look("box", outline("box", rng), solid(GREEN)), still(fmt, 78.2, 40.1, 22, 25), 2, depth=1)
    wall = Thing(Look("occluder", outline("box", rng), solid(BLUE)), still(fmt, 40.7, 80.0, 25, 0))
    scene = Scene("exact", "test", fmt, solid(GREY), (ring, box), (wall,))
    for frame in frames(scene):
        colours = {colour: (frame.rgb == colour).all(axis=-1) for colour in (RED, GREEN, BLUE, GREY)}
        assert sum(m.sum() for m in colours.values()) == fmt.width * fmt.height  # every pixel one of them
        red, green = frame.objects
        np.testing.assert_array_equal(red.mask, colours[RED])
        np.testing.assert_array_equal(green.mask, colours[GREEN])
        assert colours[BLUE].any() and (red.mask & green.mask).sum() == 0
        assert colours[GREY][45, 50]  # the ring's hole shows the background, and is not the ring's
        assert 0 < red.visibility < 1 and 0 < green.visibility <= 1


def test_a_disc_has_the_area_and_box_of_its_radius_and_its_silhouette_counts_only_the_frame():
    fmt = Format(100, 80, fps=10, frames=2)
    disc = Look("disc", outline("disc", np.random.default_rng(0)), solid(RED))
    inside = Thing(disc, still(fmt, 40.3, 35.6, 20), 1)
    cut = Thing(disc, still(fmt, 95.0, 60.0, 15), 2)  # a third of it past the right edge
    [frame, _] = frames(Scene("discs", "test", fmt, solid(GREY), (inside, cut)))
    whole, edge = frame.objects
    assert whole.area == pytest.approx(np.pi * 20**2, rel=0.01)
    rows, cols = np.nonzero(whole.mask)
    assert (cols.min(), rows.min()) in {(x, y) for x in (20, 21) for y in (15, 16)}
    assert (cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) in {(40, 40), (39, 40), (40, 39), (39, 39)}
    assert whole.silhouette.area == whole.area and whole.visibility == 1.0
    assert edge.silhouette.area == edge.area and 0.65 < edge.area / (np.pi * 15**2) < 0.75
    assert edge.silhouette.bbox[0] + edge.silhouette.bbox[2] == fmt.width


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_are_disjoint_and_each_is_where_the_id_buffer_holds_its_track_id(seed):
    scene = random_scene((seed, 0), Format(160, 120, fps=30, frames=20))
    for frame in frames(scene):
        stacked = np.stack([o.mask for o in frame.objects])
        assert stacked.sum(axis=0).max() <= 1
        for o in frame.objects:
            np.testing.assert_array_equal(o.mask, frame.ids == o.track_id)
        shown = np.isin(frame.ids, [o.track_id for o in frame.objects])
        np.testing.assert_array_equal(stacked.any(axis=0), shown)


@pytest.mark.parametrize("seed", [3, 4])
def test_an_occlusion_hides_the_object_wholly_for_about_as_long_as_asked_and_it_comes_back(seed):
    hidden = SMALL.frames_in(0.5)
    scene = occlusion(seed, SMALL, hidden_seconds=0.5)
    assert len(scene.occluders) == 1
    states_of_1 = runs(states(scene, 1))
    assert [state for state, _ in states_of_1] == ["v", "h", "v"], states_of_1  # seen, hidden in the frame, seen
    assert hidden <= states_of_1[1][1] <= hidden + SMALL.frames_in(0.25), states_of_1


@pytest.mark.parametrize("seed, same_edge", [(5, True), (6, False)])
def test_an_object_leaves_the_frame_and_comes_back_with_its_track_id(seed, same_edge):
    outside = SMALL.frames_in(0.5)
    scene = exit_and_return(seed, SMALL, outside_seconds=0.5, same_edge=same_edge)
    states_of_1 = runs(states(scene, 1))
    assert [state for state, _ in states_of_1] == ["v", "o", "v"], states_of_1
    assert outside <= states_of_1[1][1] <= outside + SMALL.frames_in(0.25), states_of_1


def test_twins_cross_look_alike_and_change_sides():
    scene = crossing(11, SMALL, nuisance=False)
    first, second = scene.objects
    assert first.look == second.look  # same shape, proportions and texture
    clip = list(frames(scene))

    def centre_x(frame, index):
        return np.nonzero(frame.objects[index].mask)[1].mean()

    assert centre_x(clip[0], 0) < centre_x(clip[0], 1) and centre_x(clip[-1], 0) > centre_x(clip[-1], 1)
    assert min(o.visibility for frame in clip for o in frame.objects) < 0.5  # one passes over the other
    areas = [(frame.objects[0].area, frame.objects[1].area) for frame in clip
             if min(o.visibility for o in frame.objects) == 1]
    assert areas and all(a == pytest.approx(b, rel=0.1) for a, b in areas)


def test_a_random_world_holds_what_a_tracker_must_survive():
    """Over a few seeds: up to 10 objects, twins, occlusions of at most 2 s, exits, crossings, light and
    shake; and every object of every scene is seen on some frame."""
    fmt = Format(64, 48, fps=30, frames=90)
    scenes = [random_scene((1, i), fmt) for i in range(40)]
    kinds = {event.kind for scene in scenes for event in scene.events}
    assert {"twins", "crossing", "occlusion", "exit", "jump", "light"} <= kinds
    assert max(len(s.objects) for s in scenes) <= 10 and min(len(s.objects) for s in scenes) >= 1
    assert all(e.frames <= fmt.frames_in(2.0) for s in scenes for e in s.events if e.kind == "occlusion")
    assert any(np.abs(s.camera).max() > 0 for s in scenes) and any(s.occluders for s in scenes)
    assert len({s.background.kind for s in scenes}) >= 3
    assert len({o.look.shape for s in scenes for o in s.objects}) >= 6


def test_a_random_scene_s_occlusions_and_exits_are_what_its_frames_show():
    """A scene's events say where to look (the benchmark counts recoveries from them): an object is wholly
    hidden, in the frame, on every frame of its occlusion, and wholly out of the frame on every frame of
    its exit."""
    fmt, seen = Format(64, 48, fps=30, frames=60), set()
    for i in range(16):
        scene = random_scene((8, i), fmt)
        events = [e for e in scene.events if e.kind in ("occlusion", "exit")]
        clip = list(frames(scene)) if events else []
        for event in events:
            seen.add(event.kind)
            for frame in clip[event.start:event.start + event.frames]:
                state = frame.objects[event.track_ids[0] - 1]
                assert state.area == 0, (scene.name, event, frame.index)
                assert (state.silhouette is None) == (event.kind == "exit"), (scene.name, event, frame.index)
    assert seen == {"occlusion", "exit"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), scenario=st.sampled_from(sorted(SCENARIOS)), frames_=st.integers(1, 40),
       width=st.integers(16, 80), height=st.integers(16, 60), fps=st.sampled_from([5.0, 12.5, 30.0]))
def test_any_seed_and_format_draws_a_clip_or_says_why_not(seed, scenario, frames_, width, height, fps):
    """Whatever the seed and however small or short the clip: a scene whose frames all draw, with disjoint
    masks within their silhouettes and events inside the clip; or, for a scenario the clip cannot hold,
    a ValueError that says how many frames it needs."""
    fmt = Format(width, height, fps, frames_)
    try:
        scene = SCENARIOS[scenario](seed, fmt)
    except ValueError as error:
        assert scenario != "random" and "frames" in str(error)
        return
    assert all(0 <= e.start and e.start + e.frames <= fmt.frames for e in scene.events)
    count = 0
    for frame in frames(scene):
        count += 1
        assert frame.rgb.shape == (height, width, 3)
        assert sum(o.mask.astype(int) for o in frame.objects).max(initial=0) <= 1
        assert all(o.area <= (o.silhouette.area if o.silhouette else 0) for o in frame.objects)
    assert count == frames_


@pytest.mark.skipif(not Path("../shared/data/cups.mp4").exists(), reason="../shared/data/cups.mp4 is not here")
def test_footage_backgrounds_come_from_the_real_clip():
    from dora_sam2.world import Footage

    fmt = Format(64, 48, fps=10, frames=2)
    background = Texture("footage", (GREY, RED), at=0.5, crop=(0.25, 0.25, 0.5, 0.5))
    scene = Scene("footage", "test", fmt, background, ())
    footage = Footage("../shared/data/cups.mp4")
    with_clip, again = (next(frames(scene, footage)).rgb for _ in range(2))
    without = next(frames(scene)).rgb
    np.testing.assert_array_equal(with_clip, again)
    assert np.abs(with_clip.astype(int) - without).mean() > 10
    capture = cv2.VideoCapture("../shared/data/cups.mp4")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 150)
    ok, bgr = capture.read()
    h, w = bgr.shape[:2]
    crop = cv2.resize(bgr[h // 4:3 * h // 4, w // 4:3 * w // 4], (64, 48), interpolation=cv2.INTER_AREA)[..., ::-1]
    assert np.abs(with_clip.astype(int) - crop).mean() < 2


def test_the_dataset_loads_with_pycocotools_and_every_mask_decodes_to_its_area(tmp_path):
    coco = pytest.importorskip("pycocotools.coco")
    writer = WorldWriter(tmp_path, video=False)
    scenes = [occlusion(1, Format(96, 72, fps=30, frames=24), hidden_seconds=0.2, others=2),
              random_scene((2, 5), Format(96, 72, fps=30, frames=10))]
    for scene in scenes:
        writer.add(scene)
    data = coco.COCO(str(writer.finish("test")))
    assert len(data.imgs) == 34
    assert len(data.anns) == sum(len(s.objects) * s.format.frames for s in scenes)
    for image in data.imgs.values():
        assert {"file_name", "width", "height", "camera", "timestamp", "frame"} <= image.keys()
        assert cv2.imread(str(tmp_path / image["file_name"])).shape == (72, 96, 3)
    hidden = 0
    for annotation in data.anns.values():
        mask = data.annToMask(annotation)
        assert mask.sum() == annotation["area"]
        rows, cols = np.nonzero(mask)
        box = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()] \
            if len(rows) else [0] * 4
        assert annotation["bbox"] == pytest.approx(box)
        assert data.cats[annotation["category_id"]]["name"] in {o.look.shape for s in scenes for o in s.objects}
        assert annotation["area"] <= annotation["amodal_area"]
        if annotation["amodal_area"]:
            assert annotation["visibility"] == pytest.approx(annotation["area"] / annotation["amodal_area"], abs=1e-4)
        if annotation["area"]:  # what is seen lies within its whole silhouette
            ax, ay, aw, ah = annotation["amodal_bbox"]
            assert ax <= box[0] and ay <= box[1] and box[0] + box[2] <= ax + aw and box[1] + box[3] <= ay + ah
        hidden += annotation["amodal_area"] > 0 and annotation["area"] == 0
    assert hidden >= 6  # 0.2 s behind the occluder, at 30 fps
    by_camera = {image["camera"] for image in data.imgs.values()}
    assert by_camera == {s.name for s in scenes}


def test_the_command_writes_the_clips_it_says(tmp_path):
    out = tmp_path / "world"
    run = subprocess.run(WORLD + [str(out), "--clips", "2", "--frames", "6", "--size", "96x64", "--seed", "5",
                                  "--footage", "none"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"2 clips, 12 frames written to {out / 'annotations.json'}" in run.stderr, run.stderr
    data = json.loads((out / "annotations.json").read_text())
    assert "--seed 5 --clips 2 --frames 6 --size 96x64" in data["info"]["description"]
    cameras = sorted({image["camera"] for image in data["images"]})
    assert cameras == ["random-5-0000", "random-5-0001"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{camera}_{n:06d}.png" for camera in cameras for n in range(6))
    for camera in cameras:
        video = cv2.VideoCapture(str(out / "videos" / f"{camera}.mp4"))
        assert (video.get(cv2.CAP_PROP_FRAME_COUNT), video.get(3), video.get(4)) == (6, 96, 64)
        scene = from_json((out / "scenes" / f"{camera}.json").read_text())
        for frame in frames(scene):  # the scene file remakes the frames on disk, pixel for pixel
            on_disk = cv2.imread(str(out / "images" / f"{camera}_{frame.index:06d}.png"))[..., ::-1]
            np.testing.assert_array_equal(on_disk, frame.rgb)


@pytest.mark.parametrize("args, says", [
    (["--clips", "0"], "--clips 0: give 1 to"),
    (["--size", "big"], "--size 'big': give WIDTHxHEIGHT"),
    (["--size", "100000x100000"], "--size 100000x100000: give sides"),
    (["--footage", "no-such.mp4"], "cannot read footage no-such.mp4"),
    (["--scenario", "occlusion", "--frames", "20"], "an occlusion of 1.0 s needs at least 34 frames"),
])
def test_the_command_says_what_is_wrong_in_one_line(tmp_path, args, says):
    run = subprocess.run(WORLD + [str(tmp_path / "world"), "--frames", "6", "--size", "64x48"] + args,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and says in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "world").exists()  # nothing written
