"""Flow speed on this machine: real-time factor at N ODE steps, offline and chunked. Prints JSON.

    python benchmarks/bench_flow.py --config egs/synth_en/conf/flow_small.yaml
    python benchmarks/bench_flow.py --model egs/synth_en/exp/flow/model

RTF = generation seconds / seconds of target audio. ``chunked`` is
``generate(chunk=, lookahead=)``: without lookahead one pass under the chunk mask (the
cost of offline), with it the stream itself; ``stream`` yields chunk by chunk (each
chunk solved once against the cached keys/values of the earlier ones, its lookahead
frames solved again by the next) and reports the first chunk's latency and the total.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from flow.model import FlowModel
from flow.train import FlowTrainConfig


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", default="egs/synth_en/conf/flow.yaml", help="train YAML (random weights)")
    g.add_argument("--model", help="trained model dir")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's (CFG doubles the batch)")
    p.add_argument("--target-seconds", type=float, default=10.0)
    p.add_argument("--prompt-seconds", type=float, default=3.0)
    p.add_argument("--chunk", type=int, default=50, help="chunk in frames")
    p.add_argument("--lookahead", type=int, default=4, help="frames of the next chunk each chunk sees")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        model = FlowModel.from_pretrained(args.model)
    else:
        model = FlowModel(FlowTrainConfig.from_yaml(args.config).model).eval()
    cfg = model.config
    rate, up = cfg.mel_config.frame_rate, cfg.upsample
    g = torch.Generator().manual_seed(0)
    n_tok = int(args.target_seconds * rate) // up
    tp = int(args.prompt_seconds * rate) // up * up
    tokens = torch.randint(0, cfg.vocab_size, (n_tok,), generator=g)
    p_tok = torch.randint(0, cfg.vocab_size, (tp // up,), generator=g)
    p_mel = torch.randn(cfg.mel_config.n_mels, tp, generator=g) - 5.0
    audio = n_tok * up / rate
    kw = dict(steps=args.steps, guidance=args.guidance)
    offline = timed(lambda: model.generate(tokens, p_tok, p_mel, **kw), args.repeats)
    chunked = timed(lambda: model.generate(tokens, p_tok, p_mel, chunk=args.chunk, lookahead=args.lookahead, **kw),
                    args.repeats)
    t0 = time.perf_counter()
    first = None
    for _ in model.stream(tokens, p_tok, p_mel, chunk=args.chunk, lookahead=args.lookahead, **kw):
        first = first or time.perf_counter() - t0
    stream_total = time.perf_counter() - t0
    guidance = cfg.cfm.guidance if args.guidance is None else args.guidance
    print(json.dumps({
        "benchmark": "flow", "model": args.model or args.config,
        "params_M": round(sum(q.numel() for q in model.parameters()) / 1e6, 2),
        "dim": cfg.dim, "layers": cfg.layers, "steps": args.steps, "guidance": guidance,
        "solver": cfg.cfm.solver, "target_s": audio, "prompt_s": tp / rate, "chunk_frames": args.chunk,
        "lookahead_frames": args.lookahead,
        "threads": args.threads, "cpu": platform.processor() or platform.machine(),
        "rtf_offline": round(offline / audio, 4), "rtf_chunked": round(chunked / audio, 4),
        "stream_first_chunk_s": round(first, 3), "stream_rtf": round(stream_total / audio, 4),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
