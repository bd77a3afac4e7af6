import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import unet
from unet.training.distributed import DistInfo, shutdown, wrap_model
from unet.training.loss import weighted_cross_entropy
from unet.data.tiles import make_loader


def _batch():
    g = torch.Generator().manual_seed(0)
    net = unet.create_model("unet", base_channels=2, depth=2, dropout=0.0)
    size = unet.nearest_valid_input_sizes(net, 40)[1]
    out = unet.output_size(net, size)
    x = torch.rand(4, 1, size, size, generator=g)
    y = torch.randint(0, 2, (4, out, out), generator=g)
    w = torch.rand(4, out, out, generator=g) + 0.5
    return x, y, w


def _worker(rank, world, store, path):
    torch.set_num_threads(1)
    # a file store instead of a TCP port: no collisions between concurrent test runs
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = unet.create_model("unet", base_channels=2, depth=2, dropout=0.0)
    ddp = wrap_model(net, DistInfo(rank=rank, world_size=world), torch.device("cpu"))
    x, y, w = _batch()
    part = slice(rank * 2, rank * 2 + 2)  # each process: half of the global batch of 4
    weighted_cross_entropy(ddp(x[part]), y[part], w[part]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in net.named_parameters()}, path)
    shutdown(DistInfo(rank=rank, world_size=world))


def test_ddp_gloo_gradients_equal_single_process(tmp_path):
    path = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), path), nprocs=2, join=True)
    ddp_grads = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    net = unet.create_model("unet", base_channels=2, depth=2, dropout=0.0)
    x, y, w = _batch()
    # equal shares of equal size: the mean of the two half-batch means is the full-batch mean
    weighted_cross_entropy(net(x), y, w).backward()
    for n, p in net.named_parameters():
        assert torch.allclose(ddp_grads[n], p.grad, rtol=1e-4, atol=1e-6), n


def test_step_sampler_partitions_each_global_batch():
    def items(start_step, steps, batch, rank=0, world=1):  # what the trainer's loader gives one process
        loader = make_loader(list(range(steps * batch * world)), batch_size=batch, num_workers=0,
                             start=start_step * batch * world, rank=rank, world_size=world)
        return torch.cat(list(loader)).tolist()

    seen = []
    for rank in range(2):
        seen.append(items(3, 6, 2, rank, 2))
    assert sorted(seen[0] + seen[1]) == list(range(3 * 4, 6 * 4))  # steps 3..5, global batch 4
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] == [12, 13, 16, 17, 20, 21]  # rank r: items (step * world + r) * batch + 0..batch-1
    # one process resumes at the same position as it would have reached
    assert items(2, 4, 3)[:3] == [6, 7, 8]


# --------------------------------------------------------------------------- stopping together
# Two gloo processes train the real Trainer; one rank diverges or fails.  Every wait is bounded (the process
# group's timeout, the join below), so a regression fails the test instead of hanging it.

import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
from datetime import timedelta  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.io  # noqa: E402

SAMPLE = pathlib.Path(unet.__file__).parent / "sample_data" / "isbi2012" / "train"


def _sample_folder(root):
    for sub, src in (("images", "images"), ("masks", "labels")):
        (root / sub).mkdir(parents=True)
        for i in range(4):
            arr = skimage.io.imread(SAMPLE / src / f"{i}.png")[100:196, 200:296]
            skimage.io.imsave(root / sub / f"s{i}.png", np.ascontiguousarray(arr), check_contrast=False)
    return root


def _trainer_worker(rank, world, store, data, out, fault, report):
    import unet.training.trainer as T
    from unet.errors import UserError
    from unet.training.config import load_config

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=20))
    cfg = load_config(None, extra={
        "data.dataset": "folder", "data.root": str(data), "data.train": "0:2", "data.val": "2:4",
        "model.unet.base_channels": 2, "model.unet.depth": 2, "train.tile_size": 60, "train.num_workers": 0,
        "train.threads": 1, "train.log_every": 1, "train.steps": 6, "train.checkpoint_every": 2,
        "train.val_every": 2, "eval.overlays": 0, "optim.name": "adam", "optim.lr": 0.01})
    kind, on_rank, at_step = fault
    if rank == on_rank and kind in ("nan", "interrupt"):
        real, calls = T.get_loss, {"n": 0}

        def poisoned(name):
            fn = real(name)

            def loss(*a, **k):
                calls["n"] += 1
                if calls["n"] == at_step and kind == "interrupt":
                    raise KeyboardInterrupt  # SIGTERM is unwound as this by the command line
                value = fn(*a, **k)
                return value * float("nan") if calls["n"] == at_step else value
            return loss

        T.get_loss = poisoned
    if rank == on_rank and kind == "validation error":
        def broken(self, model):
            raise UserError("validation image unreadable (injected)")

        T.Trainer.validate = broken
    try:
        T.Trainer(cfg, out, quiet=True).fit()
        result = {"type": None, "message": ""}
    except BaseException as err:  # noqa: BLE001 - the outcome is what the test checks
        result = {"type": type(err).__name__, "message": str(err)}
    pathlib.Path(report.format(rank=rank)).write_text(json.dumps(result))


def _run_two_ranks(tmp_path, fault, timeout=150):
    data = _sample_folder(tmp_path / "data")
    report = str(tmp_path / "rank{rank}.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_trainer_worker, args=(r, 2, str(tmp_path / "store"), data, tmp_path / "run",
                                                       fault, report)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"rank(s) {hung} still blocked after {timeout} s"
    return [json.loads(pathlib.Path(report.format(rank=r)).read_text()) for r in range(2)]


@pytest.mark.slow
def test_divergence_on_one_rank_stops_every_rank(tmp_path):
    results = _run_two_ranks(tmp_path, ("nan", 1, 3))
    for r in results:
        assert r["type"] == "TrainingDiverged", results
        assert "at step 3 on rank 1" in r["message"], results
    assert "loss became nan" in results[1]["message"]
    assert "(step 2)" in results[0]["message"]  # the checkpoint of step 2 is the last good one


@pytest.mark.slow
@pytest.mark.parametrize("fault, failing, words", [(("validation error", 0, 2), 0, "(injected)"),
                                                   (("interrupt", 1, 3), 1, "")])
def test_a_rank_that_fails_takes_the_others_with_it(tmp_path, fault, failing, words):
    results = _run_two_ranks(tmp_path, fault)
    other = 1 - failing
    assert results[failing]["type"] in ("UserError", "KeyboardInterrupt") and words in results[failing]["message"]
    assert results[other]["type"] == "TrainingStopped", results
    assert f"rank {failing} stopped with an error" in results[other]["message"]
