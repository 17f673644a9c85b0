"""Kernel-level tests: the course's Jupyter kernel as a learner uses it, driven through
jupyter_client like JupyterLab drives it.

    .venv/bin/python tests/kernel.py    # `make test` runs it after the chapters

- ■ during training: the cell returns within the grace period, says where it stopped, and
  the next cell still has the model, the trainer and its history;
- Run All stops at an error: with [a cell that fails, a cell that prints] queued, the second
  is answered `aborted` and prints nothing (and runs when `stop_on_error` is false); a cell
  sent as soon as the kernel is idle after the error runs;
- a loop that ignores ■ is still stopped after the grace period, the cell says the variables
  were lost, and the kernel stays usable;
- a failed assert prints its message without a backtrace, and the cell is an error (as is
  one whose `?` returns an error);
- a live figure is sent while the cell runs (`display_data`), then redrawn in place
  (`update_display_data` with the same display id);
- a training cell with `LiveReport` shows its progress line from the first step (a text
  display redrawn in place), the plot under it with its first point, and the estimates'
  lines under the plot;
- execution counts start at [1]; typing `model` shows a short summary of the GPT; a cell
  that reads a `model` that does not exist says "cannot find value `model`"; a failed
  assert prints its message and nothing of the generated code;
- it prints what a trivial cell (`1 + 1`) costs once the library is loaded (a measurement
  for the README, not a timed check).

It uses the chapters' kernel spec and build folder, so the library is already compiled
when the chapters ran first. Every wait has a timeout: a hung kernel fails the test.
"""

import sys
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parent.parent
GRACE = 5.0  # the kernel's EVCXR_INTERRUPT_GRACE_SECS default
CELL_TIMEOUT = 600  # the first cell compiles the library when the build folder is cold


class Kernel:
    def __init__(self):
        self.km, self.kc = start_new_kernel(kernel_name="llm-from-scratch", startup_timeout=120, cwd=str(ROOT))

    def send(self, code, **kwargs):
        return self.kc.execute(code, **kwargs)

    def reply(self, msg_id, timeout=CELL_TIMEOUT):
        """The execute_reply to msg_id (other replies are not expected here)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    def outputs(self, *msg_ids, timeout=CELL_TIMEOUT):
        """Every iopub message of the requests msg_ids, until the kernel is idle after each."""
        deadline, messages, busy = time.monotonic() + timeout, [], set(msg_ids)
        while busy:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            parent = msg["parent_header"].get("msg_id")
            if parent not in msg_ids:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                busy.discard(parent)
            else:
                messages.append(msg)
        return messages

    def wait_for(self, msg_id, needle, timeout=CELL_TIMEOUT):
        """Read the request's iopub messages until one prints `needle`; return them."""
        deadline, messages = time.monotonic() + timeout, []
        while needle not in text(messages):
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                messages.append(msg)
        return messages

    def run(self, code, **kwargs):
        """One cell, sent the moment the kernel is idle after the last one (as a notebook
        runner sends them): a request sent after an error was seen is never aborted."""
        msg_id = self.send(code, **kwargs)
        reply = self.reply(msg_id)
        return reply, self.outputs(msg_id)

    def stop(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def text(messages, name=None):
    """What the cell printed (stdout and stderr, or one of them) and its error tracebacks."""
    out = []
    for m in messages:
        if m["msg_type"] == "stream" and name in (None, m["content"]["name"]):
            out.append(m["content"]["text"])
        elif m["msg_type"] == "error":
            out.extend(line + "\n" for line in m["content"]["traceback"])
    return "".join(out)


def result(messages):
    """The cell's value as text (its execute_result's text/plain), or None when it has none."""
    shown = [m["content"]["data"].get("text/plain") for m in messages if m["msg_type"] == "execute_result"]
    return shown[0] if shown else None


def check(ok, what, detail=""):
    if not ok:
        raise AssertionError(f"{what}\n{detail}")
    print(f"[kernel] ok: {what}", flush=True)


def main():
    k = Kernel()
    try:
        reply, out = k.run(f':dep llm_from_scratch = {{ path = "{ROOT}", default-features = false }}')
        check(reply["status"] == "ok", "the library loads", text(out))
        check(reply["execution_count"] == 1, f"the first cell is [1] (was [{reply['execution_count']}])")
        reply, out = k.run("use llm_from_scratch::prelude::*;\nlet missing = model.forward;")
        check(reply["status"] == "error" and "cannot find value `model`" in text(out)
              and "found module" not in text(out), "a lost `model` is a missing value, not a module", text(out))
        reply, out = k.run(
            "use llm_from_scratch::prelude::*;\n"
            'let text = "the quick brown fox jumps over the lazy dog. ".repeat(200);\n'
            "let tok = CharTokenizer::from_text(&text);\n"
            "let data = TokenData::new(&tok.encode(&text)?, 0.9)?;\n"
            "let model = Gpt::new(GptConfig { vocab_size: tok.vocab_size(), block_size: 16, n_layer: 1, n_head: 2,\n"
            "    n_embd: 32, dropout: 0.0, ..GptConfig::cpu_small() }, Device::Cpu)?;\n"
            "let mut trainer = Trainer::new(&model, TrainConfig { steps: 10_000_000, batch_size: 4, block_size: 16,\n"
            "    eval_interval: 10_000_000, eval_iters: 1, ..TrainConfig::default() })?;"
        )
        check(reply["status"] == "ok", "a model and a trainer", text(out))
        reply, out = k.run("model")
        summary = result(out) or ""
        check(reply["status"] == "ok" and summary.startswith("Gpt: ") and " parameters on Cpu" in summary
              and len(summary.splitlines()) <= 4 and "VarStore" not in summary,
              "typing `model` shows a short summary", summary)

        times, values = [], []
        for _ in range(5):
            t0 = time.monotonic()
            reply, out = k.run("1 + 1")
            times.append(time.monotonic() - t0)
            values.append((reply["status"], result(out)))
        check(values == [("ok", "2")] * 5, "a trivial cell answers 2", str(values))
        print(f"[kernel] measured: `1 + 1` answers in {sorted(times)[2]:.2f} s (median of 5) with the library loaded",
              flush=True)

        # The live report: progress from the first step, the plot under it, the lines under that.
        reply, out = k.run(
            'let mut live = LiveReport::new("live");\n'
            "let mut short = Trainer::new(&model, TrainConfig { steps: 40, batch_size: 4, block_size: 16,\n"
            "    eval_interval: 20, eval_iters: 1, ..TrainConfig::default() })?;\n"
            "short.run(&model, &data, |e| live.show(e))?;"
        )
        shown = [(m["msg_type"], m["content"].get("transient", {}).get("display_id"), m["content"].get("data", {}))
                 for m in out if m["msg_type"] in ("display_data", "update_display_data")]
        kinds = [("image" if "image/png" in d else "text") for _, _, d in shown]
        texts = [d["text/plain"] for _, _, d in shown if "image/png" not in d]
        check(reply["status"] == "ok" and shown[:2] and [m for m, _, _ in shown[:2]] == ["display_data", "display_data"]
              and kinds[:2] == ["text", "image"], "the progress line is displayed first, the plot under it", str(kinds))
        check(any(t.startswith("step 1/40 │ loss ") for t in texts)
              and all(i == shown[0][1] for (m, i, d) in shown if "image/png" not in d),
              "... the progress line says step 1 and is redrawn in place", str(texts))
        first_line = next(i for i, m in enumerate(out) if m["msg_type"] == "stream" and "step     0 │" in m["content"]["text"])
        first_plot = next(i for i, m in enumerate(out) if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"])
        check(first_plot < first_line, "... and the first estimate's line sits under the plot, as the later ones do")

        # (a) ■ during training keeps the session.
        msg_id = k.send("trainer.run(&model, &data, |e| println!(\"{e}\"))?;")
        out = k.wait_for(msg_id, "step 0:")  # the first estimate: training has started
        time.sleep(2)
        t0 = time.monotonic()
        k.km.interrupt_kernel()
        reply = k.reply(msg_id, timeout=60)
        waited = time.monotonic() - t0
        out += k.outputs(msg_id)
        check(reply["status"] == "ok", "an interrupted training cell returns normally", text(out))
        check(waited < GRACE, f"... within the grace period ({waited:.2f} s < {GRACE} s)")
        printed = text(out)
        check("stopped at step " in printed and " of 10000000" in printed, "... and says where it stopped", printed)
        stopped_at = int(printed.split("stopped at step ")[1].split()[0])
        reply, out = k.run('println!("{} {}", trainer.step(), trainer.history().points.len());')
        check(
            reply["status"] == "ok" and text(out, "stdout").split() == [str(stopped_at), "1"],
            f"the next cell reads the trainer (step {stopped_at}) and its history",
            text(out),
        )
        reply, out = k.run("let (logits, _) = model.forward(&Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu)), None, false)?;\n"
                           'println!("{:?}", logits.size());')
        check(reply["status"] == "ok" and "[1, 4, " in text(out), "... and the model", text(out))

        # (b) Run All stops at the first error.
        failing = k.send('let broken: i32 = "not a number";')
        queued = k.send('println!("queued after the error");')
        first, second = k.reply(failing), k.reply(queued, timeout=60)
        printed = text(k.outputs(failing, queued))
        check(first["status"] == "error" and "mismatched types" in printed, "a cell that fails to compile is an error",
              printed)
        check(second["status"] == "aborted", "the cell queued after it is aborted", str(second))
        check("queued after the error" not in printed, "... and prints nothing", printed)
        reply, out = k.run('println!("sent once the error was seen");')
        check(reply["status"] == "ok" and "sent once the error was seen" in text(out),
              "a cell sent once the failed one is idle runs", text(out))
        failing = k.send('let broken: i32 = "not a number";', stop_on_error=False)
        queued = k.send('println!("runs anyway");')
        k.reply(failing)
        reply = k.reply(queued, timeout=60)
        printed = text(k.outputs(failing, queued))
        check(reply["status"] == "ok" and "runs anyway" in printed, "without stop_on_error the next cell runs", printed)

        # A failed assert: its message, no backtrace.
        reply, out = k.run('assert!(1 + 1 == 3, "arithmetic is broken");')
        printed = text(out)
        check(reply["status"] == "error" and "arithmetic is broken" in printed, "a failed assert says why", printed)
        check("stack backtrace" not in printed, "... without a backtrace", printed)
        check("panicked at" not in printed and "RUST_BACKTRACE" not in printed and not printed.startswith("\n"),
              "... and without the generated code's panic line or hint", printed)

        reply, out = k.run('for i in 0..2 { println!("line {i}"); }')
        check(reply["status"] == "ok" and not [m for m in out if m["msg_type"] == "execute_result"],
              "a cell ending in a loop shows no ()", str(out))

        reply, out = k.run('let missing = std::fs::read_to_string("/no/such/file").map_err(|e| Error::Config(e.to_string()))?;')
        check(reply["status"] == "error" and "No such file" in text(out), "a cell whose ? returns an error is an error", text(out))

        # Live figures: shown at once, then redrawn in place.
        reply, out = k.run(
            'let fig = plot::line_chart("live", "x", "y", &[plot::Series { label: "a".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] }])?;\n'
            "let mut live = plot::LiveDisplay::new();\n"
            "live.show(&fig);\n"
            "live.show(&fig);"
        )
        shown = [(m["msg_type"], m["content"].get("transient", {}).get("display_id")) for m in out
                 if m["msg_type"] in ("display_data", "update_display_data")]
        check(
            reply["status"] == "ok" and [t for t, _ in shown] == ["display_data", "update_display_data"]
            and shown[0][1] is not None and shown[0][1] == shown[1][1],
            "a live figure is displayed, then updated under the same display id",
            str(shown),
        )
        check(all("image/png" in m["content"]["data"] for m in out if m["msg_type"].endswith("display_data")),
              "... as a PNG")

        # (c) A loop that ignores ■ is stopped after the grace period; the kernel stays usable.
        msg_id = k.send('println!("looping");\nlet mut n: u64 = 0;\nloop { n = std::hint::black_box(n.wrapping_add(1)); }')
        out = k.wait_for(msg_id, "looping")
        time.sleep(1)
        t0 = time.monotonic()
        k.km.interrupt_kernel()
        reply = k.reply(msg_id, timeout=GRACE + 60)
        waited = time.monotonic() - t0
        printed = text(out + k.outputs(msg_id))
        check(reply["status"] == "error", "a loop that ignores the interrupt is stopped", printed)
        check(GRACE - 0.5 < waited < GRACE + 10, f"... after the grace period ({waited:.1f} s)")
        check("variables of this session are lost" in printed, "... and the cell says the variables are lost", printed)
        reply, out = k.run('println!("still here: {}", 6 * 7);')
        check(reply["status"] == "ok" and "still here: 42" in text(out), "the kernel runs the next cell", text(out))
        reply, out = k.run('println!("{}", trainer.step());')
        check(reply["status"] == "error" and "cannot find value `trainer`" in text(out),
              "... in a new session without the old variables", text(out))
    finally:
        k.stop()
    print("[kernel] all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
