"""Where the time of one QM9 training step goes: phase timings, peak memory, top operators.

    python scripts/profile_qm9_step.py                        # CUDA, the full qm9 config
    python scripts/profile_qm9_step.py --set model.blocks=8   # with overrides
    python scripts/profile_qm9_step.py --device cpu --fast --repeats 2 --warmup 1   # a dry run

The model is built as ``molfff train qm9`` builds it (config, seed, ``QM9Task.new_module``) and
fed real training batches: the first ``--batches`` batches of epoch 0 in the training sampler's
order, collated as the training DataLoader collates them. For each ``loss.decoder_jvp`` (reverse
and forward) it reports, as medians over ``--repeats`` after ``--warmup`` steps, with the device
synchronised around every timed phase:

* the training step's phases: the loss forward (``MoleculeFlow.loss`` with the arguments of
  ``MoleculeModule.training_step``), backward, gradient clipping and Adam step, and their sum;
  also a pipelined step (``--repeats`` steps back to back, one synchronisation at the end);
* the loss forward taken apart (a replica of :func:`molfff.fff.fff_loss`, checked to give the
  same loss): dequantizer, edge list, encoder forward, decoder forward, decoder JVP, encoder
  VJP (``create_graph``) and the remaining terms;
* the peak memory of one step (``torch.cuda.max_memory_allocated``, CUDA only);
* ``torch.profiler`` over one step: the top operators by device time (CPU time on the CPU),
  kernel launches, kernels and ATen operator calls per step, and the kernels' summed time.

Not measured: Lightning's loop around the step (logging, closures) and validation.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds per named phase, one list entry per repeat, device synchronised at every mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.t = 0.0

    def start(self) -> None:
        sync(self.device)
        self.t = time.perf_counter()

    def mark(self, name: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.times.setdefault(name, []).append(now - self.t)
        self.t = now

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items()}


def load(config, n_batches: int, device: torch.device):
    """The module (seeded as ``runner.build`` seeds it), its optimizer and real batches."""
    import lightning as L
    from torch_geometric.data import Batch

    from molfff.train.data import EpochShuffleSampler
    from molfff.train.tasks import build_task

    t0 = time.perf_counter()
    task = build_task(config.data, config.seed)
    train = task.molecules["train"]
    print(f"QM9 splits loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = task.new_module(config).to(device)
    module.train()
    opt = module.configure_optimizers()
    if not isinstance(opt, torch.optim.Optimizer):  # a schedule: its optimizer is what steps
        opt = opt["optimizer"]
    bs = min(config.data.batch_size, len(train))
    order = list(EpochShuffleSampler(len(train), config.seed))[: n_batches * bs]
    data = train.subset(order).to_pyg()  # the same molecules, in the order the loader takes them
    batches, collate_s, to_device_s = [], [], []
    for i in range(0, len(data) - bs + 1, bs):
        t = time.perf_counter()
        batch = Batch.from_data_list(data[i : i + bs])  # what PyG's DataLoader collater does
        collate_s.append(time.perf_counter() - t)
        sync(device)
        t = time.perf_counter()
        batches.append(batch.to(device))
        sync(device)
        to_device_s.append(time.perf_counter() - t)
    return module, opt, batches, statistics.median(collate_s), statistics.median(to_device_s)


def describe_batches(batches) -> None:
    nodes = [int(b.num_nodes) for b in batches]
    edges = []
    for b in batches:
        n = torch.bincount(b.batch.cpu()).long()
        edges.append(int((n * (n - 1)).sum()))
    print(
        f"{len(batches)} batches of {int(batches[0].num_graphs)} molecules: "
        f"{statistics.mean(nodes):.0f} atoms per batch (min {min(nodes)}, max {max(nodes)}), "
        f"{statistics.mean(edges):.0f} directed edges per batch (fully connected; "
        f"{statistics.mean(edges) / statistics.mean(nodes):.1f} per atom)"
    )


def loss_kwargs(config, decoder_jvp: str) -> dict:
    cfg = config.loss
    return {
        "hutchinson_samples": cfg.hutchinson_samples,
        "hutchinson_sphere": cfg.hutchinson_sphere,
        "noise_std": cfg.noise_std,
        "decoder_jvp": decoder_jvp,
    }


def step_parts(module, mol, config, decoder_jvp: str, step: int, clock: Clock | None):
    """One training step as ``MoleculeModule.training_step`` + Lightning's clip and Adam step."""
    from molfff.train.module import step_generator

    gen = step_generator(config.seed, step, 0, mol.pos.device)
    terms = module.flow.loss(mol, config.loss.beta, gen, **loss_kwargs(config, decoder_jvp))
    loss = terms["loss"].mean()
    if clock:
        clock.mark("loss forward")
    loss.backward()
    if clock:
        clock.mark("backward")
    return loss


def optimizer_step(module, opt, config, clock: Clock | None) -> None:
    if config.optim.grad_clip is not None:  # Lightning's gradient_clip_val (norm)
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.optim.grad_clip)
    if clock:
        clock.mark("grad clip")
    opt.step()
    opt.zero_grad(set_to_none=True)
    if clock:
        clock.mark("Adam step + zero_grad")


STEP_PHASES = ("loss forward", "backward", "grad clip", "Adam step + zero_grad")


def full_step(module, opt, mol, config, decoder_jvp, step, clock=None):
    loss = step_parts(module, mol, config, decoder_jvp, step, clock)
    optimizer_step(module, opt, config, clock)
    return loss


def replica_forward(module, mol, config, decoder_jvp: str, step: int, clock: Clock | None):
    """The loss forward of ``MoleculeFlow.loss`` / ``fff_loss`` taken apart into timed parts."""
    import torch.autograd.forward_ad as fwAD

    from molfff.fff.loss import hutchinson_vectors
    from molfff.train.module import step_generator

    flow, cfg = module.flow, config.loss
    mark = clock.mark if clock else (lambda name: None)
    gen = step_generator(config.seed, step, 0, mol.pos.device)
    x, log_q, layout = flow.dequantize(mol, gen)
    mark("  dequantizer (2-block EGNN, log q)")
    layout.edge_index  # noqa: B018 - built once per batch, on first use
    mark("  fully connected edge list")
    if cfg.noise_std > 0:
        x = x + cfg.noise_std * layout.randn(x, generator=gen)
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    z = flow.flow.encode(x, None, layout)
    mark("  encoder forward")
    vs = hutchinson_vectors(z, layout, cfg.hutchinson_samples, gen, cfg.hutchinson_sphere)
    if decoder_jvp == "forward":
        x_hat, jvs = None, []
        for v in vs:
            with fwAD.dual_level():
                primal, jv = fwAD.unpack_dual(flow.flow.decode(fwAD.make_dual(z, v), None, layout))
            x_hat = primal if x_hat is None else x_hat
            jvs.append(jv.detach())
        mark("  decoder forward + JVP (forward-mode AD)")
    else:
        x_hat = flow.flow.decode(z, None, layout)
        mark("  decoder forward")
        u = torch.zeros_like(x_hat, requires_grad=True)
        (ut_j,) = torch.autograd.grad(x_hat, z, u, create_graph=True)
        jvs = [torch.autograd.grad(ut_j, u, v, retain_graph=True)[0] for v in vs]
        del u, ut_j
        mark("  decoder JVP (VJP of VJP: 2 reverse passes)")
    trace = torch.zeros(layout.num_samples(x), dtype=x.dtype, device=x.device)
    for v, jv in zip(vs, jvs, strict=True):
        (vjp,) = torch.autograd.grad(z, x, v, create_graph=True)
        trace = trace + layout.dot(vjp, jv) / len(vs)
    mark("  encoder VJP (create_graph)")
    reconstruction = layout.sum_per_sample((x - x_hat) ** 2)
    log_prob_z = flow.flow.latent.log_prob(z, layout)
    loss = (cfg.beta * reconstruction - log_prob_z - trace + log_q).mean()
    mark("  reconstruction, log p(z), trace, mean")
    return loss


def network_forwards(module, mol, clock: Clock) -> None:
    """Encoder and decoder forward alone (gradients on, as in training; graphs dropped)."""
    flow = module.flow
    with torch.no_grad():
        x, _, layout = flow.dequantize(mol)
        layout.edge_index  # noqa: B018
    x = x.detach().requires_grad_(True)
    clock.start()
    z = flow.flow.encode(x, None, layout)
    clock.mark("encoder forward alone")
    flow.flow.decode(z, None, layout)
    clock.mark("decoder forward alone")


def profile_step(module, opt, mol, config, decoder_jvp, step, device, trace_dir):
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync(device)
    with profile(activities=activities) as prof:
        with record_function("## loss forward + backward"):
            gen_loss = step_parts(module, mol, config, decoder_jvp, step, None)
        with record_function("## clip + Adam"):
            optimizer_step(module, opt, config, None)
        sync(device)
    del gen_loss
    averages = prof.key_averages()
    cuda = device.type == "cuda"
    sort = "device_time_total" if cuda else "cpu_time_total"
    try:
        table = averages.table(sort_by=sort, row_limit=15, max_name_column_width=60)
    except (AttributeError, KeyError, ValueError):
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        table = averages.table(sort_by=sort, row_limit=15, max_name_column_width=60)
    print(f"\ntop operators of one step (decoder_jvp={decoder_jvp}), by {sort}:")
    print(table)
    if cuda:
        self_sort = "self_device_time_total"
        try:
            table = averages.table(sort_by=self_sort, row_limit=15, max_name_column_width=60)
        except (AttributeError, KeyError, ValueError):
            self_sort = "self_cuda_time_total"
            table = averages.table(sort_by=self_sort, row_limit=15, max_name_column_width=60)
        print(f"top operators and kernels of one step (decoder_jvp={decoder_jvp}), by {self_sort}:")
        print(table)
    launches = sum(a.count for a in averages if "LaunchKernel" in a.key)
    aten = sum(a.count for a in averages if a.key.startswith("aten::"))
    memcpy = sum(a.count for a in averages if "Memcpy" in a.key or "cudaMemcpy" in a.key)
    kernels, kernel_us = 0, 0.0
    for e in prof.events():
        # device events, less the GPU spans of user annotations (record_function, optimizer)
        on_device = str(getattr(e, "device_type", "")).endswith("CUDA")
        if on_device and not getattr(e, "is_user_annotation", False) and "#" not in e.name:
            kernels += 1
            kernel_us += e.time_range.elapsed_us()
    print(
        f"per step (decoder_jvp={decoder_jvp}): {aten} ATen operator calls, "
        f"{launches} kernel launch calls (cudaLaunchKernel & co), {memcpy} memcpy calls, "
        f"{kernels} device events (kernels, copies, sets) summing to {kernel_us / 1e3:.1f} ms "
        f"of device time"
    )
    if trace_dir is not None:
        path = Path(trace_dir) / f"trace_{decoder_jvp}.json"
        prof.export_chrome_trace(str(path))
        with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
        print(f"chrome trace: {path}.gz")
    return kernels, kernel_us / 1e6


def measure(module, opt, batches, config, decoder_jvp, args, device):
    from molfff.molecules.flow import MoleculeBatch

    mols = [MoleculeBatch.from_pyg(b) for b in batches]
    print(f"\n===== decoder_jvp={decoder_jvp} =====", flush=True)
    step = 0
    for _ in range(args.warmup):
        full_step(module, opt, mols[step % len(mols)], config, decoder_jvp, step)
        step += 1
    sync(device)

    # the loss forward against its replica: same terms, same generator draws
    mol = mols[0]
    real = step_parts_value(module, mol, config, decoder_jvp, 10_000)
    replica = replica_forward(module, mol, config, decoder_jvp, 10_000, None).item()
    print(f"replica check: loss {real:.6f} (MoleculeFlow.loss), {replica:.6f} (replica)")
    opt.zero_grad(set_to_none=True)

    clock = Clock(device)
    for _ in range(args.repeats):
        mol = mols[step % len(mols)]
        clock.start()
        full_step(module, opt, mol, config, decoder_jvp, step, clock)
        clock.times.setdefault("step (sum of the phases)", []).append(
            sum(clock.times[k][-1] for k in STEP_PHASES)
        )
        step += 1
    for _ in range(args.repeats):
        mol = mols[step % len(mols)]
        clock.start()
        replica_forward(module, mol, config, decoder_jvp, step, clock)
        step += 1
        network_forwards(module, mol, clock)
    opt.zero_grad(set_to_none=True)
    sync(device)
    t = time.perf_counter()
    for _ in range(args.repeats):
        full_step(module, opt, mols[step % len(mols)], config, decoder_jvp, step)
        step += 1
    sync(device)
    pipelined = (time.perf_counter() - t) / args.repeats

    med = clock.medians()
    total = med["step (sum of the phases)"]
    print(f"timings, median of {args.repeats} after {args.warmup} warm-up steps (ms; % of step):")
    for name, sec in med.items():
        print(f"  {name:<46} {sec * 1e3:9.2f} ms  {100 * sec / total:5.1f} %")
    print(
        f"  {'pipelined step (no sync inside)':<46} {pipelined * 1e3:9.2f} ms  "
        f"= {1 / pipelined:.2f} steps/s"
    )

    peak = None
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        full_step(module, opt, mols[step % len(mols)], config, decoder_jvp, step)
        step += 1
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        print(
            f"peak memory of one step: {peak / 2**30:.3f} GiB allocated "
            f"(before the step: {base / 2**30:.3f} GiB; reserved "
            f"{torch.cuda.memory_reserved(device) / 2**30:.3f} GiB)"
        )
    kernels, kernel_s = profile_step(
        module, opt, mols[step % len(mols)], config, decoder_jvp, step, device, args.trace_dir
    )
    if device.type == "cuda":
        print(
            f"device busy: {kernel_s * 1e3:.1f} ms of kernels per step against "
            f"{pipelined * 1e3:.1f} ms pipelined step ({100 * kernel_s / pipelined:.0f} %); "
            f"{1e6 * pipelined / max(kernels, 1):.1f} us of step per device event"
        )
    return {"step": total, "pipelined": pipelined, "peak": peak, **med}


def step_parts_value(module, mol, config, decoder_jvp, step) -> float:
    """The training loss of one batch (no optimizer step; gradients are dropped)."""
    from molfff.train.module import step_generator

    gen = step_generator(config.seed, step, 0, mol.pos.device)
    terms = module.flow.loss(mol, config.loss.beta, gen, **loss_kwargs(config, decoder_jvp))
    return terms["loss"].mean().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fast", action="store_true", help="the qm9 config's small `fast` preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batches", type=int, default=4, help="real batches cycled through")
    p.add_argument(
        "--jvp", nargs="+", default=["reverse", "forward"], choices=["reverse", "forward"]
    )
    p.add_argument("--trace-dir", default=None, help="write gzipped chrome traces here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available here; pass --device cpu")

    from molfff.train.config import load_config

    config = load_config("qm9", ["logger.wandb=disabled", *args.set], fast=args.fast)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__} on {device} ({name}), {torch.get_num_threads()} CPU threads; "
        f"qm9{' --fast' if args.fast else ''}: {config.model.blocks} blocks x width "
        f"{config.model.width}, batch {config.data.batch_size}, beta {config.loss.beta}, "
        f"matmul precision {torch.get_float32_matmul_precision()}",
        flush=True,
    )
    module, opt, batches, collate_s, to_device_s = load(config, args.batches, device)
    params = sum(p.numel() for p in module.parameters())
    print(
        f"{params} parameters; data: collate {collate_s * 1e3:.2f} ms per batch (CPU), "
        f"to {device} {to_device_s * 1e3:.2f} ms per batch"
    )
    describe_batches(batches)
    results = {jvp: measure(module, opt, batches, config, jvp, args, device) for jvp in args.jvp}
    print("\nsummary (ms per step, median; pipelined = back to back, one sync):")
    for jvp, r in results.items():
        peak = f", peak {r['peak'] / 2**30:.2f} GiB" if r["peak"] is not None else ""
        print(
            f"  decoder_jvp={jvp:<8} step {r['step'] * 1e3:8.2f} ms, pipelined "
            f"{r['pipelined'] * 1e3:8.2f} ms ({1 / r['pipelined']:.2f} steps/s){peak}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
