"""The Dask graph gives the single-process result, on a dask.distributed LocalCluster whose worker
is another process: the model, the checkpoint path and the image path cross a process boundary."""

import os

import numpy as np
import pytest
import tifffile
import torch

import unet
from unet.data.normalize import intensity_range, normalize
from unet.inference import predict_dask, predict_tiled

from inference_helpers import smooth_image, tiny_unet


@pytest.fixture(scope="module")
def client():
    import distributed  # the test extra

    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_graph_on_local_cluster_equals_single_process(client):
    model = tiny_unet(depth=2)
    img = smooth_image((70, 93), seed=2)
    expected = predict_tiled(model, img, tile_size=16)
    lazy = predict_dask(model, img, tile_size=16, chunk_tiles=2)
    assert lazy.shape == expected.shape and lazy.chunks[1][0] == 32
    got = client.compute(lazy).result()
    np.testing.assert_array_equal(got, expected)
    # the tiles were computed in the worker process, not in this one
    (worker_pid,) = client.run(os.getpid).values()
    assert worker_pid != os.getpid()


def test_dask_same_padded_blending_and_stack(client):
    torch.manual_seed(0)
    model = unet.create_model("unet", base_channels=4, depth=2, padding="same", dropout=0.0)
    stack = np.stack([smooth_image((50, 41), seed=s) for s in range(2)])
    expected = predict_tiled(model, stack, axes="ZYX", tile_size=16)
    got = client.compute(predict_dask(model, stack, axes="ZYX", tile_size=16, chunk_tiles=1)).result()
    assert got.shape == (2, 2, 50, 41)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_dask_from_a_file_normalises_like_predict_file(client, tmp_path):
    model = tiny_unet(depth=2)
    img = np.round((smooth_image((64, 80), seed=4) + 3) * 40).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(32, 32), compression="zlib")
    ckpt = unet.save_checkpoint(model, tmp_path / "m.pt")
    got = client.compute(predict_dask(ckpt, tmp_path / "in.tif", tile_size=24)).result()
    expected = predict_tiled(model, normalize(img, value_range=intensity_range(img)), tile_size=24)
    np.testing.assert_array_equal(got, expected)
