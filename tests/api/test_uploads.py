"""Image decoding of untrusted uploads: 415 for non-images, 400 for broken images and bombs."""
import io
import struct
import zlib

import pytest
from PIL import Image

from api.uploads import UploadError, decode_image

LIMIT = 40_000_000


def jpeg_bytes(size=(64, 96)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buf, "JPEG")
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A real PNG whose header claims width x height (the decompression-bomb shape)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_good_jpeg_decodes_to_rgb():
    im = decode_image(jpeg_bytes(), LIMIT)
    assert im.mode == "RGB" and im.size == (64, 96)


def test_not_an_image_is_415():
    with pytest.raises(UploadError) as err:
        decode_image(b"%PDF-1.4 this is a pdf, not a picture" * 10, LIMIT)
    assert err.value.status == 415


def test_truncated_jpeg_is_400():
    data = jpeg_bytes((256, 256))
    with pytest.raises(UploadError) as err:
        decode_image(data[: len(data) // 2], LIMIT)
    assert err.value.status == 400


def test_header_claiming_huge_size_is_400():
    with pytest.raises(UploadError) as err:
        decode_image(png_with_size(100_000, 100_000), LIMIT)
    assert err.value.status == 400 and "pixels" in err.value.detail


def test_real_decompression_bomb_is_400():
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, "PNG", optimize=True)  # 25 MP that compress to a few KB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(UploadError) as err:
        decode_image(buf.getvalue(), max_pixels=10_000_000)
    assert err.value.status == 400


def test_empty_upload_is_400():
    with pytest.raises(UploadError) as err:
        decode_image(b"", LIMIT)
    assert err.value.status == 400
