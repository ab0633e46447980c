"""What the Walker costs a Hugging Face causal LM's loop: time and peak memory per step, against
the bare step measured in the same run.

A GPT-2 built from a config (no download; ``transformers``' default "sdpa" attention): 2 blocks,
width 128, 4 heads, vocabulary 1024, sequences of 64 tokens, batch 16, AdamW, the loss the model
returns (``labels`` = ``input_ids``: it shifts them itself). The Walker's probe is 64 sequences
and every step is measured (``budget=None``: an 11-point slice, 10 forward passes of the probe);
``walker 0.5`` is the default kind of budget, and ``curvature pass`` one Hessian top-3 pass with
AdamW's edge (Lanczos through the attention, math SDPA for its double backward), in step-times,
its peak the loop's with the passes in it.

Why one process per measurement: the peak resident memory of a process (``ru_maxrss``) only
grows, so each variant runs in its own child, and rounds alternate bare / Walker / budget so
drift on a noisy machine hits all alike. On CUDA the peak is ``torch.cuda.max_memory_allocated``.

    python tests/bench/bench_hf_walker.py --rounds 3 --steps 20 [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

VOCAB, LENGTH, BATCH, PROBE = 1024, 64, 16, 64
MODES = ("bare", "walker", "walker 0.5", "curvature pass")


def gpt2(device: torch.device):
    import transformers

    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=128,
                                     n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).to(device)


def lm_loss(model, batch):
    return model(**batch).loss


def child(mode: str, steps: int, device: torch.device) -> dict[str, float]:
    """One variant's seconds per step (or per pass) and peak memory, in this process."""
    import sgdwalk

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (PROBE + steps * BATCH, LENGTH), generator=g).to(device)
    model = gpt2(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    walker = None
    with tempfile.TemporaryDirectory() as folder:
        if mode != "bare":
            kw = {"budget": 0.5} if mode == "walker 0.5" else {"budget": None}
            if mode == "curvature pass":
                kw |= {"hessian_every": f"{steps}s", "top_k": 3}  # at the start and the end
            probe = {"input_ids": ids[:PROBE], "labels": ids[:PROBE]}
            walker = sgdwalk.Walker(model, probe, lm_loss, sessions_dir=folder, session="b",
                                    batch_size=BATCH, **kw)  # fmt: skip
            walker.attach(opt)
        seconds = _loop(model, opt, ids[PROBE:], steps, device)
        if walker is not None:
            walker.close()
        if mode == "curvature pass":  # the last one: AdamW's preconditioner exists by then
            with sgdwalk.open_session(os.path.join(folder, "b")) as s:
                seconds = list(s.curvature())[-1].seconds
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    return {"seconds": seconds, "peak_bytes": float(peak)}


def _loop(model, opt, ids, steps: int, device: torch.device) -> float:
    """The user's loop; seconds per step (the first step, warm-up, left out)."""
    start = 0.0
    for i in range(steps + 1):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        batch = ids[i * BATCH % len(ids) :][:BATCH]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_child(mode: str, steps: int, device: str, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--steps", str(steps), "--device", device,
           "--threads", str(threads)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(child(a.child, a.steps, torch.device(a.device))))
        return
    got: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(a.rounds):
        for mode in MODES:
            got[mode].append(run_child(mode, a.steps, a.device, a.threads))
    med = {
        m: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for m, runs in got.items()
    }
    bare = med["bare"]
    result = {"device": a.device, "threads": a.threads, "steps": a.steps, "rounds": a.rounds,
              "params": sum(p.numel() for p in gpt2(torch.device("cpu")).parameters()),
              "median": med,
              "time_ratio": {m: med[m]["seconds"] / bare["seconds"] for m in MODES},
              "memory_ratio": {m: med[m]["peak_bytes"] / bare["peak_bytes"] for m in MODES}}  # fmt: skip
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"GPT-2 from a config, {result['params']:,} parameters, batch {BATCH}x{LENGTH} tokens, "
          f"probe {PROBE} sequences; {a.device}, {a.threads} thread(s), median of {a.rounds}")  # fmt: skip
    for m in MODES:
        what = "s a pass" if m == "curvature pass" else "s a step"
        print(f"{m:>15}: {med[m]['seconds']:.4f} {what}  ({result['time_ratio'][m]:.2f}x the bare "
              f"step)  peak {med[m]['peak_bytes'] / 2**20:.0f} MiB "
              f"({result['memory_ratio'][m]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
