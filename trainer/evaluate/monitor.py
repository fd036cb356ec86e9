"""``trainer monitor RUN_DIR``: plots and a JSON summary of a run's metrics, with anomalies.

Writes into ``RUN_DIR/monitor/`` (or ``--out``): ``loss.png`` (training and
validation loss, anomalies marked), ``lr.png``, ``grad_norm.png``,
``throughput.png`` (tokens/s and step time), ``memory.png``, each only when its
metric was logged, and ``summary.json``. Safe to run while the run writes its
metrics file: a half-written last line is left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainer.evaluate.anomalies import Thresholds, detect, median_or_none
from trainer.evaluate.metrics_log import MetricsLog, finite, read_metrics

PLOTS = {
    "loss.png": (("loss", "val_loss"), "loss (nats/token)"),
    "lr.png": (("lr",), "learning rate"),
    "grad_norm.png": (("grad_norm",), "gradient norm"),
    "throughput.png": (("tokens_per_s", "step_time_s"), "tokens/s"),
    "memory.png": (("gpu_mem_gb",), "GPU memory (GB)"),
}


def _stats(log: MetricsLog, key: str) -> dict | None:
    steps, values = log.points(key)
    good = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    if not good:
        return None
    best_step, best = min(good, key=lambda p: p[1])
    return {"first": good[0][1], "last": good[-1][1], "last_step": good[-1][0], "min": best, "min_step": best_step,
            "max": max(v for _, v in good), "median": median_or_none([v for _, v in good]), "count": len(values)}


def summarize(log: MetricsLog, t: Thresholds = Thresholds()) -> dict:
    """The JSON summary: counts, per-metric statistics, anomalies and an overall status."""
    anomalies = [a.as_dict() for a in detect(log, t)]
    severities = {a["severity"] for a in anomalies}
    return {
        "metrics_file": log.path,
        "records": len(log.steps),
        "first_step": log.steps[0] if log.steps else None,
        "last_step": log.steps[-1] if log.steps else None,
        "partial_last_line": log.partial_last_line,
        "unreadable_lines": len(log.bad_lines),
        "restarts": log.restarts,
        "ln_vocab": math.log(t.vocab_size),
        "metrics": {key: _stats(log, key) for key in log.series if _stats(log, key)},
        "status": "error" if "error" in severities else "warn" if "warn" in severities else "ok",
        "anomalies": anomalies,
    }


def plot(log: MetricsLog, out_dir: Path, anomalies: list[dict], ln_vocab: float) -> list[str]:
    """Write the PNG plots of the logged metrics; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, (keys, ylabel) in PLOTS.items():
        if not any(finite(log.points(k)[1]) for k in keys):
            continue
        fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
        first_steps, first_values = log.points(keys[0])
        if first_values:
            ax.plot(first_steps, first_values, label=keys[0], linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if name == "loss.png":
            _decorate_loss(ax, log, anomalies, ln_vocab)
        elif len(keys) > 1 and finite(log.points(keys[1])[1]):
            twin = ax.twinx()  # step time on its own axis
            twin.plot(*log.points(keys[1]), color="tab:orange", linewidth=1, label=keys[1])
            twin.set_ylabel(keys[1])
            twin.legend(loc="upper right")
        if name == "lr.png":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        ax.set_title(f"{Path(log.path).parent.name}: {ylabel}")
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(name)
    return written


def _decorate_loss(ax, log: MetricsLog, anomalies: list[dict], ln_vocab: float) -> None:
    val_steps, val_values = log.points("val_loss")
    if val_values:
        ax.plot(val_steps, val_values, "o-", label="val_loss", markersize=3)
    losses = finite(log.points("loss")[1]) + finite(val_values)
    if losses and max(losses) > 0.6 * ln_vocab:
        ax.axhline(ln_vocab, color="grey", linestyle="--", linewidth=1, label="ln(vocab)")
    for a in anomalies:
        ax.axvspan(a["step"] - 0.5, a["last_step"] + 0.5, color="red" if a["severity"] == "error" else "orange",
                   alpha=0.25)


def monitor(run_dir: str | Path, out_dir: str | Path | None = None, t: Thresholds = Thresholds(),
            metrics_file: str = "metrics.jsonl", plots: bool = True) -> dict:
    """Read ``run_dir``'s metrics, write plots and ``summary.json``; returns the summary."""
    run_dir = Path(run_dir)
    log = read_metrics(run_dir / metrics_file if run_dir.is_dir() else run_dir)
    out = Path(out_dir) if out_dir else Path(log.path).parent / "monitor"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(log, t)
    summary["plots"] = plot(log, out, summary["anomalies"], summary["ln_vocab"]) if plots and log.steps else []
    tmp = out / "summary.json.partial"
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "summary.json")  # atomic: a reader never sees half a summary
    summary["out_dir"] = str(out)
    return summary


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    m = summary["metrics"]
    lines = [f"{summary['metrics_file']}: {summary['records']} steps "
             f"({summary['first_step']}-{summary['last_step']})"
             + (", last line still being written" if summary["partial_last_line"] else "")]
    for key in ("loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "gpu_mem_gb"):
        if key in m:
            lines.append(f"  {key}: last {m[key]['last']:.4g} (step {m[key]['last_step']}), "
                         f"min {m[key]['min']:.4g}, max {m[key]['max']:.4g}")
    lines.append(f"status: {summary['status'].upper()}, {len(summary['anomalies'])} anomalies")
    lines += [f"  [{a['severity']}] {a['kind']}: {a['message']}" for a in summary["anomalies"]]
    return "\n".join(lines)
