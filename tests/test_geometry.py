"""Coordinate maths between a camera frame and SAM2's 1024x1024 input, by hand-computed values."""

import numpy as np
import pytest

from dora_sam2.geometry import clip_points, to_model_frame, to_xyxy


def test_box_on_640x480_lands_at_scaled_corners_in_1024_frame():
    corners = np.array([[[64, 48], [320, 240]]], np.float32)  # a box on a 640x480 frame
    # x scales by 1024/640 = 1.6, y by 1024/480 = 2.1333: no padding, the frame is stretched square
    np.testing.assert_allclose(to_model_frame(corners, 640, 480, 1024), [[[102.4, 102.4], [512.0, 512.0]]])


def test_frame_corners_map_to_model_corners():
    np.testing.assert_allclose(to_model_frame(np.array([[0, 0], [1280, 720]]), 1280, 720, 1024), [[0, 0], [1024, 1024]])


def test_xywh_centre_size_to_corners():
    np.testing.assert_allclose(to_xyxy(np.array([[50, 40, 20, 10]]), "xywh"), [[40, 35, 60, 45]])
    np.testing.assert_allclose(to_xyxy(np.array([1, 2, 3, 4]), "xyxy"), [[1, 2, 3, 4]])
    with pytest.raises(ValueError):
        to_xyxy(np.zeros(4), "ltwh")


def test_boxes_partly_outside_are_clipped_to_the_frame():
    points = np.array([[[-10, -20], [700, 300]], [[10, 20], [30, 500]]], np.float32)
    np.testing.assert_array_equal(clip_points(points, 640, 480), [[[0, 0], [640, 300]], [[10, 20], [30, 480]]])
    assert points[0, 0, 0] == -10  # the prompt itself is left as it came
