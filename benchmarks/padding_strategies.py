"""How to run a bidirectional GRU exactly on padded batches, measured: packing vs reversing within length.

Three ways to run one bidirectional layer over a right-padded batch (real lengths uniform in [T/8, T]):
- `fused_padded`: one `nn.GRU(bidirectional=True)` on the padded tensor. Fast but inexact: the right-to-left
  direction starts on padding.
- `packed`: `pack_padded_sequence(enforce_sorted=False)` + the same fused GRU. Exact, the textbook way.
- `reversed`: what `hf_gru` does: a left-to-right `nn.GRU` on the padded tensor plus a second one on each text
  reversed within its own length (one `gather`), reversed back. Exact.

Prints tokens/s (real tokens only) for inference and for forward+backward, interleaving the systems round by round
so machine noise hits all of them alike, and the max deviation of each from the exact answer.

    python benchmarks/padding_strategies.py [--device cuda] [--batch-sizes 32 128] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def reverse_index(lengths: torch.Tensor, num_steps: int) -> torch.Tensor:
    steps = torch.arange(num_steps, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


class Strategies(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.bi = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=True)
        self.fwd = nn.GRU(input_size, hidden_size, batch_first=True)
        self.bwd = nn.GRU(input_size, hidden_size, batch_first=True)
        with torch.no_grad():  # same weights everywhere, so outputs are comparable
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.fwd, f"{name}_l0").copy_(getattr(self.bi, f"{name}_l0"))
                getattr(self.bwd, f"{name}_l0").copy_(getattr(self.bi, f"{name}_l0_reverse"))

    def fused_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.bi(x)[0]

    def packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.bi(packed)[0], batch_first=True, total_length=x.shape[1])[0]

    def reversed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        index = reverse_index(lengths, x.shape[1]).unsqueeze(-1)
        forward = self.fwd(x)[0]
        backward = self.bwd(x.gather(1, index.expand_as(x)))[0]
        return torch.cat([forward, backward.gather(1, index.expand_as(backward))], dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--size", type=int, default=256, help="embedding and hidden size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Strategies(args.size, args.size).to(device)
    names = ("fused_padded", "packed", "reversed")
    rows = []
    for batch_size in args.batch_sizes:
        lengths = torch.randint(max(1, args.max_length // 8), args.max_length + 1, (batch_size,), device=device)
        x = torch.randn(batch_size, args.max_length, args.size, device=device)
        valid = (torch.arange(args.max_length, device=device)[None, :] < lengths[:, None]).unsqueeze(-1)
        real_tokens = int(lengths.sum())
        with torch.no_grad():
            exact = model.packed(x, lengths) * valid
            deviation = {n: float(((getattr(model, n)(x, lengths) * valid) - exact).abs().max()) for n in names}
        timings: dict[tuple[str, str], list[float]] = {(n, m): [] for n in names for m in ("infer", "train")}
        for _ in range(args.rounds + 1):  # first round warms up
            for name in names:
                run = getattr(model, name)
                for mode in ("infer", "train"):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    if mode == "infer":
                        with torch.no_grad():
                            run(x, lengths)
                    else:
                        x.requires_grad_(True)
                        (run(x, lengths) * valid).sum().backward()
                        x.requires_grad_(False)
                        model.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    timings[(name, mode)].append(time.perf_counter() - start)
        for name in names:
            row = {
                "device": str(device),
                "batch_size": batch_size,
                "max_length": args.max_length,
                "size": args.size,
                "strategy": name,
                "exact": deviation[name] < 1e-4,
                "max_abs_deviation": deviation[name],
            }
            for mode in ("infer", "train"):
                row[f"{mode}_tokens_per_s"] = real_tokens / statistics.median(timings[(name, mode)][1:])
            rows.append(row)
            print(
                f"B={batch_size:4d} T={args.max_length:4d} {name:13s} exact={row['exact']!s:5s} "
                f"infer {row['infer_tokens_per_s']:11,.0f} tok/s   train {row['train_tokens_per_s']:11,.0f} tok/s"
            )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
