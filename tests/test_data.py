"""identlib.data: IDX parsing, fetching with MD5 checks, the training "7", the panel, probes."""
from __future__ import annotations

import gzip
import io
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from identlib import data
from identlib.data import DataError, parse_idx
from identlib.metrics import pearson

LABELS = "t10k-labels-idx1-ubyte.gz"          # the smallest real file (4.5 kB)
LABELS_MD5 = data.DATASETS["mnist"].md5[LABELS]


def idx(shape, payload: bytes) -> bytes:
    """An uncompressed IDX file of unsigned bytes."""
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    return header + payload


@pytest.fixture
def local_dir(tmp_path, monkeypatch):
    """IDENTLIB_DATA_DIR pointing at an empty folder, with load()'s memo cleared around the test."""
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    monkeypatch.setenv("IDENTLIB_DATA_DIR", str(root))
    data._load.cache_clear()
    yield root
    data._load.cache_clear()


@pytest.fixture
def no_local_dir(monkeypatch):
    """No IDENTLIB_DATA_DIR: files come from (and are downloaded into) $IDENTLIB_CACHE_DIR."""
    monkeypatch.delenv("IDENTLIB_DATA_DIR", raising=False)
    data._load.cache_clear()
    yield
    data._load.cache_clear()


def serve(monkeypatch, body: bytes) -> list:
    """Make urllib.request.urlopen answer every request with ``body``; returns the requested URLs."""
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return urls


# --- parse_idx -----------------------------------------------------------------------------------

def test_parse_idx_reads_shape_and_values():
    arr = parse_idx(idx((2, 3), bytes(range(6))))
    assert arr.dtype == np.uint8
    assert arr.shape == (2, 3)
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_parse_idx_rejects_bad_magic():
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x00\x00")


def test_parse_idx_rejects_non_byte_type():
    raw = bytearray(idx((1,), b"\x05"))
    raw[2] = 0x0D                                    # float32
    with pytest.raises(DataError, match="0xd"):
        parse_idx(bytes(raw))


@pytest.mark.parametrize("payload", [b"\x01\x02", b"\x01\x02\x03\x04"])
def test_parse_idx_rejects_wrong_length(payload):
    with pytest.raises(DataError, match="header says 3"):
        parse_idx(idx((3,), payload))


# --- fetch: local folder -------------------------------------------------------------------------

def test_fetch_returns_verified_path(data_dir):
    path = data.fetch("mnist", LABELS)
    assert path == data_dir / "mnist" / LABELS


def test_fetch_missing_file_names_file_md5_and_fix(local_dir):
    with pytest.raises(DataError) as err:
        data.fetch("mnist", LABELS)
    msg = str(err.value)
    assert LABELS in msg and str(local_dir) in msg
    assert LABELS_MD5 in msg
    assert "IDENTLIB_DATA_DIR" in msg and "copy it there" in msg
    assert data.DATASETS["mnist"].url + LABELS in msg


def test_fetch_corrupt_file_reports_both_md5s(local_dir, data_dir):
    raw = bytearray((data_dir / "mnist" / LABELS).read_bytes())
    raw[100] ^= 0xFF
    (local_dir / "mnist" / LABELS).write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        data.fetch("mnist", LABELS)
    msg = str(err.value)
    assert "corrupt" in msg
    assert LABELS_MD5 in msg
    assert data._md5(local_dir / "mnist" / LABELS) in msg
    assert "replace it" in msg


def test_fetch_never_downloads_into_local_dir(local_dir, monkeypatch):
    urls = serve(monkeypatch, b"anything")
    with pytest.raises(DataError):
        data.fetch("mnist", LABELS)
    assert urls == []
    assert list((local_dir / "mnist").iterdir()) == []


def test_fetch_rejects_unknown_dataset_and_file():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        data.fetch("cifar", LABELS)
    with pytest.raises(DataError, match="no file 'labels.gz'"):
        data.fetch("mnist", "labels.gz")


def test_load_reports_missing_files(local_dir):
    with pytest.raises(DataError, match="missing"):
        data.load("mnist", "test")


def test_load_rejects_unknown_split():
    with pytest.raises(DataError, match="split"):
        data.load("mnist", "validation")


def test_load_parses_gzipped_idx_pair(local_dir, monkeypatch):
    """load() on a hand-made dataset registered with its own MD5s."""
    images = gzip.compress(idx((2, 28, 28), bytes(range(256)) * 6 + bytes(2 * 784 - 1536)))
    labels = gzip.compress(idx((2,), b"\x07\x03"))
    (local_dir / "toy").mkdir()
    (local_dir / "toy" / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    (local_dir / "toy" / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    md5 = {"t10k-images-idx3-ubyte.gz": data._md5(local_dir / "toy" / "t10k-images-idx3-ubyte.gz"),
           "t10k-labels-idx1-ubyte.gz": data._md5(local_dir / "toy" / "t10k-labels-idx1-ubyte.gz")}
    monkeypatch.setitem(data.DATASETS, "toy", data.Dataset(url="http://example.invalid/", md5=md5))
    x, y = data.load("toy", "test")
    assert x.shape == (2, 28, 28) and y.tolist() == [7, 3]
    assert x[0, 0, :5].tolist() == [0, 1, 2, 3, 4]


# --- fetch: downloads into the cache -------------------------------------------------------------

def test_download_failure_says_how_to_work_offline(no_local_dir, tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        data.fetch("mnist", LABELS)
    msg = str(err.value)
    assert "could not download" in msg and "no network" in msg
    assert "IDENTLIB_DATA_DIR" in msg and LABELS_MD5 in msg
    folder = tmp_path / "cache" / "data" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []   # no partial file left


def test_download_lands_in_cache_and_verifies(no_local_dir, data_dir, tmp_path, monkeypatch):
    urls = serve(monkeypatch, (data_dir / "mnist" / LABELS).read_bytes())
    path = data.fetch("mnist", LABELS)
    assert path == tmp_path / "cache" / "data" / "mnist" / LABELS
    assert urls == [data.DATASETS["mnist"].url + LABELS]
    assert data._md5(path) == LABELS_MD5
    assert [p.name for p in path.parent.iterdir()] == [LABELS]       # no .part file left
    assert data.fetch("mnist", LABELS) == path                       # second time: no download
    assert len(urls) == 1


def test_corrupt_download_is_reported(no_local_dir, monkeypatch):
    serve(monkeypatch, b"not the real file")
    with pytest.raises(DataError, match="corrupt") as err:
        data.fetch("mnist", LABELS)
    assert LABELS_MD5 in str(err.value) and "delete it" in str(err.value)


# --- the training image and the panel -----------------------------------------------------------

def test_first_seven_is_index_15():
    assert data.first_index(7) == 15
    assert data.load("mnist", "train")[1][15] == 7


def test_training_image_shape_and_range():
    x = data.training_image(15)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    raw = data.load("mnist", "train")[0][15]
    assert torch.equal(x[0], torch.from_numpy(raw.astype(np.float32)) / 255)


@pytest.mark.parametrize("index", [-1, 60000])
def test_training_image_rejects_out_of_range_index(index):
    with pytest.raises(DataError, match="train_index"):
        data.training_image(index)


def test_first_index_of_missing_label_raises():
    with pytest.raises(DataError, match="no image with label 10"):
        data.first_index(10)


def test_panel_columns():
    panel = data.test_panel()
    assert len(panel) == 13
    assert panel.images.shape == (13, 1, 28, 28)
    assert panel.names[0] == "train"
    assert torch.equal(panel.images[0], data.training_image())
    assert panel.families == ("train", "blend", "mnist", "mnist", "fashion", "fashion") + ("pattern",) * 7
    assert panel.names[1:4] == ("blend 0+1", "digit 2", "digit 4")
    assert panel.names[6:] == tuple(data.patterns())
    assert float(panel.images.min()) >= 0.0 and float(panel.images.max()) <= 1.0


def test_panel_blend_is_the_average_of_two_test_digits():
    panel = data.test_panel()
    mnist = data.test_images("mnist", 4)
    assert torch.allclose(panel.images[1], (mnist[3] + mnist[2]) / 2)


# --- drawn patterns ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pats():
    return data.patterns()


def test_patterns_are_seven_28x28_images_in_unit_range(pats):
    assert list(pats) == ["square", "fine stripes", "coarse stripes", "ramp", "lattice", "disc", "ellipse"]
    for name, img in pats.items():
        assert img.shape == (28, 28), name
        assert img.min() == 0.0 and img.max() == 1.0, name


def test_square_is_7x7_white_pixels(pats):
    sq = pats["square"]
    assert sq.sum() == 49
    rows, cols = np.nonzero(sq)
    assert np.ptp(rows) == 6 and np.ptp(cols) == 6


def test_fine_stripes_alternate_per_column(pats):
    fine = pats["fine stripes"]
    assert (fine == fine[0]).all()                       # vertical lines
    assert (fine[0, ::2] == 1).all() and (fine[0, 1::2] == 0).all()


def test_coarse_stripes_are_three_4px_bars(pats):
    row = pats["coarse stripes"][0]
    assert (pats["coarse stripes"] == row).all()
    assert row.sum() == 12
    edges = np.flatnonzero(np.diff(np.r_[0, row, 0]))
    assert (edges[1::2] - edges[::2]).tolist() == [4, 4, 4]


def test_ramp_increases_left_to_right(pats):
    ramp = pats["ramp"]
    assert (ramp == ramp[0]).all()
    assert (np.diff(ramp[0]) > 0).all()
    assert ramp[0, 0] == 0.0 and ramp[0, -1] == 1.0


def test_lattice_is_6x6_grid_of_2x2_marks(pats):
    lattice = pats["lattice"]
    assert lattice.sum() == 36 * 4
    assert set(np.unique(lattice)) == {0.0, 1.0}
    assert (lattice[3:5, 3:5] == 1).all() and lattice[5, 5] == 0 and (lattice[7:9, 7:9] == 1).all()


def test_disc_has_gray_c_opening_right(pats):
    disc = pats["disc"]
    assert set(np.unique(disc)) == {0.0, 0.5, 1.0}
    assert disc[14, 14] == 1.0                            # white centre
    assert disc[0, 0] == 0.0                              # black corners
    assert (disc[14, :14] == 0.5).any()                   # arc crosses the row to the left...
    assert not (disc[14, 14:] == 0.5).any()               # ...but not to the right


def test_ellipse_is_wide(pats):
    rows, cols = np.nonzero(pats["ellipse"])
    assert 24 <= np.ptp(cols) + 1 <= 27
    assert 11 <= np.ptp(rows) + 1 <= 14


# --- probes --------------------------------------------------------------------------------------

RHOS = [0.0, 0.1, 0.5, 0.9, 1.0]


def test_probes_have_the_requested_correlation():
    x_hat = data.training_image()
    images, rho = data.probes(x_hat, RHOS, 3, torch.Generator().manual_seed(0))
    assert images.shape == (15, 1, 28, 28) and images.dtype == torch.float32
    expected = torch.tensor([r for r in RHOS for _ in range(3)], dtype=torch.float64)
    assert torch.allclose(rho.double(), expected)
    assert torch.allclose(pearson(images, x_hat), expected, atol=1e-6, rtol=0)


def test_probes_are_in_unit_range():
    images, _ = data.probes(data.training_image(), RHOS, 2, torch.Generator().manual_seed(1))
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert (images.flatten(1).amin(1) == 0).all() and (images.flatten(1).amax(1) == 1).all()


def test_probes_are_deterministic_per_seed():
    x_hat = data.training_image()
    a, _ = data.probes(x_hat, RHOS, 2, torch.Generator().manual_seed(3))
    b, _ = data.probes(x_hat, RHOS, 2, torch.Generator().manual_seed(3))
    c, _ = data.probes(x_hat, RHOS, 2, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_probes_reject_rho_outside_unit_interval():
    with pytest.raises(ValueError, match="rho"):
        data.probes(data.training_image(), [1.5], 1, torch.Generator().manual_seed(0))


def test_truncated_download_is_a_data_error(tmp_path, monkeypatch):
    import http.client

    class Truncated:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *args):
            raise http.client.IncompleteRead(b"abc", 10)

    monkeypatch.delenv("IDENTLIB_DATA_DIR", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Truncated())
    with pytest.raises(data.DataError, match="could not download"):
        data.fetch("mnist", "t10k-labels-idx1-ubyte.gz")
    assert not list((tmp_path / "cache" / "data" / "mnist").glob("*"))   # no partial file left


def test_load_follows_the_data_source(tmp_path, monkeypatch, data_dir):
    labels = data.load("mnist", "test")[1]
    monkeypatch.setenv("IDENTLIB_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(data.DataError, match="is missing"):
        data.load("mnist", "test")
    monkeypatch.setenv("IDENTLIB_DATA_DIR", str(data_dir))
    assert (data.load("mnist", "test")[1] == labels).all()
