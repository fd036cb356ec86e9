"""Click commands of the evaluation package; the ``trainer`` group registers them.

Each command parses its options, calls one library function and prints. Heavy
imports (torch, transformers, matplotlib) happen inside the library functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jpcorpus.errors import EXIT_STATUS_HELP, ConventionCommand


def _parse_texts(values: tuple[str, ...]) -> dict[str, str]:
    texts = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r} is not NAME=PATH (e.g. ja=valid.jsonl)", param_hint="--text")
        if name in texts:
            raise click.BadParameter(f"name {name!r} given twice", param_hint="--text")
        texts[name] = path
    return texts


@click.command("eval", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--text", "texts", multiple=True, metavar="NAME=PATH",
              help="Held-out text: JSONL (field 'text', .gz/.zst too) or a .bin/.idx shard prefix. Repeatable.")
@click.option("--jcqa", type=click.Path(exists=True, dir_okay=False), help="JCommonsenseQA JSONL (JGLUE v1.3).")
@click.option("--jcqa-format", type=click.Choice(["lm-eval", "swallow", "native"]), default="native",
              show_default=True, help="lm-eval: lm-evaluation-harness's ja_leaderboard_jcommonsenseqa (3-shot); "
              "swallow: the Swallow leaderboard's llm-jp-eval 4-shot; native: this project's short prompt.")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False),
              help="Base model directory, evaluated on the same data for a side-by-side table.")
@click.option("--fewshot", type=int, help="JCQA solved examples per question [default: 3 lm-eval, 4 swallow, 0 native].")
@click.option("--fewshot-file", type=click.Path(exists=True, dir_okay=False),
              help="JCQA examples come from here: the train split for lm-eval/swallow (drawn as they draw them); "
              "native takes its first records (default: the first records of --jcqa, then not scored).")
@click.option("--tasks", "tasks", metavar="NAMES",
              help="lm-evaluation-harness tasks or groups, comma-separated (e.g. japanese_leaderboard,hellaswag); "
              "needs the eval-harness extra.")
@click.option("--task-data", type=click.Path(exists=True, file_okay=False),
              help="Local task datasets, one folder per task (DIR/ja_leaderboard_jcommonsenseqa/train.jsonl ...), "
              "for machines without the Hugging Face hub.")
@click.option("--limit", type=int, help="Documents per --tasks task (the harness's --limit; for trial runs).")
@click.option("--task-fewshot", type=int, help="Shots for every --tasks task instead of each task's own.")
@click.option("--max-docs", type=int, help="Score only the first N documents of each --text.")
@click.option("--max-questions", type=int, help="Score only the first N JCQA questions.")
@click.option("--max-length", default=1024, show_default=True, help="Tokens per scored window.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Sequences (JCQA: questions) per batch [default: 8; JCQA on a GPU of 40 GiB or more: 128, "
              "3.2x the harness on one H200 against 1.1x at 32].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--dtype", default="auto", show_default=True, help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write all numbers as JSON here, with each JCQA question's scores and predicted choice.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def eval_command(model, texts, jcqa, jcqa_format, baseline, fewshot, fewshot_file, tasks, task_data, limit,
                 task_fewshot, max_docs, max_questions, max_length, batch_size, device, dtype, seed, json_path,
                 progress):
    """Perplexity, bits per character, JCommonsenseQA and lm-evaluation-harness tasks on MODEL.

    MODEL is a Hugging Face checkpoint directory (the exported adapted model or
    the base model). Bits per character are comparable across tokenizers;
    perplexity is per token, so only between models sharing a tokenizer.
    --jcqa-format lm-eval gives the harness's own ja_leaderboard_jcommonsenseqa
    predictions, faster; --tasks runs the harness itself.

    \b
    Example:
      trainer eval out/qwen25-ja --baseline models/Qwen2.5-0.5B \\
        --text ja=data/valid_ja_000 --text en=data/en_wiki.jsonl \\
        --jcqa jcommonsenseqa-v1.3_valid.jsonl --jcqa-format lm-eval \\
        --fewshot-file jcommonsenseqa-v1.3_train.jsonl \\
        --tasks japanese_leaderboard,hellaswag --task-data task-data/ --json eval.json
    """
    from trainer.evaluate.harness import parse_tasks, require
    from trainer.evaluate.report import EvalSettings, format_table, run_eval

    task_list = parse_tasks(tasks) if tasks else []
    if task_list:
        try:
            require()
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    elif task_data or limit is not None or task_fewshot is not None:
        raise click.UsageError("--task-data, --limit and --task-fewshot apply to --tasks, which is not given")
    settings = EvalSettings(
        texts=_parse_texts(texts), jcqa=jcqa, jcqa_format=jcqa_format, fewshot=fewshot, fewshot_path=fewshot_file,
        tasks=task_list, task_data=task_data, limit=limit, task_fewshot=task_fewshot, max_docs=max_docs,
        max_questions=max_questions, max_length=max_length, batch_size=batch_size, device=device, dtype=dtype,
        seed=seed, progress=progress, details=bool(json_path))
    result = run_eval(model, settings, baseline)  # a ValueError is printed as one error line, exit 2
    click.echo(format_table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_path}", err=True)


@click.command("generate", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", type=click.Path(exists=True, file_okay=False),
              help="Base model directory: its continuations go in a second column.")
@click.option("--prompts", "prompts_path", type=click.Path(exists=True, dir_okay=False),
              help="One prompt per line ('#' comments; \\n for a line break). Default: trainer/evaluate/prompts/ja_default.txt.")
@click.option("-o", "--output", default="generations.md", show_default=True, type=click.Path(dir_okay=False))
@click.option("--max-new-tokens", default=128, show_default=True)
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of sampling.")
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--top-p", default=0.9, show_default=True)
@click.option("--repetition-penalty", default=1.1, show_default=True)
@click.option("--seed", default=1234, show_default=True)
@click.option("--samples", default=1, show_default=True, help="Continuations per prompt and model.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def generate(model, baseline, prompts_path, output, max_new_tokens, greedy, temperature, top_p,
             repetition_penalty, seed, samples, device, dtype, progress):
    """Continuations of Japanese prompts from MODEL (and --baseline), side by side in Markdown.

    Same prompts, decoding settings and per-prompt seeds for both models, so the
    columns differ only by the weights; the page is for human evaluation.

    Example:

        trainer generate out/qwen25-ja --baseline models/Qwen2.5-0.5B -o generations.md
    """
    from trainer.evaluate.generate import DEFAULT_PROMPTS, DecodingSettings, write_generations

    settings = DecodingSettings(max_new_tokens, not greedy, temperature, top_p, repetition_penalty, seed, samples)
    path = write_generations(model, output, baseline, prompts_path or DEFAULT_PROMPTS, settings, device, dtype,
                             progress)
    click.echo(f"wrote {path}")


@click.command("monitor", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where plots and summary.json go "
              "(default RUN_DIR/monitor).")
@click.option("--metrics-file", default="metrics.jsonl", show_default=True, help="File name inside RUN_DIR.")
@click.option("--vocab-size", default=151_665, show_default=True,
              help="Tokens the model predicts; a loss near ln(vocab) means uniform guessing.")
@click.option("--spike-factor", default=1.5, show_default=True, help="Loss above this x its recent median is a spike.")
@click.option("--stall-steps", default=100, show_default=True, help="Steps of unchanged learning rate to flag.")
@click.option("--follow", type=float, metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C (for a live run).")
@click.option("--no-plots", is_flag=True, help="Only the summary (no matplotlib needed).")
@click.option("--strict", is_flag=True, help="Exit 1 when an anomaly of severity error is found.")
def monitor(run_dir, out_dir, metrics_file, vocab_size, spike_factor, stall_steps, follow, no_plots, strict):
    """Plots and a JSON summary of RUN_DIR's metrics, flagging anomalies.

    Flags NaN/inf, loss spikes, a loss near ln(vocab) (random weights or a
    tokenizer mismatch), a stalled or zero learning rate and throughput
    collapse. Works while the run writes its metrics and after it ended.

    Example:

        trainer monitor runs/qwen25_05b_ja_lora --follow 60
    """
    import time

    from trainer.evaluate.anomalies import Thresholds
    from trainer.evaluate.monitor import format_summary
    from trainer.evaluate.monitor import monitor as run_monitor

    thresholds = Thresholds(vocab_size=vocab_size, spike_factor=spike_factor, stall_steps=stall_steps)
    while True:
        summary = run_monitor(run_dir, out_dir, thresholds, metrics_file, plots=not no_plots)
        click.echo(format_summary(summary))
        click.echo(f"wrote {summary['out_dir']}/summary.json" + (f" and {len(summary['plots'])} plots"
                                                                 if summary["plots"] else ""))
        if not follow:
            break
        try:
            time.sleep(follow)
        except KeyboardInterrupt:
            break
    if strict and summary["status"] == "error":
        sys.exit(1)


@click.command("check-env", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.option("--allow-cpu", is_flag=True, help="No GPU is a WARN, not a FAIL (CI, dry runs, evaluation machines).")
@click.option("--deep", is_flag=True, help="Also import nemo.collections.llm (~50 s) and check llm.finetune exists.")
@click.option("--for", "for_commands", multiple=True,
              type=click.Choice(["normalize", "binarize", "run", "export", "eval", "monitor"]),
              help="Exit 1 only when one of these commands cannot run (repeatable; default: any command).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks and the verdicts as JSON instead of tables.")
def check_env(allow_cpu, deep, for_commands, as_json):
    """Check what each command needs (Python, torch/CUDA, GPU, bf16, transformers, NeMo,
    megatron-core, lightning, modelopt, TransformerEngine, Sudachi, the tokenizer, matplotlib)
    and give a verdict per command: a missing piece fails only the commands that need it.
    The last line says which commands can run here.

    Example:

        trainer check-env --deep --for run
    """
    from trainer.evaluate.check_env import FAIL, format_table, run_checks, verdicts

    rows = run_checks(allow_cpu=allow_cpu, deep=deep)
    judged = verdicts(rows)
    if as_json:
        click.echo(json.dumps({"checks": [r.as_dict() for r in rows], "commands": [v.as_dict() for v in judged]},
                              ensure_ascii=False, indent=2))
    else:
        click.echo(format_table(rows))
    if any(v.status == FAIL and (not for_commands or v.command in for_commands) for v in judged):
        sys.exit(1)
