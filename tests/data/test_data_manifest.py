"""Manifests, `unet data fetch` (on local file:// URLs and a local HTTP server; no network) and `unet data check`."""

import functools
import hashlib
import http.server
import re
import shutil
import socket
import threading
import zipfile

import numpy as np
import pytest
import requests
import tifffile

from unet.cli import main
from unet.data.manifest import MANIFEST_DIR, check, fetch, list_manifests, load_manifest
from unet.errors import UserError

REQUIRED = ("name", "title", "homepage", "loader", "downloads", "layout", "labels", "pixel_size", "citation", "terms")


def test_manifests_are_complete():
    assert set(list_manifests()) >= {"isbi2012", "dic-hela", "phc-u373"}
    assert (MANIFEST_DIR / "template.yaml").is_file() and (MANIFEST_DIR / "README.md").is_file()
    assert not (MANIFEST_DIR / "__init__.py").exists()
    for name in list_manifests() + ["template"]:
        m = load_manifest(name)
        for key in REQUIRED:
            assert key in m, (name, key)
        for d in m["downloads"]:
            assert d["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", d["sha256"]), name
            assert d["url"].startswith(("http://", "https://"))
        for rel, digest in m["known_files"].items():
            assert re.fullmatch(r"[0-9a-f]{64}", digest), (name, rel)
    urls = [d["url"] for n in ("dic-hela", "phc-u373") for d in load_manifest(n)["downloads"]]
    assert urls == ["http://data.celltrackingchallenge.net/training-datasets/DIC-C2DH-HeLa.zip",
                    "http://data.celltrackingchallenge.net/training-datasets/PhC-C2DH-U373.zip"]


def _sums(folder):
    sums = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.removeprefix("./")] = digest
    return sums


def test_known_checksums_are_those_of_the_shared_copies(shared_data):
    for name, folder in (("isbi2012", "isbi2012"), ("dic-hela", "dic-hela")):
        assert load_manifest(name)["known_files"] == _sums(shared_data / folder)


def test_the_shipped_sample_has_the_known_checksums():
    """The demo's 10 ISBI slices are byte-identical copies of files the manifest knows."""
    import hashlib

    from unet.resources import SAMPLE_DIR

    known, sample = load_manifest("isbi2012")["known_files"], _sums(SAMPLE_DIR / "isbi2012")
    assert len(sample) == 20 and all(known[path] == digest for path, digest in sample.items())
    for path, digest in sample.items():
        assert hashlib.sha256((SAMPLE_DIR / "isbi2012" / path).read_bytes()).hexdigest() == digest, path


def _ctc_zip(tmp_path, n=2):
    src = tmp_path / "src" / "Toy-CTC"
    (src / "01").mkdir(parents=True)
    (src / "01_GT" / "SEG").mkdir(parents=True)
    for t in range(n):
        tifffile.imwrite(src / "01" / f"t{t:03d}.tif", np.full((16, 20), 10 * t, np.uint8))
        m = np.zeros((16, 20), np.uint16)
        m[3:9, 3:9] = 1
        m[3:9, 9:15] = 2
        tifffile.imwrite(src / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", m)
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = {"name": "toy", "loader": "ctc", "root": "Toy-CTC",
                "downloads": [{"url": archive.as_uri(), "file": "toy.zip", "sha256": digest, "unpack": "zip"}],
                "sequences": {"01": {"count": n, "image_shape": [16, 20], "image_dtype": "uint8",
                                     "mask_dtype": "uint16"}},
                "known_files": {"01/t000.tif": hashlib.sha256((src / "01" / "t000.tif").read_bytes()).hexdigest()}}
    return archive, manifest


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_fetch_verifies_and_unpacks(tmp_path):
    _, manifest = _ctc_zip(tmp_path)
    dest = tmp_path / "out" / "toy"
    assert fetch(manifest, dest) == dest
    assert (dest / "Toy-CTC" / "01_GT" / "SEG" / "man_seg001.tif").is_file()
    assert not (dest / "toy.zip").exists() and _leftovers(dest.parent) == []
    report, problems = check(manifest, dest)
    assert problems == [] and "1/1 present files match" in report[-1]
    with pytest.raises(UserError, match="already exists"):
        fetch(manifest, dest)


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    _, manifest = _ctc_zip(tmp_path)
    manifest["downloads"][0]["sha256"] = "0" * 64
    dest = tmp_path / "out" / "toy"
    with pytest.raises(UserError, match="SHA-256 mismatch"):
        fetch(manifest, dest)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_fetch_unknown_checksum_needs_no_verify(tmp_path):
    _, manifest = _ctc_zip(tmp_path)
    manifest["downloads"][0]["sha256"] = None
    dest = tmp_path / "out"
    with pytest.raises(UserError, match="--no-verify"):
        fetch(manifest, dest)
    assert not dest.exists()
    fetch(manifest, dest, verify=False)
    assert check(manifest, dest)[1] == []


@pytest.fixture()
def http_folder(tmp_path):
    """Serve ``tmp_path`` over HTTP on 127.0.0.1 (a free port) for the test's duration; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_fetch_over_http_verifies_and_unpacks(tmp_path, http_folder):
    archive, manifest = _ctc_zip(tmp_path)
    manifest["downloads"][0]["url"] = f"{http_folder}/{archive.name}"
    dest = tmp_path / "out" / "toy"
    assert fetch(manifest, dest, timeout=10) == dest
    assert check(manifest, dest)[1] == [] and not (dest / "toy.zip").exists() and _leftovers(dest.parent) == []
    manifest["downloads"][0]["sha256"] = "0" * 64
    with pytest.raises(UserError, match=r"SHA-256 mismatch \(got [0-9a-f]{64}, manifest says 0{64}\)"):
        fetch(manifest, tmp_path / "out" / "again", timeout=10)
    manifest["downloads"][0]["url"] = f"{http_folder}/missing.zip"  # HTTP 404
    with pytest.raises(UserError, match="cannot download .*missing.zip.*404"):
        fetch(manifest, tmp_path / "out" / "again", verify=False, timeout=10)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toy"]


def test_fetch_offline_fails_cleanly(tmp_path, monkeypatch):
    _, manifest = _ctc_zip(tmp_path)
    dest = tmp_path / "out" / "toy"
    (tmp_path / "out").mkdir()
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused, as offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manifest["downloads"][0]["url"] = f"http://127.0.0.1:{port}/toy.zip"
    with pytest.raises(UserError, match="cannot download .*offline"):
        fetch(manifest, dest, timeout=10)
    assert not dest.exists() and _leftovers(tmp_path / "out") == []

    def offline(*a, **k):
        raise requests.exceptions.ConnectionError("[Errno -3] Temporary failure in name resolution")

    # the real dic-hela manifest through the CLI: exit code 2 and one line, nothing written (and no network)
    monkeypatch.setattr(requests, "get", offline)
    monkeypatch.setattr(requests, "head", offline)
    assert main(["data", "fetch", "dic-hela", "--dest", str(dest), "--no-verify", "--quiet"]) == 2
    assert not dest.exists() and _leftovers(tmp_path / "out") == []


def test_fetch_rejects_unsafe_archive(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    manifest = {"name": "evil", "downloads": [{"url": archive.as_uri(), "file": "evil.zip", "sha256": None,
                                               "unpack": "zip"}]}
    with pytest.raises(UserError, match="unsafe path"):
        fetch(manifest, tmp_path / "out", verify=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()


def test_check_finds_problems(tmp_path, isbi2012):
    root = tmp_path / "isbi"
    shutil.copytree(isbi2012, root)
    if not (root / "test").exists():  # the shipped sample has no test split: stand-ins for it
        shutil.copytree(root / "train" / "images", root / "test" / "images")
    (root / "train" / "images" / "29.png").unlink()
    (root / "train" / "labels" / "29.png").unlink()
    import skimage.io

    bad = skimage.io.imread(root / "train" / "labels" / "3.png")
    bad[0, 0] = 7
    skimage.io.imsave(root / "train" / "labels" / "3.png", bad, check_contrast=False)
    report, problems = check("isbi2012", root)
    text = "\n".join(problems)
    assert f"train: {len(list((isbi2012 / 'train' / 'images').iterdir())) - 1} image(s), expected 30" in text
    assert re.search(r"labels/3.png.*unexpected label values \[7\]", text)
    assert re.search(r"labels/3.png: SHA-256 differs", text)
    assert main(["data", "check", "isbi2012", str(root)]) == 1


def test_check_passes_on_the_complete_shared_copies(shared_data):
    assert main(["data", "check", "isbi2012", str(shared_data / "isbi2012")]) == 0
    assert main(["data", "check", "dic-hela", str(shared_data / "dic-hela")]) == 0


def test_show_writes_png(tmp_path, dic_hela):
    out = tmp_path / "show.png"
    assert main(["data", "show", "dic-hela", str(dic_hela), "--pair", "02/t006",
                 "--out", str(out)]) == 0
    img = __import__("skimage.io").io.imread(out)
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0]  # four panels side by side
    assert main(["data", "show", "dic-hela", str(dic_hela), "--out", str(out)]) == 2  # no overwrite


def test_check_official_ctc_layout_uses_known_checksums(tmp_path, shared_data):
    src = shared_data / "dic-hela"
    root = tmp_path / "DIC-C2DH-HeLa"
    for seq in ("01", "02"):
        (root / seq).mkdir(parents=True)
        (root / f"{seq}_GT" / "SEG").mkdir(parents=True)
        for f in (src / seq / "images").iterdir():
            shutil.copy(f, root / seq / f.name)
        for f in (src / seq / "masks").iterdir():
            shutil.copy(f, root / f"{seq}_GT" / "SEG" / f.name)
    report, problems = check("dic-hela", tmp_path)  # DEST holding the unpacked DIC-C2DH-HeLa folder
    assert problems == []
    assert "36/36 present files match" in report[-1]
    (root / "02" / "t006.tif").write_bytes((root / "02" / "t007.tif").read_bytes())
    problems = check("dic-hela", tmp_path)[1]
    assert any("t006.tif: SHA-256 differs" in p for p in problems)
