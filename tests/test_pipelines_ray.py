"""pipelines/ray_corpus_to_shards.sh (arguments, and a real run on the test cluster), the Slurm and KubeRay files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "ray_corpus_to_shards.sh"
LABELLED = ROOT / "tests" / "data" / "normalize" / "labelled.jsonl"


def _script(*args, **env):
    environment = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", **env)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=environment,
                          timeout=600)


def test_help_opens_with_the_command():
    result = _script("--help")
    assert result.returncode == 0 and result.stdout.startswith("bash pipelines/ray_corpus_to_shards.sh --input")
    assert "--valid-fraction F" in result.stdout and "--dedup-task-size S" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--out", "x"], "--input is required"),
    (["--input", "a.jsonl"], "--out is required"),
    (["--input", "a", "--out", "x", "--workers", "many"], "--workers must be a whole number"),
    (["--input", "a", "--out", "x", "--colour", "red"], "unknown argument: --colour"),
    (["--input"], "--input needs a value"),
    (["--input", "a", "--out", "x", "--dedup-task-size"], "--dedup-task-size needs a value"),
])
def test_bad_arguments_exit_2(args, message):
    result = _script(*args)
    assert result.returncode == 2 and f"error: {message}" in result.stderr


def test_dry_run_prints_the_three_commands(tmp_path):
    result = _script("--input", "raw dir/*.parquet", "--input", "more.jsonl", "--out", tmp_path / "o",
                     "--address", "10.0.0.5:6379", "--max-shard-size", "2GB", "--dedup-task-size", "64MB", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("+ ") for line in lines)
    assert "normalize raw\\ dir/\\*.parquet more.jsonl" in lines[0] and "--ray-address 10.0.0.5:6379" in lines[0]
    assert f"--work-dir {tmp_path}/o.work/normalize" in lines[0] and "--max-shard-size 2GB" in lines[1]
    assert "--dedup-task-size 64MB" in lines[0] and "--dedup-task-size" not in lines[1]  # normalize's option only
    assert lines[2].endswith(f"inspect-idx {tmp_path}/o_train {tmp_path}/o_valid --verify")
    assert not list(tmp_path.iterdir())


def test_the_pipeline_on_the_two_node_cluster(ray_cluster, tmp_path):
    result = _script("--input", LABELLED, "--out", tmp_path / "o", "--address", ray_cluster.address,
                     "--workers", "2", "--profile", "default", "--valid-fraction", "0.2", "--partition-size", "4KB",
                     "--dedup-task-size", "8MB")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verify: OK" in result.stdout and result.stdout.count("verify: OK") == 2
    assert (tmp_path / "o_train.bin").is_file() and (tmp_path / "o_valid.idx").is_file()
    assert not (tmp_path / "o.work").exists()


def test_slurm_script_is_valid_bash_and_runs_the_pipeline():
    path = ROOT / "pipelines" / "slurm_ray.sbatch"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[1].startswith("# sbatch pipelines/slurm_ray.sbatch")
    assert "ray start --head --block" in text and 'ray_corpus_to_shards.sh --address "$HEAD_IP:$PORT" "$@"' in text


def test_kuberay_manifests_load_and_point_at_the_pipeline():
    cluster = yaml.safe_load((ROOT / "pipelines" / "kuberay" / "raycluster.yaml").read_text(encoding="utf-8"))
    job = yaml.safe_load((ROOT / "pipelines" / "kuberay" / "rayjob.yaml").read_text(encoding="utf-8"))
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert "ray_corpus_to_shards.sh" in job["spec"]["entrypoint"] and "--address auto" in job["spec"]["entrypoint"]
    mounts = {m["mountPath"] for g in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"] for m in c["volumeMounts"]}
    assert mounts == {"/data"}  # one shared volume: inputs, outputs and the work directory
    for name in ("raycluster.yaml", "rayjob.yaml"):
        first = (ROOT / "pipelines" / "kuberay" / name).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(f"# kubectl apply -f pipelines/kuberay/{name}")
