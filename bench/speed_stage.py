"""``bench/trainer_speed.py --stage speed``: the peers and our variants in one call, one table.

Every worker starts at once and does its CPU work in parallel (imports, the random base
checkpoint); the GPU is then taken in turns (``bench/gpu_turns.py``): the NeMo driver
(``bench/speed_driver.py``, all our variants in one process) first once it is ready, the
peer rows (``bench/peer_rows.py``, one process per framework or Unsloth row) before and
after it. Peers run with ``PYTHONPATH=--peer-site`` (their wheels, never NeMo's), the
driver with ``--nemo-site`` and the repository. A driver that dies or overruns
``--variant-timeout`` on one variant is replaced by a fresh one for the variants left,
while ``--budget-s`` allows. Rows land in ``OUT/rows.jsonl`` as they finish; at the end
(or at the budget) :func:`print_report` prints one compact table, the kernel breakdown of
``--profile-variant`` and the start-up times, and ``OUT/summary.json`` holds everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpu_turns import Turns
from rows_file import append_row, read_rows

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_ROWS = "hf-lora-mb8,liger-lora-mb16,unsloth-lora-mb8,unsloth-lora-mb8-offload,liger-full-mb8,unsloth-full-mb8"
LORA_TFLOP, FULL_TFLOP, PEAK_TFLOPS, TOKENS = 164.7, 228.9, 790.0, 65536


def peer_groups(rows: list[str]) -> list[tuple[str, list[str]]]:
    """One process for the HF rows, one for the Liger rows, one per Unsloth row.

    >>> peer_groups(["hf-lora-mb8", "unsloth-lora-mb8", "liger-lora-mb16", "unsloth-full-mb8", "liger-full-mb8"])
    [('peer-hf', ['hf-lora-mb8']), ('peer-liger', ['liger-lora-mb16', 'liger-full-mb8']), ('peer-unsloth-lora-mb8', ['unsloth-lora-mb8']), ('peer-unsloth-full-mb8', ['unsloth-full-mb8'])]
    """
    groups: dict[str, list[str]] = {}
    for row in rows:
        framework = row.split("-")[0]
        groups.setdefault(f"peer-{row}" if framework == "unsloth" else f"peer-{framework}", []).append(row)
    order = {"peer-hf": 0, "peer-liger": 1}
    return sorted(groups.items(), key=lambda kv: order.get(kv[0], 2))


def tokenizer_dir() -> str | None:
    """The built-in Qwen2.5 tokenizer's HF directory (Unsloth loads one beside the model)."""
    try:
        sys.path.insert(0, str(REPO))
        from jpcorpus.tokenizer import load_tokenizer

        return str(load_tokenizer("qwen2.5").hf_dir)
    except Exception as exc:  # noqa: BLE001  (peers without a tokenizer still run the HF rows)
        print(f"tokenizer for the peer base not available ({exc}); Unsloth rows may fail", flush=True)
        return None


class Stage:
    def __init__(self, args, out: Path):
        self.args, self.out = args, out
        self.turn_dir = out / "turns"
        self.procs: dict[str, subprocess.Popen] = {}
        self.turns = Turns(self.turn_dir, [])
        self.t0 = time.time()
        self.restarts = 0
        self.variants = [v for v in args.variants.split(",") if v]
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: list[str], env: dict, cwd: Path, first: bool = False) -> None:
        log = open(self.logs / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                            start_new_session=True)
        self.turns.add(name, first=first)

    def start_driver(self, variants: list[str]) -> None:
        a = self.args
        name = f"nemo-{self.restarts + 1}"
        self.restarts += 1
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (a.nemo_site, str(REPO)) if p),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(HERE / "speed_driver.py"), "--variants", ",".join(variants), "--out", str(self.out),
               "--shards", a.shards, "--steps", str(a.speed_steps), "--turn-dir", str(self.turn_dir), "--name", name,
               "--run-root", a.run_dir + "_speed"]
        if a.profile_variant:
            cmd += ["--profile-variant", a.profile_variant]
        if a.sync_trace_variant:
            cmd += ["--sync-trace-variant", a.sync_trace_variant]
        self.spawn(name, cmd, env, REPO, first=True)

    def start_peers(self, tok_dir: str | None) -> None:
        a = self.args
        rows = [r for r in a.peer_rows.split(",") if r]
        if not rows:
            return
        if not Path(a.peer_site).is_dir():
            print(f"peer rows skipped: {a.peer_site} is missing (install the wheels of pipelines/peer_wheelhouse.sh "
                  f"there first)", flush=True)
            return
        cwd = self.out / "peer_cwd"  # Unsloth writes its compiled cache into the working directory
        cwd.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=a.peer_site, PYTHONUNBUFFERED="1")
        for name, group in peer_groups(rows):
            cmd = [sys.executable, str(HERE / "peer_rows.py"), "--rows", ",".join(group), "--shards", a.shards,
                   "--out", str(self.out), "--steps", str(a.speed_steps), "--turn-dir", str(self.turn_dir),
                   "--name", name, "--base", a.peer_base]
            if tok_dir:
                cmd += ["--tokenizer-dir", tok_dir]
            self.spawn(name, cmd, env, cwd)

    def variants_left(self) -> list[str]:
        done = {r["row"] for r in read_rows(self.out / "rows.jsonl") if r.get("kind") == "ours"}
        return [v for v in self.variants if v not in done]

    def kill(self, name: str) -> None:
        try:
            os.killpg(self.procs[name].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs[name].wait()

    def watch_driver(self, name: str) -> None:
        """Kill a driver stuck on one variant; note the variant as timed out."""
        progress = self.out / f"{name}.progress"
        if not progress.is_file() or self.procs[name].poll() is not None:
            return
        try:
            state = json.loads(progress.read_text())
        except (json.JSONDecodeError, OSError):
            return
        if time.time() - state["since"] > self.args.variant_timeout:
            self.kill(name)
            append_row(self.out / "rows.jsonl", {"row": state["variant"], "kind": "ours", "process": name,
                                                 "error": f"timed out after {self.args.variant_timeout} s"})
            progress.unlink(missing_ok=True)

    def run(self) -> None:
        a = self.args
        if self.variants:
            self.start_driver(self.variants)
        self.start_peers(tokenizer_dir() if any(r.startswith("unsloth") for r in a.peer_rows.split(",")) else None)
        deadline = self.t0 + a.budget_s
        try:
            while True:
                alive = {n for n, p in self.procs.items() if p.poll() is None}
                for name in [n for n in alive if n.startswith("nemo-")]:
                    self.watch_driver(name)
                alive = {n for n, p in self.procs.items() if p.poll() is None}
                if not any(n.startswith("nemo-") for n in alive) and self.variants_left():
                    if time.time() < deadline - 150 and self.restarts < 3:
                        print(f"driver gone with {self.variants_left()} left: starting a fresh one", flush=True)
                        self.start_driver(self.variants_left())
                        alive.add(f"nemo-{self.restarts}")
                granted = self.turns.step(alive)
                if granted:
                    print(f"[{time.time() - self.t0:6.1f}s] GPU -> {granted}", flush=True)
                if not alive:
                    break
                if time.time() > deadline:
                    print(f"budget of {a.budget_s} s reached: stopping {sorted(alive)}", flush=True)
                    for name in alive:
                        self.kill(name)
                    break
                time.sleep(0.2)
        except BaseException:  # the stage failing must not leave workers holding the GPU
            for name in [n for n, p in self.procs.items() if p.poll() is None]:
                self.kill(name)
            raise
        self.granted = [(n, round(t - self.t0, 1)) for n, t in self.turns.granted]
        self.note_missing()

    def note_missing(self) -> None:
        """A row for everything asked for that has none: the worker's exit code and last log line."""
        have = {r["row"] for r in read_rows(self.out / "rows.jsonl")}
        wanted = [(row, name) for name, group in peer_groups([r for r in self.args.peer_rows.split(",") if r])
                  for row in group] + [(v, "nemo") for v in self.variants]
        for row, name in wanted:
            if row in have:
                continue
            procs = [(n, p) for n, p in self.procs.items() if n == name or n.startswith(name + "-")]
            code = procs[-1][1].returncode if procs else None
            log = self.logs / f"{procs[-1][0]}.log" if procs else None
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log and log.is_file() else []
            append_row(self.out / "rows.jsonl", {"row": row, "kind": "ours" if name == "nemo" else "peer",
                                                 "error": f"not measured (worker exit {code}): {' '.join(tail)[:300]}"})


def mfu(row: dict) -> float:
    return (FULL_TFLOP if row.get("full") else LORA_TFLOP) / row["s_per_step"] / PEAK_TFLOPS


def print_report(rows: list[dict], out: Path, profile_variant: str | None, meta: dict) -> dict:
    """The compact table (LoRA rows, then full-parameter rows), goals, breakdown, start-up times."""
    measured = [r for r in rows if r.get("s_per_step") and r.get("kind") in ("peer", "ours")]
    failed = [r for r in rows if r.get("error")]
    verdict = {}
    print(f"\n{'run':<32}{'s/step':>7}{'tok/s':>9}{'MFU':>6}{'GiB':>6}{'loss':>8}{'x peer':>7}")
    for full in (False, True):
        group = [r for r in measured if bool(r.get("full")) == full]
        peers = [r for r in group if r["kind"] == "peer"]
        best_peer = min(peers, key=lambda r: r["s_per_step"]) if peers else None
        print(f"-- {'full-parameter' if full else 'LoRA r16 q,k,v,o'}"
              + (f" (fastest peer: {best_peer['row']} {best_peer['s_per_step']:.3f} s)" if best_peer else ""))
        for r in sorted(group, key=lambda r: (r["kind"] != "peer", r["s_per_step"])):
            ratio = f"{best_peer['s_per_step'] / r['s_per_step']:>7.2f}" if best_peer else f"{'-':>7}"
            loss = f"{r['loss_last']:>8.3f}" if r.get("loss_last") is not None else f"{'-':>8}"
            print(f"{('' if r['kind'] == 'peer' else '* ') + r['row']:<32}{r['s_per_step']:>7.3f}"
                  f"{TOKENS / r['s_per_step']:>9,.0f}{mfu(r):>6.1%}{r.get('peak_gib') or 0:>6.1f}{loss}{ratio}")
        ours = [r for r in group if r["kind"] == "ours"]
        if best_peer and ours:
            goal = 1.3 if full else 1.5
            fits = [r for r in ours if (r.get("peak_gib") or 99) <= 16]
            best = min(fits or ours, key=lambda r: r["s_per_step"])
            verdict["full" if full else "lora"] = {"best": best["row"], "x_peer": round(best_peer["s_per_step"]
                                                                                        / best["s_per_step"], 3),
                                                   "goal": goal}
            print(f"   goal {goal}x -> <= {best_peer['s_per_step'] / goal:.3f} s/step; best <= 16 GiB: "
                  f"{best['row']} {best['s_per_step']:.3f} s = {best_peer['s_per_step'] / best['s_per_step']:.2f}x")
            if not full:
                slowest_needed = min(r["s_per_step"] for r in peers)
                small = [r for r in ours if (r.get("peak_gib") or 99) <= 4]
                if small:
                    low = min(small, key=lambda r: r["s_per_step"])
                    verdict["low_memory"] = {"best": low["row"], "s_per_step": low["s_per_step"],
                                             "beats_every_peer": low["s_per_step"] < slowest_needed}
                    print(f"   <= 4 GiB: {low['row']} {low['s_per_step']:.3f} s at {low['peak_gib']:.1f} GiB, "
                          f"{'beats' if low['s_per_step'] < slowest_needed else 'does NOT beat'} every peer row")
    for r in failed:
        print(f"FAILED {r['row']}: {r['error'][:160]}")
    check = next((r for r in rows if r.get("row") == "_lora_kernel_check"), None)
    if check:
        print("fused LoRA kernel check on this GPU:", {k: v for k, v in check.items() if k not in ("row", "kind")})
    paths = {r["row"]: r["attention_paths"] for r in rows if r.get("attention_paths")}
    if paths:
        print("attention kernels asked for (eager calls):", json.dumps(paths)[:400])
    profiled = [(name, prof) for name in (profile_variant or "").split(",") if name
                for prof in sorted(out.glob(f"{name}_profile_steps*.txt"))]
    for name, prof in profiled:
        text = prof.read_text().splitlines()
        start = next((i for i, line in enumerate(text) if line.startswith("kernel time by category")), None)
        print(f"profile of {name}: {text[0]}")
        if start is not None:
            print("\n".join(text[start:start + 16]).split("\n\n")[0])
    for trace in sorted(out.glob("*_sync_trace_steps*.txt")):
        print(f"sync trace of {trace.name.split('_sync_trace_steps')[0]}:")
        print("\n".join(trace.read_text().splitlines()[:40]))
    starts = {r.get("process") or r["row"]: {k: r[k] for k in ("import_s", "base_s", "waited_s", "setup_s",
                                                                 "first_step_s", "wall_s") if r.get(k) is not None}
              for r in rows if r.get("kind") in ("peer", "ours")}
    print("start-up and wall seconds:", json.dumps(starts)[:1500])
    print(f"GPU turns: {meta.get('granted')}; stage {meta.get('stage_s')} s")
    return verdict


def run_speed_stage(args, out: Path, summary: dict) -> None:
    args.shards = str(Path(args.shards).resolve())
    for extra in args.peers_json or []:  # peer rows measured by an earlier call
        for r in read_rows(Path(extra)):
            if r.get("kind") == "peer":
                append_row(out / "rows.jsonl", dict(r, row=r["row"] + " (earlier call)"))
    stage = Stage(args, out)
    stage.run()
    rows = read_rows(out / "rows.jsonl")
    meta = {"granted": stage.granted, "stage_s": round(time.time() - stage.t0, 1)}
    summary.update(rows=rows, **meta)
    summary["verdict"] = print_report(rows, out, args.profile_variant, meta)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
