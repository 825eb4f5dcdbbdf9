"""The size a compressed image declares in its header (PNG, BMP, WebP, JPEG), read before it is decoded, so
that a frame too big to decode is refused before the image library allocates for it."""

from __future__ import annotations

import struct


def declared_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) as a compressed image's header declares them, read before decoding it: a
    74-byte PNG may declare 40000x40000 pixels. None when no size is found (not one of our formats, or cut
    short before its size)."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return ("png", *struct.unpack(">II", data[16:24]))
        if data.startswith(b"BM"):
            if struct.unpack("<I", data[14:18])[0] == 12:  # the old OS/2 header: 16-bit sizes
                return ("bmp", *struct.unpack("<HH", data[18:22]))
            width, height = struct.unpack("<ii", data[18:26])
            return "bmp", abs(width), abs(height)  # a negative height means top-down rows
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:  # cut short inside the header
        return None
    return None


def _webp_size(data: bytes) -> tuple[str, int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return "webp", width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after a signature byte
        bits = struct.unpack("<I", data[21:25])[0]
        return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width, height = (int.from_bytes(data[i:i + 3], "little") + 1 for i in (24, 27))
        return "webp", width, height
    return None


# JPEG markers that carry a frame's size (SOF0-SOF15, less DHT, JPG and DAC, which share the range)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return "jpeg", width, height
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None
