"""Continue training an `llm export` folder on several processes with PyTorch's
DistributedDataParallel (DDP), then save it where `llm` reads it back.

    llm export --run-dir runs/mine --out runs/mine-hf
    torchrun --nproc_per_node 2 scripts/train_ddp.py --model runs/mine-hf \
        --data input.txt --steps 200 --grad-accum 2 --out runs/mine-hf-ddp   # 2 CPU processes (gloo)
    torchrun --nproc_per_node 8 scripts/train_ddp.py ...         # 8 GPUs, one process each (NCCL)
    llm sample --model runs/mine-hf-ddp                          # and back

Each process holds the whole model and draws its own batches; after the last micro-batch's
backward pass DDP averages the gradients of all processes (an all-reduce), so every process
takes the same optimizer step and the copies never drift apart (checked after the first step).

Plain DDP rather than `accelerate` or `transformers.Trainer`: the loop below is the loop of
`llm train` (and nanoGPT's `train.py`) stage by stage, with the export's own settings. Trainer
would hide the schedule and the weight-decay groups behind its defaults (its cosine and its
decay rule are not ours), and accelerate saves a few lines at the price of a config layer.

The settings come from the folder's `llm_training.json` (what `llm export` writes from the
run's checkpoint): learning rate, warmup then cosine to `min_lr` (over --steps), AdamW's
betas, epsilon and weight decay (2-D tensors only), gradient clipping, the micro-batch, the
block size and the accumulation. The global batch is the export's batch x accumulation, the
accumulation split across the processes (nanoGPT's rule), so 1 or 8 processes take the same
steps. Flags override any of them.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoTokenizer, GPT2LMHeadModel

TRAINING_FILE = "llm_training.json"  # written by `llm export`, and by this script
OUR_TOKENIZER_FILE = "llm_tokenizer.json"  # the course's format (character tokenizers only here)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an `llm export` folder (or any GPT-2 folder)")
    p.add_argument("--data", required=True, help="the training text: the first 90%% of its tokens train")
    p.add_argument("--out", required=True, help="where to save the result")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps to take")
    for name, kind in [("lr", float), ("min-lr", float), ("warmup-steps", int), ("weight-decay", float),
                       ("beta1", float), ("beta2", float), ("grad-clip", float), ("batch-size", int),
                       ("block-size", int), ("grad-accum", int), ("seed", int)]:
        p.add_argument(f"--{name}", type=kind, help=f"default: the export's {name.replace('-', '_')}")
    p.add_argument("--log-interval", type=int, default=10)
    return p.parse_args()


def settings(args):
    """The export's training settings, overridden by the flags given."""
    path = os.path.join(args.model, TRAINING_FILE)
    found = {}
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)["train"]
    s = {"lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 0, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
         "eps": 1e-8, "grad_clip": 1.0, "batch_size": 8, "block_size": None, "grad_accum": 1, "seed": 1337,
         "lr_decay": "cosine"}
    s.update({k: v for k, v in found.items() if k in s})
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    s["steps"] = args.steps
    if s["lr_decay"] != "none":
        s["lr_decay"] = "cosine"  # ours ends at a given step (cosine_until): here, at --steps
    return s


def load_tokenizer(folder):
    """encode(text) -> ids, and save(out): the folder's byte-level BPE (tokenizer.json, read by
    AutoTokenizer) or, for a character model, the course's own file (a sorted set of characters)."""
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return (lambda text: tokenizer(text)["input_ids"]), tokenizer.save_pretrained
    with open(os.path.join(folder, OUR_TOKENIZER_FILE)) as f:
        ours = json.load(f)
    if ours.get("kind") != "char":
        raise SystemExit(f"{folder}: no tokenizer.json, and its {OUR_TOKENIZER_FILE} is not a character tokenizer")
    ids = {c: i for i, c in enumerate(ours["chars"])}
    source = os.path.join(folder, OUR_TOKENIZER_FILE)
    return (lambda text: [ids[c] for c in text]), (lambda out: shutil.copy(source, out))


def lr_at(step, s):
    """`llm train`'s schedule (`LrSchedule::lr_at`): linear warmup, then a half cosine that
    reaches min_lr at step --steps; a constant lr after warmup if the export's lr_decay is none."""
    warmup, decay = s["warmup_steps"], s["steps"]
    if step < warmup:
        return s["lr"] * (step + 1) / (warmup + 1)
    if s["lr_decay"] == "none":
        return s["lr"]
    if decay <= warmup:
        return s["min_lr"]
    ratio = (step - warmup) / (decay - warmup)
    return s["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (s["lr"] - s["min_lr"])


def adamw(model, s):
    """`llm train`'s AdamW: weight decay on the 2-D tensors (matrices, embeddings) only;
    model.parameters() lists the tied wte/lm_head once."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": s["weight_decay"]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"])


def main():
    args = parse_args()
    # --- processes: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; gloo on CPU, NCCL on GPUs
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)  # before the process group, so NCCL knows its GPU
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    master = rank == 0
    log = print if master else (lambda *a, **k: None)

    # --- settings and data: the same on every process
    s = settings(args)
    model = GPT2LMHeadModel.from_pretrained(args.model).to(device)
    s["block_size"] = s["block_size"] or model.config.n_positions
    if s["grad_accum"] % world:
        raise SystemExit(f"grad_accum {s['grad_accum']} must be a multiple of the {world} processes "
                         "(the global batch stays the export's): give --grad-accum")
    accum = s["grad_accum"] // world
    encode, save_tokenizer = load_tokenizer(args.model)
    with open(args.data) as f:
        ids = torch.tensor(encode(f.read()), dtype=torch.long)
    split = int(0.9 * len(ids))
    train, valid = ids[:split], ids[split:]
    B, T = s["batch_size"], s["block_size"]
    if len(valid) <= T:
        raise SystemExit(f"{args.data}: its last 10% is {len(valid)} tokens, not more than a window of {T}: "
                         "give more text or a smaller --block-size")
    log(f"{world} process(es) on {device.type}; global batch {B} x {accum} accumulation x {world} processes "
        f"= {B * accum * world} sequences of {T} tokens = {B * accum * world * T} tokens per step")

    def batch(data, generator):
        starts = torch.randint(len(data) - T, (B,), generator=generator)  # y needs one token more
        x = torch.stack([data[i:i + T] for i in starts])
        y = torch.stack([data[i + 1:i + T + 1] for i in starts])
        return x.to(device), y.to(device)

    def loss_of(net, x, y):
        logits = net(x).logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    # A fixed validation batch, the same on every process, to see the loss go down.
    fixed = batch(valid, torch.Generator().manual_seed(s["seed"]))
    model.eval()
    with torch.no_grad():
        before = loss_of(model, *fixed).item()
    model.train()

    # --- the model wrapped by DDP, and AdamW with weight decay on the 2-D tensors only
    ddp = DDP(model, device_ids=[device.index] if cuda else None)
    optimizer = adamw(model, s)
    draws = torch.Generator().manual_seed(s["seed"] + 1 + rank)  # each process its own batches
    torch.manual_seed(s["seed"] + 1 + rank)  # and its own dropout

    t0 = time.time()
    for step in range(s["steps"]):
        # --- the learning rate of this step
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s)
        # --- forward and backward over the micro-batches; DDP all-reduces on the last one
        for micro in range(accum):
            ddp.require_backward_grad_sync = micro == accum - 1
            x, y = batch(train, draws)
            loss = loss_of(ddp, x, y) / accum
            loss.backward()
        # --- clip, step, zero
        if s["grad_clip"]:  # None (the export's "no clipping") or 0: off
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # --- the copies agree: every process took the same step
        if step == 0:  # a tensor at a time: the largest and smallest of each entry over the processes
            spread = 0.0
            for p in model.parameters():
                high, low = p.detach().clone(), p.detach().clone()
                dist.all_reduce(high, op=dist.ReduceOp.MAX)
                dist.all_reduce(low, op=dist.ReduceOp.MIN)
                spread = max(spread, (high - low).max().item())
            log(f"after step 1 the {world} processes' weights differ by at most {spread:.3g}")
            if spread != 0:
                raise SystemExit("the processes' weights differ after a step: the all-reduce failed")
        if master and (step % args.log_interval == 0 or step == s["steps"] - 1):
            log(f"step {step + 1}/{s['steps']}: loss {loss.item() * accum:.4f} (rank 0's last micro-batch), "
                f"lr {lr_at(step, s):.3g}")
    elapsed = time.time() - t0
    log(f"{s['steps'] / elapsed:.2f} steps/s ({elapsed:.1f} s for {s['steps']} steps)")

    # --- the fixed batch again, and the result saved where `llm` reads it
    model.eval()
    with torch.no_grad():
        after = loss_of(model, *fixed).item()
    log(f"fixed validation batch: loss {before:.4f} before, {after:.4f} after")
    if master:
        model.save_pretrained(args.out)
        save_tokenizer(args.out)
        with open(os.path.join(args.out, TRAINING_FILE), "w") as f:
            json.dump({"train": s, "continued_from": os.path.abspath(args.model), "processes": world}, f, indent=2)
        log(args.out)
    dist.barrier()  # every process is done: nothing is left to say to each other


def exit_now():
    """Leave at once, the output flushed, without tearing the process group down: past the
    barrier there is nothing left to do, and the teardown can hang (pytorch/pytorch#75097;
    `make test` once saw torchrun run past its minute after everything was saved)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    exit_now()
