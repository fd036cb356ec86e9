"""Multi-GPU runs on the CPU: the ``parallel`` config section, the plan, the torchrun hand-over,
the Slurm script and the optimizer format a resume must keep. No NeMo except where marked."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from childproc import default_sigint

from trainer.run import parallel, slurm, torchrun
from trainer.run.config import from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qwen25_05b_ja_lora.yaml"


def _cfg(*overrides):
    """The shipped config at micro batch 4 (its 8 leaves 32 / (8 x 8) GPUs no whole micro batch)."""
    return load_config(CONFIG, ["schedule.micro_batch_size=4", *overrides])


def test_defaults_are_one_gpu_and_the_plain_optimizer():
    p = _cfg().parallel
    assert (p.devices, p.num_nodes, p.tensor_parallel, p.distributed_optimizer) == (1, 1, 1, None)
    assert not parallel.use_distributed_optimizer(p)
    assert parallel.use_distributed_optimizer(_cfg("parallel.devices=2").parallel)
    assert parallel.use_distributed_optimizer(_cfg("parallel.distributed_optimizer=true").parallel)
    assert not parallel.use_distributed_optimizer(_cfg("parallel.devices=8", "parallel.distributed_optimizer=false")
                                                  .parallel)


@pytest.mark.parametrize("overrides, key, text", [
    (["parallel.devices=16"], "schedule.global_batch_size",
     "32 is not a multiple of schedule.micro_batch_size 4 x data-parallel size 16"),
    (["parallel.devices=4", "parallel.num_nodes=2", "schedule.micro_batch_size=8"], "schedule.global_batch_size",
     "x data-parallel size 8 (parallel.devices x parallel.num_nodes / parallel.tensor_parallel) = 64"),
    (["parallel.devices=4", "parallel.tensor_parallel=4"], "parallel.tensor_parallel",
     "4 does not divide the model's 14 attention heads (qwen2.5-0.5b); choose one of [1, 2]"),
    (["parallel.devices=3", "parallel.tensor_parallel=2"], "parallel.tensor_parallel",
     "2 does not divide parallel.devices=3"),
    (["parallel.devices=0"], "parallel.devices", "0 must be >= 1"),
    (["parallel.num_nodes=0"], "parallel.num_nodes", "0 must be >= 1"),
    (["parallel.bucket_size=0"], "parallel.bucket_size", "0 must be positive"),
    (["parallel.distributed_optimizer=maybe"], "parallel.distributed_optimizer", "expected bool"),
    (["parallel.gpus=2"], "parallel.gpus", "unknown key"),
])
def test_bad_parallel_values_name_the_key(overrides, key, text):
    with pytest.raises(ValueError) as err:
        _cfg(*overrides)
    assert str(err.value).startswith(key + ":"), str(err.value)
    assert text in str(err.value)


def test_tensor_parallel_two_fits_qwen_and_the_tiny_preset():
    assert _cfg("parallel.devices=2", "parallel.tensor_parallel=2").parallel.tensor_parallel == 2
    tiny = from_dict({"model": {"preset": "tiny", "from_scratch": True}},
                     ["parallel.devices=4", "parallel.tensor_parallel=2"])
    assert parallel.data_parallel_size(tiny.parallel) == 2


@pytest.mark.parametrize("overrides, dp, micro, per_gpu", [
    ([], 1, 8, 65_536),
    (["parallel.devices=2"], 2, 4, 32_768),
    (["parallel.devices=8"], 8, 1, 8_192),
    (["parallel.devices=8", "schedule.micro_batch_size=2", "parallel.num_nodes=2"], 16, 1, 4_096),
    (["parallel.devices=4", "parallel.tensor_parallel=2"], 2, 4, 32_768),
])
def test_plan_numbers(overrides, dp, micro, per_gpu):
    items = parallel.plan_items(_cfg(*overrides))
    assert f"data parallel {dp}" in items["parallel"]
    assert items["micro batches per step per GPU"] == micro
    assert items["tokens per GPU per step"] == per_gpu
    # the global batch, and so the tokens per step and the schedule, stay the config's
    assert micro * dp * _cfg(*overrides).schedule.micro_batch_size == 32


def test_plan_names_the_optimizer_the_overlap_and_the_one_rank_plugins():
    one = parallel.plan_items(_cfg())
    assert one["optimizer sharding"].startswith("none") and "gradient reduce" not in one
    eight = parallel.plan_items(_cfg("parallel.devices=8"))
    assert "8 processes through torchrun" in eight["parallel"]
    assert "split over 8 data-parallel ranks" in eight["optimizer sharding"]
    assert "fully_reshardable" in eight["optimizer sharding"]
    assert eight["gradient reduce"].startswith("overlapped with the backward pass")
    tp = parallel.plan_items(_cfg("parallel.devices=2", "parallel.tensor_parallel=2"))
    assert "model.fused_loss" in tp["tensor parallel"] and "peft.lean_adapters" in tp["tensor parallel"]
    fast = parallel.plan_items(_cfg("parallel.devices=2", "parallel.tensor_parallel=2", "peft.fused_adapters=true",
                                    "model.mlp_recompute=true"))
    assert "peft.fused_adapters" in fast["tensor parallel"] and "model.mlp_recompute" in fast["tensor parallel"]
    assert "tensor parallel" not in eight


# ---- torchrun -------------------------------------------------------------------

WORKER = {"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}


def test_worker_detection_and_rank0_only_output(monkeypatch):
    assert torchrun.is_worker(WORKER) and torchrun.rank(WORKER) == 3
    assert not torchrun.is_worker({"SLURM_PROCID": "1", "LOCAL_RANK": "1"})
    said = []
    for key, value in WORKER.items():
        monkeypatch.setenv(key, value)
    torchrun.rank0_echo(said.append)("plan")
    monkeypatch.setenv("RANK", "0")
    torchrun.rank0_echo(said.append)("plan")
    assert said == ["plan"]


def test_worker_env_keeps_nccl_settings_and_never_turns_multicast_on():
    env = torchrun.worker_env({"NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "eth0", "PATH": "/bin"})
    assert env["NCCL_DEBUG"] == "WARN" and env["NCCL_SOCKET_IFNAME"] == "eth0" and env["PATH"] == "/bin"
    assert (env["NCCL_NVLS_ENABLE"], env["TORCH_SYMM_MEM_DISABLE_MULTICAST"], env["NVSHMEM_DISABLE_NVLS"]) == \
        ("0", "1", "1")


def test_the_world_torchrun_started_must_be_the_configs():
    cfg = _cfg("parallel.devices=2", "parallel.num_nodes=2")
    torchrun.check_world(cfg, WORKER)
    with pytest.raises(ValueError, match=r"^parallel.devices: torchrun started 4 processes, but .* = 2 x 1 = 2"):
        torchrun.check_world(_cfg("parallel.devices=2"), WORKER)
    with pytest.raises(ValueError, match=r"^parallel.devices: 4, but torchrun started 2 processes on this node"):
        torchrun.check_world(_cfg("parallel.devices=4", "schedule.micro_batch_size=8"), WORKER)


def test_exec_workers_runs_torchrun_on_the_resolved_config(tmp_path, monkeypatch):
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    cfg = _cfg("parallel.devices=4", f"run_dir={tmp_path}/run", "schedule.max_steps=777", "peft=none")
    calls, said = [], []
    torchrun.exec_workers(cfg, echo=said.append, execve=lambda *a: calls.append(a))
    (path, argv, env), = calls
    written = tmp_path / "run" / "launch" / "config.yaml"
    assert argv == [path, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=4",
                    "--max-restarts=0", "-m", "trainer.cli", "run", str(written)]
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["NCCL_DEBUG"] == "INFO"
    again = load_config(written)
    assert again == cfg  # the workers train exactly the validated config, overrides included
    assert said == [f"starting 4 workers: {' '.join(argv[1:])}"]


def test_the_torchrun_command_parses_with_torchruns_own_parser():
    from torch.distributed.run import get_args_parser

    argv = torchrun.single_node_command("c.yaml", 8)
    args = get_args_parser().parse_args(argv[3:])
    assert (args.standalone, args.nproc_per_node, args.module, args.training_script) == (True, "8", True,
                                                                                         "trainer.cli")
    node = torchrun.node_command("c.yaml", ["a=1"], 8, 2, "head:29500", "42")
    args = get_args_parser().parse_args(node[3:])
    assert (args.nnodes, args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id, args.training_script_args) == \
        ("2", "c10d", "head:29500", "42", ["run", "c.yaml", "a=1"])


# ---- Slurm ----------------------------------------------------------------------

SHIPPED = ["parallel.num_nodes=2", "parallel.devices=8", "schedule.micro_batch_size=2"]


def test_shipped_sbatch_is_the_rendered_one():
    cfg = _cfg(*SHIPPED)
    text = slurm.render(cfg, "configs/qwen25_05b_ja_lora.yaml", SHIPPED, script="pipelines/slurm_train.sbatch")
    assert (ROOT / "pipelines" / "slurm_train.sbatch").read_text() == text, \
        "re-render: trainer slurm configs/qwen25_05b_ja_lora.yaml " + " ".join(SHIPPED) + \
        " -o pipelines/slurm_train.sbatch"
    assert text.splitlines()[1] == "# sbatch pipelines/slurm_train.sbatch [key=value ...]"
    subprocess.run(["bash", "-n", str(ROOT / "pipelines" / "slurm_train.sbatch")], check=True,
                   preexec_fn=default_sigint)


def _fake_bin(tmp_path: Path) -> Path:
    """``srun`` that logs its arguments and environment, ``scontrol`` that names two hosts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\n{ printf "%s\\n" "SRUN $*"; '
                                  'env | grep -E "^(NCCL_|MASTER_|TORCH_SYMM|NVSHMEM)" | sort; } >> "$SRUN_LOG"\n')
    # many hosts after the first two: a script that stops reading early would die of SIGPIPE under pipefail
    (bin_dir / "scontrol").write_text('#!/bin/bash\nprintf "gpu-a01\\ngpu-a02\\n"; seq -f "gpu-b%g" 1 20000\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_sbatch_script_prepares_once_then_starts_one_torchrun_per_node(tmp_path):
    log = tmp_path / "srun.log"
    env = {"PATH": f"{_fake_bin(tmp_path)}:/usr/bin:/bin", "SRUN_LOG": str(log), "SLURM_SUBMIT_DIR": str(ROOT),
           "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8", "SLURM_JOB_NODELIST": "gpu-a[01-02]",
           "SLURM_JOB_ID": "123", "NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5"}
    subprocess.run(["bash", str(ROOT / "pipelines" / "slurm_train.sbatch"), "schedule.max_steps=500"], env=env,
                   check=True, preexec_fn=default_sigint)
    lines = log.read_text().splitlines()
    steps = [line for line in lines if line.startswith("SRUN ")]
    assert steps[0] == ("SRUN --nodes=1 --ntasks=1 .venv/bin/python -m trainer.cli run configs/qwen25_05b_ja_lora.yaml "
                        "schedule.micro_batch_size=2 parallel.num_nodes=2 parallel.devices=8 schedule.max_steps=500 "
                        "--prepare-only")
    assert steps[1] == ("SRUN --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 .venv/bin/python -m "
                        "torch.distributed.run --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d "
                        "--rdzv-endpoint=gpu-a01:29500 --rdzv-id=123 --max-restarts=0 -m trainer.cli run "
                        "configs/qwen25_05b_ja_lora.yaml schedule.micro_batch_size=2 parallel.num_nodes=2 "
                        "parallel.devices=8 schedule.max_steps=500")
    for needed in ("NCCL_DEBUG=INFO", "NCCL_IB_HCA=mlx5", "NCCL_NVLS_ENABLE=0", "MASTER_ADDR=gpu-a01",
                   "MASTER_PORT=29500", "TORCH_SYMM_MEM_DISABLE_MULTICAST=1", "NVSHMEM_DISABLE_NVLS=1"):
        assert needed in lines, needed
    # what the script passes loads as a config: 2 nodes x 8 GPUs, micro batch 2 -> one micro batch per GPU
    cfg = _cfg(*steps[1].split(" run configs/qwen25_05b_ja_lora.yaml ")[1].split())
    assert parallel.world_size(cfg.parallel) == 16 and parallel.micro_batches_per_gpu(32, 2, cfg.parallel) == 1


def test_sbatch_keeps_a_master_address_given_and_the_cli_renders(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main

    out = tmp_path / "job.sbatch"
    result = CliRunner().invoke(main, ["slurm", str(CONFIG), "parallel.num_nodes=2", "parallel.devices=4",
                                       "schedule.micro_batch_size=4", "--partition", "gpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=4\n" in text
    assert "#SBATCH --partition=gpu\n" in text and os.access(out, os.X_OK)
    log = tmp_path / "srun.log"
    env = {"PATH": f"{_fake_bin(tmp_path)}:/usr/bin:/bin", "SRUN_LOG": str(log), "SLURM_SUBMIT_DIR": str(ROOT),
           "SLURM_JOB_ID": "9", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "31000", "NCCL_NVLS_ENABLE": "0"}
    subprocess.run(["bash", str(out)], env=env, check=True, preexec_fn=default_sigint)
    assert "--rdzv-endpoint=10.0.0.7:31000" in log.read_text()
    bad = CliRunner().invoke(main, ["slurm", str(CONFIG), "parallel.num_nodes=2", "parallel.devices=8"])
    assert bad.exit_code == 2 and "schedule.global_batch_size" in bad.output


def test_run_help_and_slurm_help_have_examples():
    from click.testing import CliRunner

    from trainer.cli import main

    for command in ("run", "slurm"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output
    assert "--prepare-only" in CliRunner().invoke(main, ["run", "--help"]).output
