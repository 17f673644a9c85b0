"""The PyTorch reference rows of `make bench`: the same GPT, trained the same way, in eager
PyTorch (the venv's torch), in float32 and under CPU bf16 autocast.

examples/bench.rs runs this script with one JSON object per line on stdin, each a row to
measure: {"model": GptConfig, "train": TrainConfig, "warmup": steps, "steps": steps} in the
library's serde form. It answers one JSON line per row: {"ms_per_step": .., "tokens_per_sec": ..}.
The model is written here from the same description as src/model/gpt.rs (pre-LayerNorm blocks,
fused q/k/v, scaled_dot_product_attention, the LM head tied or not), the step is nanoGPT's
train.py: forward under autocast, backward, clip, AdamW (decay on 2-D tensors only). Batches are
random token ids: the speed of a step does not depend on which tokens it reads.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        width, hidden = c["n_embd"], c["d_ff"] or 4 * c["n_embd"]
        self.n_head, self.dropout = c["n_head"], c["dropout"]
        self.ln_1 = nn.LayerNorm(width, bias=c["bias"])
        self.c_attn = nn.Linear(width, 3 * width, bias=c["qkv_bias"])
        self.c_proj = nn.Linear(width, width, bias=c["bias"])
        self.ln_2 = nn.LayerNorm(width, bias=c["bias"])
        self.c_fc = nn.Linear(width, hidden, bias=c["bias"])
        self.mlp_proj = nn.Linear(hidden, width, bias=c["bias"])
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU("tanh")}[c["activation"]]
        self.drop = nn.Dropout(c["dropout"])

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return x + self.drop(self.mlp_proj(self.act(self.c_fc(self.ln_2(x)))))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["block_size"], c["n_embd"])
        self.drop = nn.Dropout(c["dropout"])
        self.h = nn.ModuleList(Block(c) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["n_embd"], bias=c["bias"])
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=c["lm_head_bias"])
        if c["tie_weights"]:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.shape[1])))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def measure(row):
    c, t = row["model"], row["train"]
    torch.manual_seed(1337)
    model = GPT(c)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": t["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=t["lr"], betas=(t["beta1"], t["beta2"]))
    bf16 = t.get("precision", "fp32") == "bf16"
    batch, block, accum = t["batch_size"], t["block_size"], t["grad_accum"]

    def step():
        for _ in range(accum):
            x = torch.randint(c["vocab_size"], (batch, block))
            y = torch.randint(c["vocab_size"], (batch, block))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(x, y) / accum
            loss.backward()
        if t["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(row["warmup"]):
        step()
    t0 = time.perf_counter()
    for _ in range(row["steps"]):
        loss = step()
    loss.item()
    secs = (time.perf_counter() - t0) / row["steps"]
    return {"ms_per_step": 1e3 * secs, "tokens_per_sec": accum * batch * block / secs}


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(measure(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
