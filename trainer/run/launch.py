"""``trainer run``: config -> checked inputs -> base checkpoint -> plan -> llm.finetune.

The base checkpoint is made once per ``run_dir`` and reused on resume:
a Hugging Face directory is imported (with the parity check); ``from_scratch``
writes a randomly initialised Hugging Face model of the preset first and imports
that, so both paths train from a NeMo checkpoint through the same code.
With more than one GPU this process does only that one-time work and hands the
training to torchrun (``trainer/run/torchrun.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.run.config import TrainConfig
from trainer.run.presets import ModelPreset


def random_hf_model(preset: ModelPreset, tok, out_dir: Path, seed: int) -> Path:
    """Save a randomly initialised HF Qwen2 model of ``preset`` (and the tokenizer) to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=preset.vocab_size, hidden_size=preset.hidden_size, intermediate_size=preset.ffn_hidden_size,
        num_hidden_layers=preset.num_layers, num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_query_groups, max_position_embeddings=preset.max_position_embeddings,
        rope_theta=preset.rope_theta, rms_norm_eps=preset.rms_norm_eps, tie_word_embeddings=preset.tie_embeddings,
        bos_token_id=tok.eod_id, eos_token_id=tok.eod_id,
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    from jpcorpus.tokenizer.regex_alarm import regex_alarm_checked

    with regex_alarm_checked(tok.hf_dir):
        AutoTokenizer.from_pretrained(str(tok.hf_dir)).save_pretrained(out_dir)
    return out_dir


def prepare_base(cfg: TrainConfig, tok, preset: ModelPreset) -> Path:
    """The NeMo checkpoint the run starts from, importing it first if needed."""
    from trainer.convert.importer import import_hf
    from trainer.run.recipe import base_checkpoint

    target = base_checkpoint(cfg)
    if (target / "context").is_dir() and (target / "weights").is_dir():
        return target
    if cfg.model.from_scratch:
        hf_dir = random_hf_model(preset, tok, Path(cfg.run_dir) / "base" / "hf_random", cfg.schedule.seed)
    else:
        hf_dir = Path(cfg.model.base)
        if not (hf_dir / "config.json").is_file():
            from trainer.run.preflight import describe_base

            describe_base(cfg)  # raises the refusal that says what to do
    from jpcorpus.tokenizer.regex_alarm import regex_alarm_checked

    with regex_alarm_checked(hf_dir):  # NeMo loads the tokenizer; transformers 4.57's false alarm checked
        return import_hf(hf_dir, target, attention=cfg.model.attention)


def run(cfg: TrainConfig, *, dry_run: bool, prepare_only: bool = False, echo=print) -> None:
    """Check, plan and (unless ``dry_run``) train: in this process on one GPU, through torchrun
    on several (``trainer/run/torchrun.py``); ``prepare_only`` stops before training."""
    from trainer.run import torchrun
    from trainer.run.parallel import settle_optimizer, world_size
    from trainer.run.preflight import preflight
    from trainer.run.recipe import (Run, build, check_run_inputs, checkpoint_dir, dataset_sizes, format_plan,
                                    model_tokenizer, plan)

    echo = torchrun.rank0_echo(echo)
    if torchrun.is_worker() and not dry_run:
        return torchrun.train_worker(cfg, echo=echo)
    for key, value in torchrun.MULTICAST_OFF.items():
        os.environ.setdefault(key, value)
    echo(preflight(cfg).summary())  # base and shards, before NeMo's import (trainer/run/preflight.py)
    tok = model_tokenizer(cfg.model.tokenizer)
    cfg = settle_optimizer(cfg, checkpoint_dir(cfg), echo)  # resume with the optimizer the checkpoint was saved by
    hand_over = world_size(cfg.parallel) > 1 and not dry_run
    if hand_over:  # the workers build the NeMo objects and the datasets; here only what happens once
        preset, train, valid = check_run_inputs(cfg, tok)
        the_run = Run(cfg, preset, tok, train, valid)
        items = plan(the_run)
    else:
        check_run_inputs(cfg, tok)  # the shards' tokenizer against the model's, still before NeMo
        accelerator = "cpu" if dry_run else "gpu"
        the_run = build(cfg, tok, accelerator=accelerator)
        items = plan(the_run)
        items.update(dataset_sizes(the_run))
    echo(format_plan(items))
    if cfg.checkpoint.resume:
        # Issue 4: damaged or partial checkpoints are moved to run_dir/quarantine before NeMo's
        # AutoResume looks (a dry run only reports); resume_from_path is set only when NeMo's own
        # choice (the newest *-last) would not be the newest good checkpoint.
        from trainer.run.checkpoints import prepare_resume

        _, explicit = prepare_resume(checkpoint_dir(cfg), Path(cfg.run_dir) / "quarantine", move=not dry_run,
                                     echo=echo)
        if explicit is not None and the_run.resume is not None:
            the_run.resume.resume_from_path = str(explicit)
    if dry_run:
        echo("dry run: nothing trained, nothing written except the dataset index cache")
        return
    base = prepare_base(cfg, tok, the_run.preset)
    echo(f"base checkpoint: {base}")
    if prepare_only:
        echo("prepared: base checkpoint and checkpoints checked; start the training processes now")
        return
    if hand_over:
        if cfg.parallel.num_nodes > 1:
            raise ValueError(f"parallel.num_nodes: {cfg.parallel.num_nodes} nodes need one torchrun per node "
                             "(pipelines/slurm_train.sbatch under Slurm, or docs/trainer.md's torchrun command); "
                             "this command prepared the run")
        return torchrun.exec_workers(cfg, echo=echo)  # replaces this process (returns only in tests)
    from nemo.collections import llm

    llm.finetune(model=the_run.model, data=the_run.data, trainer=the_run.trainer, peft=the_run.peft,
                 log=the_run.log, resume=the_run.resume, optim=the_run.optim)
