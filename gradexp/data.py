"""Fashion-MNIST: find the four IDX files, verify them, load, split and scale. Numpy only.

Lookup order (the first folder whose four files read and check wins): `$GRADEXP_DATA_DIR`, `data.dir`,
the Keras cache, Debian's `dataset-fashion-mnist`; else Keras downloads it. Verification is of the decompressed
IDX bytes: the .gz wrappers differ between sources, the contents do not. Files holding other image
counts than the official 60,000/10,000 (a subset, or the tiny files tests write) are checked for
structure only and reported as unverified.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
OFFICIAL_COUNTS = {"train": 60_000, "test": 10_000}
MAX_COUNT = OFFICIAL_COUNTS["train"]  # the most images (or labels) a file may hold
KERAS_CACHE = Path("~/.keras/datasets/fashion-mnist")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
FIX_HINT = ("install Debian's package (apt-get install dataset-fashion-mnist), set GRADEXP_DATA_DIR or data.dir "
            "to a folder with the four .gz files, or let Keras download them into ~/.keras/datasets/fashion-mnist")


class DamagedFiles(DataError):
    """A file that is missing, cut off or corrupt: `reason` says what is wrong with it, the message adds
    where to get the files again (which does not apply when the lookup uses another source instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} ({FIX_HINT})")
        self.reason = reason


@dataclass
class DataSource:
    folder: Path
    how: str  # which lookup found it
    verified: bool = False  # SHA-256 of the decompressed bytes matched the official files
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # sources passed over, and why

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"folder": str(self.folder), "found_by": self.how, "verified": self.verified,
                                  "counts": self.counts}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: DataSource


def candidates(config_dir: str | None = None, dir_name: str = "data.dir") -> list[tuple[str, Path]]:
    """(how it was found, folder) in lookup order; `dir_name` is what the user called `config_dir`
    (`data.dir` in a config, `--dir` for `gradexp data`), so that messages quote what they wrote."""
    out: list[tuple[str, Path]] = []
    env = os.environ.get("GRADEXP_DATA_DIR")
    if env:
        out.append(("$GRADEXP_DATA_DIR", Path(env).expanduser()))
    if config_dir:
        out.append((dir_name, Path(config_dir).expanduser()))
    out.append(("Keras cache", KERAS_CACHE.expanduser()))
    out.append(("Debian package dataset-fashion-mnist", DEBIAN_DIR))
    return out


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        try:
            if (folder / name).is_file():
                return folder / name
        except PermissionError:  # a folder that cannot be searched holds nothing usable; _why_not says so
            return None
    return None


USER_NAMED = ("$GRADEXP_DATA_DIR", "data.dir", "--dir")


def _why_not(folder: Path) -> str:
    try:
        if not folder.exists():
            return "does not exist"
    except PermissionError:
        return "cannot be reached (permission denied on a folder above it)"
    if not folder.is_dir():
        return "is not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return "cannot be read (permission denied); fix its permissions"
    missing = [stem for stem in FILES.values() if not _file_in(folder, stem)]
    return f"lacks {', '.join(m + '[.gz]' for m in missing)}"


def _sources(config_dir: str | None, download: bool, skipped: list[str], looked: list[str],
             dir_name: str = "data.dir") -> Iterator[DataSource]:
    """Every folder holding all four files, in the documented order, then a Keras download as the last
    resort. Folders the user named ($GRADEXP_DATA_DIR, data.dir) that were passed over go into
    `skipped`, so that the user hears which data was used instead; every folder without the files
    goes into `looked`, for the error when none had them."""
    found = candidates(config_dir, dir_name)
    for i, (how, folder) in enumerate(found):
        if all(_file_in(folder, stem) for stem in FILES.values()):
            # $GRADEXP_DATA_DIR wins over data.dir: a user who also named data.dir hears that it went unused
            skipped.extend(f"{later} {where} was not looked at ({how} comes first in the lookup)"
                           for later, where in found[i + 1:]
                           if later in USER_NAMED and where.resolve() != folder.resolve())
            yield DataSource(folder, how, skipped=skipped)
            continue
        looked.append(f"{how} ({folder})")
        if how in USER_NAMED:
            skipped.append(f"{how} {folder} {_why_not(folder)}")
    if download:
        folder = _keras_download()
        if folder is not None:
            yield DataSource(folder, "Keras download", skipped=skipped)
            return
        looked.append("Keras download (failed: no network?)")


def _not_found(looked: list[str]) -> DataError:
    return DataError(f"Fashion-MNIST not found; looked in {', '.join(looked)}. To fix: {FIX_HINT}")


def find(config_dir: str | None = None, download: bool = True, dir_name: str = "data.dir") -> DataSource:
    """The first folder holding all four files (not yet read: `locate` reads and checks them)."""
    looked: list[str] = []
    for source in _sources(config_dir, download, [], looked, dir_name):
        return source
    raise _not_found(looked)


def locate(config_dir: str | None = None, download: bool = True,
           dir_name: str = "data.dir") -> tuple[DataSource, dict[str, np.ndarray]]:
    """The first source whose four files read and check, with their arrays (see `read_raw`).

    Damaged files in a folder the user named are an error: that is the data they asked for. Damaged
    files that the lookup found by itself (a half-finished download in the Keras cache) are passed over
    with a note in `skipped` when a later source reads, so that they do not hide a good install; when
    no later source reads either, their error is the one raised."""
    looked: list[str] = []
    skipped: list[str] = []
    first_error: DataError | None = None
    for source in _sources(config_dir, download, skipped, looked, dir_name):
        try:
            return source, read_raw(source)
        except DataError as exc:
            if source.how in USER_NAMED:  # the folder asked for: what is wrong there, not where else to look
                text = exc.reason if isinstance(exc, DamagedFiles) else str(exc)
                if source.how == "$GRADEXP_DATA_DIR" and config_dir:  # it comes first, or data.dir looks ignored
                    text += (f" (this folder is $GRADEXP_DATA_DIR, which takes precedence over {dir_name}; "
                             f"unset it to use {dir_name})")
                raise DataError(text) from None
            first_error = first_error or exc
            skipped.append(f"{source.how} {source.folder}: {exc.reason if isinstance(exc, DamagedFiles) else exc}")
    raise first_error or _not_found(looked)


def _keras_download() -> Path | None:
    """Keras's own download into its cache, quietly: on failure the caller's one error line says
    what was tried, without TensorFlow's start-up notices or Keras's progress text before it."""
    from .engine import native_logs_hidden  # noqa: PLC0415 - TensorFlow loads only on this path

    try:
        with native_logs_hidden(), contextlib.redirect_stdout(io.StringIO()):
            import keras  # noqa: PLC0415 - only when every local source failed

            keras.datasets.fashion_mnist.load_data()
    except Exception:  # noqa: BLE001 - any failure means "not available"; the caller names the fixes
        return None
    folder = KERAS_CACHE.expanduser()
    return folder if all(_file_in(folder, s) for s in FILES.values()) else None


def _read_bytes(path: Path, images: bool) -> bytes:
    """The file's bytes, decompressed, read no further than what its header promises plus one byte (so
    that `_parse_idx` sees any padding): a wrong file, or a small gzip of gigabytes, cannot fill memory."""
    header = 16 if images else 8
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            head = f.read(header)
            if len(head) < header:
                return head
            count = int.from_bytes(head[4:8], "big")
            if count > MAX_COUNT:
                raise DamagedFiles(f"{path}'s header promises {count:,} items, more than Fashion-MNIST's "
                                   f"{MAX_COUNT:,}; it is corrupt or another file, replace it")
            return head + f.read(count * (28 * 28 if images else 1) + 1)
    except PermissionError as exc:
        raise DataError(f"{path}: {exc.strerror}; make it readable (chmod a+r) or use another copy") from None
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DamagedFiles(f"{path} is truncated or not a valid gzip file ({exc}); delete it and get the file "
                           "again") from None


def _parse_idx(path: Path, data: bytes, images: bool) -> np.ndarray:
    magic_expected = IMAGE_MAGIC if images else LABEL_MAGIC
    header = 16 if images else 8
    if len(data) < header:
        raise DamagedFiles(f"{path} is truncated ({len(data)} bytes, less than its header); get the file again")
    magic = int.from_bytes(data[0:4], "big")
    if magic != magic_expected:
        raise DamagedFiles(f"{path} has magic number {magic}, expected {magic_expected} for an IDX "
                           f"{'image' if images else 'label'} file; it is corrupt or another file, replace it")
    count = int.from_bytes(data[4:8], "big")
    shape = (count, int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")) if images else (count,)
    if images and shape[1:] != (28, 28):
        raise DataError(f"{path} holds {shape[1]}x{shape[2]} images, expected 28x28; use Fashion-MNIST files")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DamagedFiles(f"{path} is truncated or padded: {len(data)} bytes where its header promises "
                           f"{expected}; get the file again")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    if not images and array.size and array.max() > 9:
        raise DataError(f"{path} has label {int(array.max())}, but Fashion-MNIST labels are 0-9; replace the file")
    return array


def read_raw(source: DataSource) -> dict[str, np.ndarray]:
    """Load and check the four files; sets `source.verified` and `source.counts`."""
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for key, stem in FILES.items():
        path = _file_in(source.folder, stem)
        if path is None:
            raise DamagedFiles(f"{source.folder / (stem + '.gz')} is missing")
        data = _read_bytes(path, images=key.endswith("images"))
        arrays[key] = _parse_idx(path, data, images=key.endswith("images"))
        digests[key] = hashlib.sha256(data).hexdigest()
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(f"{source.folder}: {n_img} {split} images but {n_lab} labels; the files do not belong "
                            "together, replace them")
    counts = {"train": len(arrays["train_images"]), "test": len(arrays["test_images"])}
    source.counts = counts
    for split, n in counts.items():
        if n == 0:
            raise DataError(f"{source.folder}: the {split} files hold no images; replace them with files "
                            "that do (the test set measures the trained model)")
    if counts == OFFICIAL_COUNTS:
        for key, digest in digests.items():
            if digest != SHA256[key]:
                raise DamagedFiles(f"{source.folder / FILES[key]}: checksum mismatch (SHA-256 of the decompressed "
                                   f"file is {digest[:12]}…, expected {SHA256[key][:12]}…); the file is corrupt, "
                                   "replace it")
        source.verified = True
    return arrays


def load(validation_size: int = 5000, scaling: str = "unit", config_dir: str | None = None,
         limit: int | None = None, source: DataSource | None = None) -> Dataset:
    """Train/validation/test arrays as float32 in [N, 28, 28], labels int32, split as in the seed."""
    if source is None:
        source, raw = locate(config_dir)
    else:
        raw = read_raw(source)
    x_full, y_full = raw["train_images"], raw["train_labels"]
    if validation_size >= len(x_full):
        raise DataError(f"data.validation_size={validation_size} leaves no training images (the files hold "
                        f"{len(x_full)}); lower data.validation_size")
    x_val, x_train = x_full[:validation_size], x_full[validation_size:]
    y_val, y_train = y_full[:validation_size], y_full[validation_size:]
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_test, y_test = raw["test_images"], raw["test_labels"]
    if scaling == "standardize":
        train = x_train.astype(np.float32)
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        std[std == 0] = 1.0

        def scale(x: np.ndarray) -> np.ndarray:
            return ((x.astype(np.float32) - mean) / std).astype(np.float32)
    else:

        def scale(x: np.ndarray) -> np.ndarray:
            return x.astype(np.float32) / np.float32(255.0)

    def labels(y: np.ndarray) -> np.ndarray:
        return y.astype(np.int32)

    return Dataset(scale(x_train), labels(y_train), scale(x_val), labels(y_val), scale(x_test), labels(y_test), source)


def write_idx(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
              compress: bool = True) -> None:
    """Write the four files in Fashion-MNIST's IDX format (tests and custom subsets)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        stem_img = FILES[f"{split}_images"]
        stem_lab = FILES[f"{split}_labels"]
        images = np.asarray(images, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.uint8)
        img = IMAGE_MAGIC.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        lab = LABEL_MAGIC.to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        for stem, payload in ((stem_img, img + images.tobytes()), (stem_lab, lab + labels.tobytes())):
            if compress:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(payload, compresslevel=1))
            else:
                (folder / stem).write_bytes(payload)
