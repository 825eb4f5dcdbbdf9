"""Every decoder, on what the neighbouring nodes really send and on what they should never send."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

import cv2
import numpy as np
import pyarrow as pa
import pytest

from dora_sam2 import codecs
from dora_sam2.domain import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, InputError, Masks
from dora_sam2.settings import Limits

RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
TS = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def yolo_struct(coords, labels=None, conf=True):
    fields = {"bbox": list(map(float, coords))}
    types = [("bbox", pa.list_(pa.float32()))]
    if conf:
        fields["conf"] = [0.5] * (len(coords) // 4)
        types.append(("conf", pa.list_(pa.float32())))
    if labels is not None:
        fields["labels"] = labels
        types.append(("labels", pa.list_(pa.string())))
    return pa.array([fields], type=pa.struct(types))


# ---------------------------------------------------------------------------- frames


@pytest.mark.parametrize("encoding,payload", [
    ("bgr8", BGR.ravel()),
    ("rgb8", BGR[..., ::-1].ravel()),
    ("BGR8", BGR.ravel()),  # case-insensitive, as some cameras write it
])
def test_raw_colour_frames_decode_to_rgb(encoding, payload):
    frame = codecs.decode_frame("image", pa.array(payload), {"encoding": encoding, "width": 64, "height": 48,
                                                              "timestamp": TS})
    np.testing.assert_array_equal(frame.rgb, BGR[..., ::-1])
    assert (frame.width, frame.height, frame.timestamp, frame.image_id) == (64, 48, TS, "image")


@pytest.mark.parametrize("encoding", ["gray8", "mono8"])
def test_grey_frames_become_three_equal_channels(encoding):
    grey = BGR[..., 0]
    frame = codecs.decode_frame("image", pa.array(grey.ravel()), {"encoding": encoding, "width": 64, "height": 48})
    for channel in range(3):
        np.testing.assert_array_equal(frame.rgb[..., channel], grey)


@pytest.mark.parametrize("encoding,ext", [("png", ".png"), ("bmp", ".bmp"), ("webp", ".webp"),
                                          ("jpeg", ".jpg"), ("jpg", ".jpg")])
def test_compressed_frames_decode_like_opencv(encoding, ext):
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # 101 = lossless webp
    data = cv2.imencode(ext, BGR, params)[1].ravel()
    frame = codecs.decode_frame("image", pa.array(data), {"encoding": encoding})
    expected = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frame.rgb, expected)
    if encoding in ("png", "bmp", "webp"):  # lossless: the exact pixels come back
        np.testing.assert_array_equal(frame.rgb, BGR[..., ::-1])


def test_frame_pixels_do_not_alias_the_arrow_buffer():
    """dora reuses its shared-memory buffers: a kept frame must own its pixels."""
    payload = pa.array(BGR[..., ::-1].ravel())
    frame = codecs.decode_frame("image", payload, {"encoding": "rgb8", "width": 64, "height": 48})
    assert not np.shares_memory(frame.rgb, payload.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("value,metadata,message", [
    (pa.array(np.zeros(10, np.uint8)), {"encoding": "bgr8", "width": 64, "height": 48}, "10 bytes do not make"),
    (pa.array(np.zeros(10, np.uint8)), {"encoding": "nv12", "width": 2, "height": 5}, "unknown image encoding"),
    (pa.array(np.zeros(12, np.uint8)), {"encoding": "bgr8", "height": 2}, "'width' is missing"),
    (pa.array(np.zeros(12, np.uint8)), {"encoding": "bgr8", "width": "two", "height": 2}, "not an integer"),
    (pa.array(np.zeros(12, np.uint8)), {"encoding": "bgr8", "width": -2, "height": -2}, "not a positive integer"),
    (pa.array(np.zeros(12, np.uint8)), {"encoding": "bgr8", "width": 2.5, "height": 2}, "not a positive integer"),
    (pa.array(np.zeros(12, np.float32)), {"encoding": "bgr8", "width": 2, "height": 2}, "got float"),
    (pa.array([1, None, 3], pa.uint8()), {"encoding": "gray8", "width": 3, "height": 1}, "nulls"),
    (pa.array(np.zeros(0, np.uint8)), {"encoding": "jpeg"}, "could not decode 0 bytes"),
])
def test_bad_frames_raise_one_clear_error(value, metadata, message):
    with pytest.raises(InputError, match=message) as error:
        codecs.decode_frame("image_left", value, metadata)
    assert str(error.value).startswith("input 'image_left': ")


def test_truncated_jpeg_is_rejected():
    data = cv2.imencode(".jpg", BGR)[1].ravel()
    with pytest.raises(InputError, match="truncated or corrupt"):
        codecs.decode_frame("image", pa.array(data[: len(data) // 3]), {"encoding": "jpeg"})


def jpeg_with_junk_before_its_end() -> np.ndarray:
    """A JPEG as sloppy webcams write them: 3 stray bytes before its end marker, which libjpeg reads past."""
    data = cv2.imencode(".jpg", BGR)[1].ravel()
    return np.concatenate([data[:-2], np.full(3, 0x55, np.uint8), data[-2:]])


def test_what_image_libraries_say_about_bad_frames_is_in_the_one_line_not_printed(capfd, caplog, monkeypatch):
    """libpng and libjpeg write their complaints straight to stderr (descriptor 2), one line a frame: a cut
    PNG's reason is in our error instead, a BMP's from OpenCV's own log by its message alone, and a JPEG they
    read past is used, said at most once per input every 10 s (the clock is the test's)."""
    from dora_sam2 import throttle

    monkeypatch.setattr(throttle.time, "monotonic", lambda: 1000.0)
    png, bmp = (cv2.imencode(ext, BGR)[1].ravel() for ext in (".png", ".bmp"))
    errors = []
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        for k in range(100):  # cut in their last kB: libpng says nothing of a PNG cut far sooner
            for data, encoding in ((png, "png"), (bmp, "bmp")):
                with pytest.raises(InputError) as error:
                    codecs.decode_frame("image", pa.array(data[:len(data) - 1000 + 9 * k]), {"encoding": encoding})
                errors.append(str(error.value))
        frames = [codecs.decode_frame("image", pa.array(jpeg_with_junk_before_its_end()), {"encoding": "jpeg"})
                  for _ in range(50)]
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == "", printed.err[:2000]
    assert errors[0] == f"input 'image': could not decode {len(png) - 1000} bytes as png (truncated or corrupt: " \
                        "libpng error: PNG input buffer is incomplete)"
    assert errors[1] == f"input 'image': could not decode {len(bmp) - 1000} bytes as bmp (truncated or corrupt: " \
                        "Unexpected end of input stream)"
    assert len(frames) == 50 and frames[0].rgb.shape == (48, 64, 3)
    [said] = [r.getMessage() for r in caplog.records]  # libjpeg counts the stray bytes its own way
    assert re.fullmatch(r"input 'image': the jpeg decoder said 'Corrupt JPEG data: \d+ extraneous bytes before "
                        r"marker 0xd9'; the frame is used as decoded", said), said


def test_another_threads_log_line_during_a_capture_goes_to_stderr_not_into_it(capfd):
    """Descriptor 2 is the process's: while a decode's words are taken, a line logged by another thread (the
    click server's, the viewer's) waits for the capture to end and is printed where it always is."""
    import sys
    import threading

    from dora_sam2.library_output import captured

    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        other = threading.Thread(target=lambda: logging.getLogger("test.other").warning("the other thread's line"))
        with captured() as said:
            other.start()
            other.join(0.5)  # it waits for the capture: joining it here would never end
            png = cv2.imencode(".png", BGR)[1].ravel()
            cv2.imdecode(png[:len(png) - 10], cv2.IMREAD_COLOR)
        other.join()
    finally:
        logging.getLogger().removeHandler(handler)
    assert said.first_line == "libpng error: PNG input buffer is incomplete"
    assert "the other thread's line" not in said.text
    assert "the other thread's line" in capfd.readouterr().err


# ---------------------------------------------------------------------------- boxes


def test_dora_yolo_struct_with_its_passed_through_image_metadata():
    value = yolo_struct([10, 20, 110, 220, 5, 6, 50, 60], ["cup", "person"])
    metadata = {"encoding": "bgr8", "width": 640, "height": 480, "format": "xyxy", "primitive": "boxes2d",
                "timestamp": TS}
    prompt = codecs.decode_boxes("bbox", value, metadata)
    np.testing.assert_array_equal(prompt.points, [[[10, 20], [110, 220]], [[5, 6], [50, 60]]])
    np.testing.assert_array_equal(prompt.point_labels, [[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]] * 2)
    assert prompt.class_names == ("cup", "person") and prompt.timestamp == TS and prompt.image_id is None


def test_xywh_is_centre_and_size_as_ultralytics_writes_it():
    prompt = codecs.decode_boxes("bbox", yolo_struct([100, 50, 40, 20]), {"format": "xywh"})
    np.testing.assert_allclose(prompt.points[0], [[80, 40], [120, 60]])


def test_box_format_falls_back_to_encoding_then_xyxy():
    flat = pa.array(np.array([100, 50, 40, 20], np.float32))
    as_xywh = codecs.decode_boxes("boxes2d", flat, {"encoding": "xywh"})
    np.testing.assert_allclose(as_xywh.points[0], [[80, 40], [120, 60]])
    # dora-yolo's `encoding` is the image's (bgr8): not a box format, so the default xyxy applies
    with pytest.raises(InputError, match="has no area"):  # 100,50 -> 40,20 is reversed in xyxy
        codecs.decode_boxes("bbox", flat, {"encoding": "bgr8"})


def test_flat_boxes_take_labels_and_image_id_from_metadata():
    flat = pa.array(np.array([0, 0, 10, 10, 5, 5, 20, 30], np.int32))
    prompt = codecs.decode_boxes("boxes2d", flat, {"labels": ["a", "b"], "image_id": "image_right"})
    assert prompt.class_names == ("a", "b") and prompt.image_id == "image_right" and prompt.num_objects == 2


def test_with_limits_the_most_confident_max_boxes_come_out_in_their_order_without_every_box():
    value = pa.array([{"bbox": [float(v) for i in range(5) for v in (i, i, i + 10, i + 10)],
                       "conf": [0.1, 0.9, 0.5, 0.7, 0.2], "labels": ["a", "b", "c", "d", "e"]}],
                     type=pa.struct([("bbox", pa.list_(pa.float32())), ("conf", pa.list_(pa.float32())),
                                     ("labels", pa.list_(pa.string()))]))
    kept = codecs.decode_boxes("bbox", value, {}, Limits(max_boxes=2))
    assert kept.class_names == ("b", "d") and kept.confidences.tolist() == pytest.approx([0.9, 0.7])
    np.testing.assert_array_equal(kept.points[:, 0], [[1, 1], [3, 3]])
    assert codecs.decode_boxes("bbox", value, {}).class_names == ("a", "b", "c", "d", "e")


def test_empty_detection_is_a_prompt_with_no_objects():
    prompt = codecs.decode_boxes("bbox", yolo_struct([], []), {"format": "xyxy"})
    assert prompt.num_objects == 0 and prompt.class_names == ()


@pytest.mark.parametrize("value,metadata,message", [
    (pa.array([1, 2, 3, 4, 5], pa.float32()), {}, "5 box coordinates is not a multiple of 4"),
    (pa.array([np.nan, 2, 3, 4], pa.float32()), {}, "NaN or infinity"),
    (pa.array([1, 2, np.inf, 4], pa.float64()), {}, "NaN or infinity"),
    (pa.array([30, 2, 3, 40], pa.float32()), {}, "box 0 .* has no area"),
    (pa.array([1, 2, 1, 40], pa.float32()), {}, "has no area"),
    (pa.array([1, 2, 3, 4], pa.float32()), {"format": "polygon"}, "unknown box format 'polygon'"),
    (pa.array([1, 2, 3, 4], pa.float32()), {"labels": ["a", "b"]}, "2 labels for 1 boxes"),
    (pa.array([1, 2, 3, 4], pa.float32()), {"labels": "cup"}, "list of strings"),
    (pa.array(["1", "2", "3", "4"]), {}, "should be numbers"),
    (pa.array([1, None, 3, 4], pa.float32()), {}, "contain nulls"),
    (pa.array([{"box": [1.0]}]), {}, "no field 'bbox'"),
    (pa.array([{"bbox": 1.0}]), {}, "should be a list"),
    (pa.concat_arrays([yolo_struct([1, 2, 3, 4]), yolo_struct([1, 2, 3, 4])]), {}, "length 1, got length 2"),
    (yolo_struct([1, 2, 3, 4], ["a", "b"]), {}, "2 labels for 1 boxes"),
])
def test_bad_boxes_raise_one_clear_error(value, metadata, message):
    with pytest.raises(InputError, match=message):
        codecs.decode_boxes("bbox", value, metadata)


# ---------------------------------------------------------------------------- points


def test_points_default_to_foreground():
    prompt = codecs.decode_points("points", pa.array([10.0, 20.0, 30.0, 40.0]), {})
    assert prompt.num_objects == 1
    np.testing.assert_array_equal(prompt.points, [[[10, 20], [30, 40]]])
    np.testing.assert_array_equal(prompt.point_labels, [[1, 1]])


def test_point_labels_from_metadata_keep_background_clicks():
    prompt = codecs.decode_points("points", pa.array([10, 20, 30, 40, 50, 60], pa.int64()),
                                  {"labels": [1, 0, 0], "object_id": 3, "timestamp": TS})
    np.testing.assert_array_equal(prompt.point_labels, [[1, 0, 0]])
    assert prompt.object_ids == (3,) and prompt.timestamp == TS


def test_points_struct_with_labels():
    value = pa.array([{"points": [1.0, 2.0, 3.0, 4.0], "labels": [0, 1]}])
    prompt = codecs.decode_points("points", value, {})
    np.testing.assert_array_equal(prompt.point_labels, [[0, 1]])


@pytest.mark.parametrize("value,metadata,message", [
    (pa.array([1.0, 2.0, 3.0]), {}, "expected x,y pairs, got 3 numbers"),
    (pa.array([], pa.float32()), {}, "expected x,y pairs, got 0 numbers"),
    (pa.array([1.0, 2.0]), {"labels": [1, 0]}, "2 point labels for 1 points"),
    (pa.array([1.0, 2.0]), {"labels": [2]}, "1 \\(foreground\\) or 0"),
    (pa.array([1.0, 2.0]), {"labels": ["fg"]}, "1 \\(foreground\\) or 0"),
    (pa.array([1.0, 2.0]), {"labels": [1.9]}, "1 \\(foreground\\) or 0"),  # not rounded to 1
    (pa.array([1.0, 2.0]), {"labels": [float("inf")]}, "1 \\(foreground\\) or 0"),
    (pa.array([1.0, 2.0]), {"labels": "1"}, "list of 1"),
    (pa.array([1.0, np.nan]), {}, "NaN"),
])
def test_bad_points_raise_one_clear_error(value, metadata, message):
    with pytest.raises(InputError, match=message):
        codecs.decode_points("points", value, metadata)


# ---------------------------------------------------------------------------- masks


def make_masks(n=2, h=3, w=4):
    masks = RNG.random((n, h, w)) > 0.5
    return Masks(masks, np.linspace(0.1, 0.9, n).astype(np.float32), tuple(f"obj{i}" for i in range(n)),
                 "image", TS, track_ids=tuple(range(7, 7 + n)))


@pytest.mark.parametrize("n", [0, 1, 3])
def test_mask_is_one_frame_sized_union_the_seed_consumer_reshapes(n):
    masks = make_masks(n=n)
    value, metadata = codecs.encode_mask(masks)
    assert value.type == pa.uint8() and len(value) == 3 * 4
    expected = np.zeros((3, 4), np.uint8)
    for mask in masks.masks:
        expected |= mask.astype(np.uint8)
    np.testing.assert_array_equal(value.to_numpy().reshape((3, 4)), expected)
    assert metadata["mask_layout"] == "union" and metadata["num_masks"] == n and len(metadata["labels"]) == n


def test_mask_stacked_on_request():
    masks = make_masks(n=3)
    value, metadata = codecs.encode_mask(masks, "stack")
    assert value.type == pa.uint8() and metadata["mask_layout"] == "stack"
    np.testing.assert_array_equal(value.to_numpy().reshape(3, 3, 4), masks.masks.astype(np.uint8))


def test_masks_output_round_trips():
    masks = make_masks(n=3)
    value, metadata = codecs.encode_masks(masks)
    assert value.type == pa.bool_() and "mask_layout" not in metadata
    np.testing.assert_array_equal(value.to_numpy(zero_copy_only=False).reshape(3, 3, 4), masks.masks)


def test_metadata_holds_python_types_only():
    masks = make_masks(n=2)
    metadata = codecs.masks_metadata(masks)
    boxes = []
    for mask in masks.masks:  # pixel edges: right and bottom exclusive
        rows, cols = np.nonzero(mask)
        boxes += [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert metadata == {
        "width": 4, "height": 3, "num_masks": 2, "labels": ["obj0", "obj1"],
        "scores": pytest.approx([0.1, 0.9]), "image_id": "image", "primitive": "masks",
        "timestamp": TS, "track_ids": [7, 8], "boxes": boxes, "visible": [1, 1],
    }
    for value in [*metadata.values(), *metadata["scores"], *metadata["track_ids"], *metadata["boxes"]]:
        assert type(value).__module__ in ("builtins", "datetime"), type(value)


def test_boxes_and_visible_agree_with_the_masks():
    """An empty mask has box 0, 0, 0, 0 and is never visible; one SAM 2 does not see is not visible."""
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 2:5, 3:7] = True
    masks[2, 0:1, 9:10] = True
    answer = Masks(masks, np.ones(3, np.float32), ("a", "b", "c"), "image", TS, visible=np.array([True, True, False]))
    metadata = codecs.masks_metadata(answer)
    assert metadata["boxes"] == [3, 2, 7, 5, 0, 0, 0, 0, 9, 0, 10, 1]
    assert metadata["visible"] == [1, 0, 0]


def test_boxes2d_output_is_dora_yolos_struct_with_track_ids():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 6:9, 1:4] = True
    answer = Masks(masks, np.array([0.5, 0.75], np.float32), ("cup", ""), "image", TS, track_ids=(4, 9))
    value, metadata = codecs.encode_boxes2d(answer)
    decoded = codecs.decode_boxes("boxes2d", value, metadata)  # what a detector consumer reads back
    np.testing.assert_array_equal(decoded.points.reshape(-1, 4), [[3, 2, 7, 5], [1, 6, 4, 9]])
    assert decoded.class_names == ("#4 cup", "#9") and decoded.confidences.tolist() == [0.5, 0.75]
    assert (metadata["format"], metadata["primitive"], metadata["timestamp"]) == ("xyxy", "boxes2d", TS)


def test_a_timestamp_without_timezone_is_read_as_utc():
    naive = TS.replace(tzinfo=None)
    frame = codecs.decode_frame("image", pa.array(BGR.ravel()), {"width": 64, "height": 48, "timestamp": naive})
    boxes = codecs.decode_boxes("bbox", pa.array([1.0, 2.0, 30.0, 40.0]), {"timestamp": naive})
    assert frame.timestamp == TS and boxes.timestamp == TS and frame.timestamp.tzinfo is not None


# ---------------------------------------------------------------------------- text (SAM 3's phrases)


@pytest.mark.parametrize("value, expected", [
    (pa.array(["cup"]), ("cup",)),
    (pa.array(["cup", "red bottle"]), ("cup", "red bottle")),
    (pa.array(["cup, red bottle ,, cup"]), ("cup", "red bottle")),  # comma-separated, blanks and repeats once
    (pa.array(["tasse à café".encode()], pa.binary()), ("tasse à café",)),
    (pa.array(np.frombuffer("verre".encode(), np.uint8)), ("verre",)),  # one phrase as its UTF-8 bytes
    (pa.array([], pa.string()), ()),  # empty: clears
    (pa.array(["  "]), ()),
])
def test_text_reads_a_string_a_list_or_comma_separated_phrases(value, expected):
    assert codecs.decode_text("text", value, {}).texts == expected


@pytest.mark.parametrize("value, metadata, message", [
    (pa.array([f"thing {i}" for i in range(10_000)]), {}, "10000 phrases, over MAX_PHRASES=16"),
    (pa.array([b"caf\xe9"], pa.binary()), {}, "not UTF-8 text (byte 3 is 0xe9)"),
    (pa.array(np.frombuffer(b"\xff\xfe", np.uint8)), {}, "not UTF-8 text"),
    (pa.array(["x" * 500]), {}, "500 characters long, over 200"),
    (pa.array(["cup\x00"]), {}, "control characters"),
    (pa.array(["cup", None]), {}, "nulls"),
    (pa.array([1.0, 2.0]), {}, "should be strings"),
    (pa.array(["cup"]), {"boxes": [1, 2, 3]}, "x1, y1, x2, y2 per box"),
    (pa.array(["cup"]), {"boxes": [50, 50, 10, 10]}, "no area"),
    (pa.array(["cup"]), {"boxes": [1, 2, 30, 40], "box_labels": [2]}, "box_labels"),
])
def test_bad_text_is_one_clear_error(value, metadata, message):
    with pytest.raises(InputError, match=re.escape(message)) as error:
        codecs.decode_text("text", value, metadata)
    assert str(error.value).startswith("input 'text': ") and "\n" not in str(error.value)


def test_text_exemplar_boxes_come_with_their_labels():
    phrases = codecs.decode_text("text", pa.array(["cup"]), {"boxes": [1, 2, 30, 40, 50, 60, 70, 80],
                                                             "box_labels": [1, 0]})
    np.testing.assert_array_equal(phrases.exemplars, [[1, 2, 30, 40], [50, 60, 70, 80]])
    np.testing.assert_array_equal(phrases.exemplar_labels, [1, 0])


def test_an_exemplar_box_past_float32s_range_is_refused_not_made_infinite():
    """3.4028236e38 is a finite float64 and an infinite float32, what SAM 3 would read (found by the fuzzing)."""
    with pytest.raises(InputError, match="'boxes' should be finite"):
        codecs.decode_text("text", pa.array(["cup"]), {"boxes": [0.0, 0.0, 3.4028235677973366e38, 1.0]})
