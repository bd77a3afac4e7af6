import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import unet
from unet.training.distributed import DistInfo, shutdown, wrap_model
from unet.training.loss import weighted_cross_entropy
from unet.training.trainer import _StepSampler


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
    seen = []
    for rank in range(2):
        seen.append(list(_StepSampler(3, 6, 2, DistInfo(rank=rank, world_size=2))))
    assert sorted(seen[0] + seen[1]) == list(range(3 * 4, 6 * 4))  # steps 3..5, global batch 4
    assert not set(seen[0]) & set(seen[1])
    # one process resumes at the same position as it would have reached
    assert list(_StepSampler(2, 4, 3, DistInfo()))[:3] == [6, 7, 8]
