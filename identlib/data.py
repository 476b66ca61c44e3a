"""Data: MNIST and Fashion-MNIST from their canonical URLs, checked by MD5; the training "7"; the
13-column test panel of the paper's figures; random probes of controlled correlation with the "7".

Where the raw files come from, in order:

1. ``$IDENTLIB_DATA_DIR/<dataset>/<file>`` if that variable is set (a folder laid out like the
   official releases, e.g. a local mirror). Nothing is downloaded into it.
2. ``$IDENTLIB_CACHE_DIR/data/<dataset>/<file>`` (default ``~/.cache/identlib``), downloaded from
   the canonical URL on first use.

Every file is checked against its published MD5 before it is parsed.

>>> x = training_image()            # the first "7" of the MNIST training set (index 15)
>>> tuple(x.shape), float(x.min()), float(x.max())
((1, 28, 28), 0.0, 1.0)
>>> panel = test_panel()
>>> len(panel.names), tuple(panel.images.shape)
(13, (13, 1, 28, 28))
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataError", "DATASETS", "data_source", "fetch", "load", "parse_idx", "training_image",
    "first_index", "patterns", "Panel", "test_panel", "probes", "test_images", "training_set",
]

SIDE = 28  # MNIST images are 28 x 28


class DataError(RuntimeError):
    """A raw data file is missing, corrupt or cannot be downloaded. The message says how to fix it."""


@dataclass(frozen=True)
class Dataset:
    url: str
    md5: dict  # file name -> md5 of the .gz file as published


DATASETS = {
    "mnist": Dataset(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": Dataset(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
SPLITS = {"train": "train", "test": "t10k"}


def data_source() -> tuple[Path, bool]:
    """The folder raw files are read from, and whether it is a local copy (no downloads)."""
    local = os.environ.get("IDENTLIB_DATA_DIR")
    if local:
        return Path(local).expanduser(), True
    cache = Path(os.environ.get("IDENTLIB_CACHE_DIR", "~/.cache/identlib")).expanduser()
    return cache / "data", False


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path) -> None:
    """Download to a temporary file beside ``dest`` and move it into place only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch(dataset: str, filename: str) -> Path:
    """Path of a verified raw file, downloading it first if needed (and allowed).

    Raises :class:`DataError` naming the file, its expected MD5 and the fix when the file is
    missing, corrupt or cannot be downloaded.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    if filename not in spec.md5:
        raise DataError(f"{dataset} has no file {filename!r}; known: {', '.join(spec.md5)}")
    expected = spec.md5[filename]
    root, local = data_source()
    path = root / dataset / filename
    url = spec.url + filename
    if not path.exists():
        if local:
            raise DataError(
                f"{path} is missing (md5 {expected}). IDENTLIB_DATA_DIR={root} must hold "
                f"{dataset}/{filename}: copy it there from {url}, or unset IDENTLIB_DATA_DIR "
                "to download into the cache."
            )
        try:
            _download(url, path)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise DataError(
                f"could not download {url} ({err}). Without network, put the file (md5 "
                f"{expected}) at {path}, or set IDENTLIB_DATA_DIR to a folder holding "
                f"{dataset}/{filename}."
            ) from None
    actual = _md5(path)
    if actual != expected:
        fix = (f"replace it with a good copy from {url}" if local
               else f"delete it and it will be downloaded again from {url}")
        raise DataError(f"{path} is corrupt: md5 {actual}, expected {expected}; {fix}.")
    return path


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an (uncompressed) IDX file of unsigned bytes into an array of its stated shape.

    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    array([7, 8, 9], dtype=uint8)
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError("not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"IDX type code {raw[2]:#x} is not unsigned byte (0x08)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(raw) - offset != count:
        raise DataError(f"IDX payload has {len(raw) - offset} bytes, header says {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def load(dataset: str = "mnist", split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split ("train" or "test").

    Parsed arrays are kept in memory per data source, so changing ``IDENTLIB_DATA_DIR`` takes
    effect at once."""
    return _load(data_source(), dataset, split)


@lru_cache(maxsize=None)
def _load(source, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in SPLITS:
        raise DataError(f"split must be one of {list(SPLITS)}, got {split!r}")
    prefix = SPLITS[split]
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        path = fetch(dataset, f"{prefix}-{kind}-ubyte.gz")
        try:
            with gzip.open(path, "rb") as f:
                arrays.append(parse_idx(f.read()))
        except (OSError, EOFError) as err:
            raise DataError(f"{path} could not be decompressed ({err}); delete it and retry.")
    images, labels = arrays
    if len(images) != len(labels):
        raise DataError(f"{dataset} {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., 28, 28) -> float32 (..., 1, 28, 28) in [0, 1]."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)) / 255.0
    return x.unsqueeze(-3)


def first_index(label: int, dataset: str = "mnist", split: str = "train") -> int:
    """Index of the first image of a class; ``first_index(7) == 15``, the training "7"."""
    labels = load(dataset, split)[1]
    hits = np.flatnonzero(labels == label)
    if hits.size == 0:
        raise DataError(f"no image with label {label} in {dataset} {split}")
    return int(hits[0])


def training_image(index: int = 15, dataset: str = "mnist") -> torch.Tensor:
    """The single training image x̂, (1, 28, 28) float32 in [0, 1]."""
    images = load(dataset, "train")[0]
    if not 0 <= index < len(images):
        raise DataError(f"train_index must be in [0, {len(images) - 1}], got {index}")
    return _to_tensor(images[index])


def training_set(config) -> torch.Tensor:
    """The training inputs (= targets) of a :class:`~identlib.config.RunConfig`: x̂ alone
    (1, 1, 28, 28), or the first ``n_train`` MNIST training images, in the config's dtype."""
    if config.n_train == 1:
        x = training_image(config.train_index).unsqueeze(0)
    else:
        images = load("mnist", "train")[0]
        if config.n_train > len(images):
            from .config import ConfigError

            raise ConfigError(f"n_train must be <= {len(images)} (got {config.n_train})")
        x = _to_tensor(images[:config.n_train])
    return x.to(getattr(torch, config.dtype))


def test_images(dataset: str = "mnist", n: int | None = None) -> torch.Tensor:
    """The first ``n`` test images of a dataset, (n, 1, 28, 28) float32 in [0, 1]."""
    images = load(dataset, "test")[0]
    return _to_tensor(images[:n])


def _disc(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def patterns() -> dict[str, np.ndarray]:
    """The seven drawn test patterns of the paper's figures (28 x 28, float in [0, 1]).

    Sizes follow paper.md §2; exact pixel placement is our choice.
    """
    out = {}
    sq = np.zeros((SIDE, SIDE))
    sq[10:17, 10:17] = 1.0                                  # ~7x7 square near the centre
    out["square"] = sq
    fine = np.zeros((SIDE, SIDE))
    fine[:, ::2] = 1.0                                      # 1-px vertical lines, period 2
    out["fine stripes"] = fine
    coarse = np.zeros((SIDE, SIDE))
    for left in (4, 12, 20):                                # three 4-px white bars
        coarse[:, left:left + 4] = 1.0
    out["coarse stripes"] = coarse
    out["ramp"] = np.tile(np.linspace(0.0, 1.0, SIDE), (SIDE, 1))  # black left, white right
    lattice = np.zeros((SIDE, SIDE))
    for r in range(3, 27, 4):                               # 6 x 6 grid of 2x2 marks, period 4
        for c in range(3, 27, 4):
            lattice[r:r + 2, c:c + 2] = 1.0
    out["lattice"] = lattice
    disc = _disc(14, 14, 13.5, 13.5).astype(float)          # white disc filling the frame
    y, x = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    radius = np.hypot(y - 14, x - 14)
    angle = np.degrees(np.arctan2(y - 14, x - 14)) % 360
    arc = (np.abs(radius - 7) <= 1.25) & ((angle <= 315) & (angle >= 45))  # "C" opening right
    disc[arc] = 0.5
    out["disc"] = disc
    out["ellipse"] = _disc(14, 14, 6.5, 13).astype(float)  # ~26 x 13 px
    return out


@dataclass(frozen=True)
class Panel:
    """Test inputs with a name and a family per image ("train", "blend", "mnist", "fashion",
    "pattern")."""

    images: torch.Tensor  # (N, 1, 28, 28)
    names: tuple
    families: tuple

    def __len__(self) -> int:
        return len(self.names)


# The panel's test images (our choice of indices; MNIST test labels begin 7 2 1 0 4 ...,
# Fashion-MNIST test labels begin 9 2 1 1 6 ...).
PANEL_MNIST = (1, 4)          # a "2" and a "4"
PANEL_BLEND = (3, 2)          # a "0" and a "1", averaged
PANEL_FASHION = (0, 1)        # an ankle boot and a pullover


def test_panel(train_index: int = 15) -> Panel:
    """The 13 columns of the paper's figures: the training "7", a blend of two digits, two MNIST
    test digits, two Fashion-MNIST test images and the seven drawn patterns."""
    mnist = test_images("mnist", 10)
    fashion = test_images("fashion-mnist", 10)
    labels = load("mnist", "test")[1]
    items = [("train", "train", training_image(train_index))]
    a, b = PANEL_BLEND
    items.append((f"blend {labels[a]}+{labels[b]}", "blend", 0.5 * (mnist[a] + mnist[b])))
    for i in PANEL_MNIST:
        items.append((f"digit {labels[i]}", "mnist", mnist[i]))
    for i, name in zip(PANEL_FASHION, ("ankle boot", "pullover")):
        items.append((name, "fashion", fashion[i]))
    for name, img in patterns().items():
        items.append((name, "pattern", torch.from_numpy(img).float().unsqueeze(0)))
    names, families, imgs = zip(*items)
    return Panel(torch.stack(imgs), tuple(names), tuple(families))


def probes(x_hat: torch.Tensor, rhos, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs whose Pearson correlation with ``x_hat`` is exactly each ρ in ``rhos``.

    Each probe is ρ·z(x̂) + √(1−ρ²)·z(ε), where z standardizes a vector and ε is Gaussian noise made
    orthogonal to the centred x̂, then rescaled affinely into [0, 1] (which keeps the correlation).
    Returns images (len(rhos)·n, 1, 28, 28) and the ρ of each.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, r = probes(training_image(), [0.0, 0.5, 1.0], 2, g)
    >>> tuple(x.shape), r.tolist()
    ((6, 1, 28, 28), [0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    """
    t = x_hat.double().flatten()
    t = (t - t.mean()) / t.std()
    images, rho_of = [], []
    for rho in rhos:
        if not 0.0 <= float(rho) <= 1.0:
            raise ValueError(f"every rho must be in [0, 1], got {rho}")
        for _ in range(n):
            eps = torch.randn(t.numel(), generator=generator, dtype=torch.float64)
            eps = eps - eps.mean()
            eps = eps - (eps @ t) / (t @ t) * t           # orthogonal to the centred x̂
            eps = eps / eps.std()
            p = float(rho) * t + (1.0 - float(rho) ** 2) ** 0.5 * eps
            p = (p - p.min()) / (p.max() - p.min())        # affine: correlation unchanged
            images.append(p.float().view(1, SIDE, SIDE))
            rho_of.append(float(rho))
    return torch.stack(images), torch.tensor(rho_of)
