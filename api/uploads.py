"""Untrusted uploads: a body-size cap enforced while the bytes arrive (413), and image decoding
that tells "not an image" (415) from "a broken or hostile image" (400).

Decoding is done fully here (`load()`), under a pixel cap checked from the header before any
pixel is decoded, so a truncated JPEG or a decompression bomb never reaches the encoder.
"""
from __future__ import annotations

import io
import json
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError


class UploadError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, by Content-Length up front or
    by counting the streamed bytes (chunked uploads), without reading the rest."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._reject(send, declared)
        seen = 0
        started = False
        exceeded = False

        async def limited_receive():
            nonlocal seen, exceeded
            if exceeded:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # the app turned our exception into its own answer (e.g. 400): answer 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, seen)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, seen)

    async def _reject(self, send, size: int):
        body = json.dumps({"detail": f"request body too large: limit is {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> a fully decoded RGB image, or UploadError(415 | 400 | 413)."""
    if not data:
        raise UploadError(400, "the uploaded file is empty")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half a picture
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise UploadError(415, "the upload is not an image whyrec can read (JPEG, PNG, WebP, GIF, ...)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(400, f"image too large: over {max_pixels} pixels") from None
        except Exception as err:  # a header PIL recognises but cannot parse
            raise UploadError(400, f"unreadable image: {err}") from None
        width, height = im.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            raise UploadError(400, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
        try:
            im.load()
            return im.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(400, f"image too large: over {max_pixels} pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
            raise UploadError(400, f"broken image ({type(err).__name__}: {err})") from None
