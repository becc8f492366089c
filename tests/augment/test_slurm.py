"""The ``slurm`` section of ``midtrain augment``: validation, and the datatrove Slurm executor it builds (no sbatch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.augment.augment import key_config, shard_task
from midtrain.augment.config import AugmentConfig
from midtrain.errors import ConfigError

SLURM = {
    "partition": "cpu",
    "time": "2-12:00:00",
    "cpus_per_task": 4,
    "mem_per_cpu_gb": 3,
    "job_name": "aug-8b",
    "qos": "high",
    "env_command": "source /shared/venv/bin/activate",
    "sbatch_args": {"account": "proj42", "constraint": "icelake", "exclusive": ""},
}


def cfg(tmp_path: Path, **kw) -> AugmentConfig:
    base = {"input": ["c.jsonl"], "out": str(tmp_path / "aug"), "tokenizer": "tok", "num_shards": 8, "executor": "datatrove_slurm"}
    return AugmentConfig.from_dict({**base, "slurm": SLURM, **kw})


def test_slurm_executor_is_built_with_the_configured_fields(tmp_path):
    pytest.importorskip("datatrove")
    from datatrove.executor import SlurmPipelineExecutor

    from midtrain.augment.datatrove import AugmentShardStep, build_executor

    logs = tmp_path / "shared" / "logs"
    ex = build_executor(cfg(tmp_path, slurm={**SLURM, "logging_dir": str(logs)}), shard_task)
    assert isinstance(ex, SlurmPipelineExecutor) and ex.tasks == 8 and ex.skip_completed
    assert (ex.partition, ex.time, ex.cpus_per_task, ex.mem_per_cpu_gb, ex.job_name, ex.qos) == (
        "cpu",
        "2-12:00:00",
        4,
        3,
        "aug-8b",
        "high",
    )
    assert Path(ex.logging_dir.path) == logs and isinstance(ex.pipeline[0], AugmentShardStep)
    args = ex.get_sbatch_args(max_array=8)
    assert args["account"] == "proj42" and args["constraint"] == "icelake" and args["partition"] == "cpu" and args["array"] == "0-7"
    script = ex.get_launch_file_contents(args, "python -m run")
    assert "#SBATCH --account=proj42" in script and "#SBATCH --exclusive\n" in script
    assert "#SBATCH --time=2-12:00:00" in script and "source /shared/venv/bin/activate" in script
    default = build_executor(cfg(tmp_path, slurm={"partition": "cpu"}), shard_task)
    assert Path(default.logging_dir.path) == tmp_path / "aug" / "datatrove" and "qos" not in default.get_sbatch_args()


def test_slurm_keys_are_how_not_what(tmp_path):
    a, b = cfg(tmp_path), cfg(tmp_path, slurm={"partition": "gpu", "time": "30"})
    assert key_config(a).to_dict() == key_config(b).to_dict()  # a run may move between partitions and resume


@pytest.mark.parametrize(
    "slurm, key",
    [
        ({"partition": ""}, "slurm.partition"),
        ({"time": "12 hours"}, "slurm.time"),
        ({"time": "1:2:3:4"}, "slurm.time"),
        ({"time": 43200}, "slurm.time"),  # YAML's reading of an unquoted 12:00:00
        ({"job_name": "a b"}, "slurm.job_name"),
        ({"partition": "cpu\n#SBATCH --x"}, "slurm.partition"),
        ({"cpus_per_task": 0}, "slurm.cpus_per_task"),
        ({"sbatch_args": {"partition": "x"}}, "slurm.sbatch_args"),
        ({"sbatch_args": {"Account": "x"}}, "slurm.sbatch_args"),
        ({"sbatch_args": {"account": "x\nrm -rf /"}}, "slurm.sbatch_args"),
        ({"sbatch_args": {"account": ["x"]}}, "slurm.sbatch_args"),
        ({"logging_dir": "c.jsonl"}, "slurm.logging_dir"),
    ],
)
def test_bad_slurm_values_name_their_key(tmp_path, slurm, key):
    (tmp_path / "c.jsonl").write_text("")
    if slurm.get("logging_dir"):
        slurm = {"logging_dir": str(tmp_path / "c.jsonl")}
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        cfg(tmp_path, slurm={**SLURM, **slurm})


def test_executor_options_may_not_repeat_a_typed_key(tmp_path):
    pytest.importorskip("datatrove")
    from midtrain.augment.datatrove import build_executor

    with pytest.raises(ConfigError, match="key 'executor_options': partition has its own key"):
        build_executor(cfg(tmp_path, executor_options={"partition": "other"}), shard_task)
    ex = build_executor(cfg(tmp_path, executor_options={"max_array_size": 4}), shard_task)
    assert ex.max_array_size == 4


def test_values_that_reach_the_script_are_checked_and_quoted(tmp_path):
    pytest.importorskip("datatrove")
    from midtrain.augment.datatrove import build_executor, shell_quoted

    with pytest.raises(ConfigError, match="key 'slurm.logging_dir': contains the control character '\\\\n'"):
        cfg(tmp_path, slurm={**SLURM, "logging_dir": str(tmp_path / "a\nb")})
    with pytest.raises(ConfigError, match="key 'executor_options.srun_args': the name 'a\\\\nb' contains"):
        cfg(tmp_path, executor_options={"srun_args": {"a\nb": 1}})
    with pytest.raises(ConfigError, match="key 'out'"):  # OUT/datatrove is the logging directory
        cfg(tmp_path, out=str(tmp_path / "my aug"))
    assert shell_quoted({"venv_path": "/v env/x", "srun_args": {"cpu-bind": "a;b"}, "max_array_size": 4}) == {
        "venv_path": "'/v env/x'",
        "srun_args": {"cpu-bind": "'a;b'"},
        "max_array_size": 4,
    }
    out = tmp_path / "aug$(id)"
    ex = build_executor(cfg(tmp_path, out=str(out)), shard_task)
    pik = f"{out}/datatrove/executor.pik"
    script = ex.get_launch_file_contents(ex.get_sbatch_args(), f"srun -l launch_pickled_pipeline {pik}")
    assert script.splitlines()[-1].strip() == f"srun -l launch_pickled_pipeline '{pik}'"
