"""Cost of free-form flow training and exact evaluation, as ratios measured in one run.

1. One FFF training step (surrogate loss, K=1: decoder JVP + encoder VJP, backward, Adam step)
   against one plain autoencoder step (same encoder/decoder, same batch, reconstruction loss
   only). The FFF step also pays for the decoder JVP and a double backward through the encoder;
   the target is under 2x. Both ways of computing the decoder JVP are timed (``decoder_jvp``
   of :func:`molfff.fff.fff_loss`).
2. The batched exact log-det (``torch.func`` vmap over Jacobian columns) against a Python loop
   of one JVP per dimension.

Timings alternate between the contenders and report medians, so machine noise hits both alike.

    python scripts/bench_train_step.py [--dims 2 16 64] [--batch 256] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from molfff.fff import FreeFormFlow, log_abs_det_jacobian
from molfff.nn import resnet


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_dim(dim: int, preset: str, batch: int, repeats: int, device: str) -> None:
    torch.manual_seed(0)
    flow = FreeFormFlow(resnet(preset, dim), resnet(preset, dim), event_shape=(dim,)).to(device)
    for p in flow.decoder.out.parameters():  # leave the exact identity, as after some training
        torch.nn.init.normal_(p, std=0.01)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    x = torch.randn(batch, dim, device=device)

    def fff_step(decoder_jvp):
        def step():
            opt.zero_grad(set_to_none=True)
            flow.loss(x, beta=10.0, decoder_jvp=decoder_jvp).loss.mean().backward()
            opt.step()

        return step

    def ae_step():
        opt.zero_grad(set_to_none=True)
        x_hat = flow.decode(flow.encode(x))
        ((x - x_hat) ** 2).sum(1).mean().backward()
        opt.step()

    step = interleaved(
        {"forward": fff_step("forward"), "reverse": fff_step("reverse"), "ae": ae_step}, repeats
    )

    z = flow.encode(x).detach()
    with torch.no_grad():
        dets = interleaved(
            {
                "vmap": lambda: log_abs_det_jacobian(flow.decoder, z),
                "loop": lambda: log_abs_det_jacobian(flow.decoder, z, vectorize=False),
            },
            max(3, repeats // 3),
        )
    print(
        f"D={dim:<4d} ResNet-{preset} batch {batch}: "
        f"AE step {step['ae'] * 1e3:6.2f} ms; FFF/AE ratio: "
        f"forward-mode JVP {step['forward'] / step['ae']:.2f}, "
        f"reverse-mode JVP {step['reverse'] / step['ae']:.2f} | "
        f"exact log-det vmap {dets['vmap'] * 1e3:7.2f} ms, loop {dets['loop'] * 1e3:8.2f} ms, "
        f"speed-up = {dets['loop'] / dets['vmap']:.1f}x",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    p.add_argument("--presets", nargs="+", default=["S", "L"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads")
    for preset in args.presets:
        for dim in args.dims:
            bench_dim(dim, preset, args.batch, args.repeats, args.device)


if __name__ == "__main__":
    main()
