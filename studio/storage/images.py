"""Images as files in the data folder, content-addressed (sha256), written atomically."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from studio.atomic import write_bytes

_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


class ImageNotFound(KeyError):
    pass


class FileImageStore:
    """`put` writes atomically (studio.atomic: temporary file in the same folder, fsync, rename): a reader
    never sees a half-written image, and a crash leaves at most a stray temporary file. Ids are the sha256 of the
    bytes, so storing the same image twice is a no-op."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, image_id: str) -> Path:
        if not _IMAGE_ID.match(image_id):
            raise ImageNotFound(image_id)
        return self.root / image_id[:2] / f"{image_id}.png"

    def put(self, data: bytes) -> str:
        image_id = hashlib.sha256(data).hexdigest()
        path = self._path(image_id)
        if path.exists():
            return image_id
        write_bytes(path, data)
        return image_id

    def get(self, image_id: str) -> bytes:
        path = self._path(image_id)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFound(image_id) from exc

    def exists(self, image_id: str) -> bool:
        try:
            return self._path(image_id).exists()
        except ImageNotFound:
            return False

    def delete(self, image_id: str) -> None:
        """Remove the file (no error when it is already gone). The caller checks that nothing references it."""
        self._path(image_id).unlink(missing_ok=True)


class MemoryImageStore:
    """An in-memory store with the same contract, for tests and throwaway runs."""

    def __init__(self) -> None:
        self._images: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        image_id = hashlib.sha256(data).hexdigest()
        self._images[image_id] = data
        return image_id

    def get(self, image_id: str) -> bytes:
        try:
            return self._images[image_id]
        except KeyError as exc:
            raise ImageNotFound(image_id) from exc

    def exists(self, image_id: str) -> bool:
        return image_id in self._images

    def delete(self, image_id: str) -> None:
        self._images.pop(image_id, None)
