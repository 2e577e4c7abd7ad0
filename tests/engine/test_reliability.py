"""Run folders: one owner, honest exit codes, OS errors as sentences, crash-safe pruning, corrupt-checkpoint
fallback, start-or-resume, unlabelled tasks, results beside the checkpoint."""

from __future__ import annotations

import collections
import errno
import os
import signal
import stat
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from scenemtl import cli
from scenemtl.fileio import read_torch
from scenemtl.engine import builder, checkpoint as ckpt, storage
from scenemtl.engine.evaluate import evaluate
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import DataError, ScenemtlError
from tests.engine.test_faults import assert_same_weights, cli as run_cli, config_file, finish, wait_for  # noqa: F401


Usage = collections.namedtuple("Usage", "total used free")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pth_file_is_refused_with_a_way_to_convert_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"2008_000002": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(DataError, match="evil.pth.*pickled Python objects.*Convert it") as refused:
        read_torch(tmp_path / "evil.pth", "published label map")
    assert not marker.exists() and "weights_only=False" not in str(refused.value)
    torch.save({"a": torch.ones(2), "b": [1, 0]}, tmp_path / "plain.pth")
    assert read_torch(tmp_path / "plain.pth")["b"] == [1, 0]


# --- one owner per run folder ---------------------------------------------------------------
def test_a_second_trainer_on_a_busy_run_folder_fails_at_once_naming_the_owner(tiny_config):
    first = Trainer(tiny_config(), progress=False, log=False)
    with pytest.raises(ScenemtlError, match=rf"in use by process {os.getpid()} on .*wait for it"):
        Trainer(tiny_config(), resume=True, progress=False, log=False)
    first.fit()  # the owner is untouched and finishes
    assert [p.name for p in ckpt.list_checkpoints(first.checkpoint_dir)] == ["step_0000004"]
    # released at the end: the folder can be resumed now (nothing left to train)
    again = Trainer(tiny_config(), resume=True, progress=False, log=False)
    assert again.step == 4
    again.close()


def test_a_lock_left_by_a_killed_run_is_taken_over(tiny_config):
    config = tiny_config()
    config.run_dir.mkdir(parents=True)
    (config.run_dir / storage.LOCK_FILE).write_text('{"host": "node7", "pid": 4242, "started": "yesterday"}')
    with warnings.catch_warnings():
        trainer = Trainer(config, progress=False, log=False)
    assert trainer._lock.previous["pid"] == 4242
    trainer.close()
    assert (config.run_dir / storage.LOCK_FILE).read_text() == ""  # released: emptied


@pytest.mark.slow
def test_a_second_cli_training_exits_2_while_the_first_runs_and_sigterm_exits_75(
    config_file,  # noqa: F811
    tmp_path,
    capsys,
):
    run = tmp_path / "runs" / "busy"
    first = run_cli(tmp_path, "train", str(config_file), "--quiet", "--set", "name=busy", "--set", "train.steps=100000")
    wait_for(lambda: (run / "metrics.jsonl").exists() and '"train"' in (run / "metrics.jsonl").read_text(), first)
    # the second command runs in this process: the lock is the first process's, whoever asks
    assert cli.main(["train", str(config_file), "--quiet", "--set", "name=busy", "--resume"]) == 2
    out = capsys.readouterr()
    assert f"in use by process {first.pid}" in out.err and "Traceback" not in out.err + out.out
    first.send_signal(signal.SIGTERM)
    assert "stopped by SIGTERM" in finish(first, code=75)


def test_a_time_limit_stops_cleanly_with_the_resumable_code(tiny_config, tmp_path, capsys):
    config_path = tmp_path / "limited.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(tiny_config("name=limited", "train.steps=50").to_dict()))
    code = cli.main(["train", str(config_path), "--quiet", "--set", "train.time_limit=0.001"])
    assert code == cli.EXIT_STOPPED == 75
    assert "stopped by the time limit" in capsys.readouterr().err
    assert ckpt.read_meta(tmp_path / "runs" / "limited").step == 1


# --- OS errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["safetensors", "torch"])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_says_so(tiny_config, monkeypatch, failure):
    trainer = Trainer(tiny_config("train.steps=2"), progress=False, log=False)
    trainer.fit()
    previous = ckpt.list_checkpoints(trainer.checkpoint_dir)[-1]
    if failure == "safetensors":  # what safetensors raises when the disk fills up

        def full(*args, **kwargs):
            raise SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
            )

        monkeypatch.setattr(ckpt, "save_file", full)
    else:  # torch's zip writer says only "unexpected pos"; the free space tells

        def cryptic(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4352 vs 4240")

        monkeypatch.setattr(ckpt.torch, "save", cryptic)
        monkeypatch.setattr(storage.shutil, "disk_usage", lambda path: Usage(total=10**9, used=10**9 - 4096, free=4096))
    trainer.step = 3
    with pytest.raises(storage.StorageError) as error:
        trainer.save()
    message = str(error.value)
    assert "disk is full" in message and f"previous checkpoint {previous.name} is intact" in message
    assert "\n" not in message and error.value.exit_code == 1
    assert [p.name for p in trainer.checkpoint_dir.iterdir()] == [previous.name]  # no .tmp left behind
    ckpt.load_trainer_state(previous)


def test_a_read_only_run_folder_fails_before_any_work(tiny_config, monkeypatch, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only for an ordinary user
    real_open = open

    def refusing_open(path, *args, **kwargs):  # root ignores permissions: refuse like a read-only mount
        if ".write-test" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(storage, "open", refusing_open, raising=False)
    monkeypatch.setattr(builder, "build_dataset", lambda *a, **k: pytest.fail("work started"))
    try:
        with pytest.raises(
            storage.StorageError,
            match=r"cannot write the run folder in .*runs/tiny: the file system "
            r"is read-only; set out_dir",
        ):
            Trainer(tiny_config(), progress=False, log=False)
    finally:
        folder.chmod(stat.S_IRWXU)


def test_eval_refuses_a_read_only_results_folder_before_evaluating(tiny_config, tmp_path, monkeypatch, capsys):
    import yaml

    trainer = Trainer(tiny_config("train.steps=1"), progress=False, log=False)
    trainer.fit()
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(trainer.config.to_dict()))
    monkeypatch.setattr(
        storage, "open", lambda p, *a, **k: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied", str(p))), raising=False
    )
    monkeypatch.setattr("scenemtl.engine.evaluate.evaluate", lambda *a, **k: pytest.fail("evaluated"))
    code = cli.main(["eval", str(path), "--checkpoint", str(trainer.run_dir), "--out", str(tmp_path / "ro" / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and "permission denied" in err and str(tmp_path / "ro") in err and len(err.splitlines()) == 1


# --- crash-safe pruning, leftovers, corrupt checkpoints, start-or-resume -----------------------
def test_a_prune_killed_midway_and_interrupted_writes_are_cleaned_at_the_next_start(tiny_config, monkeypatch, capsys):
    config = tiny_config("train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=1")
    trainer = Trainer(config, progress=False, log=False)
    real_rmtree = ckpt.shutil.rmtree

    def killed(path, *args, **kwargs):  # the process dies while deleting a pruned checkpoint
        if str(path).endswith(".trash"):
            (Path(path) / ckpt.STATE_FILE).unlink(missing_ok=True)
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    trainer.close()
    folder = trainer.checkpoint_dir
    # the half-deleted checkpoint is out of the list at once; an interrupted write leaves a .tmp
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step_0000004"]
    (folder / ".step_0000006.tmp").mkdir()
    assert {p.name for p in folder.iterdir()} == {"step_0000004", ".step_0000002.trash", ".step_0000006.tmp"}
    resumed = Trainer(config, resume=True, progress=False, log=False)
    assert "removed what an interrupted run left" in capsys.readouterr().err
    assert {p.name for p in folder.iterdir()} == {"step_0000004"} and resumed.step == 4
    resumed.fit()
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step_0000006"]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_config):
    straight = Trainer(tiny_config("name=straight", "train.steps=6"), progress=False, log=False)
    straight.fit()
    config = tiny_config("name=cut", "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=5")
    Trainer(config, progress=False, log=False).fit(stop_at=4)
    latest = config.run_dir / "checkpoints" / "step_0000004" / ckpt.MODEL_FILE
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated by a failing disk
    with pytest.warns(UserWarning, match=r"step_0000004 cannot be read .*resuming from step_0000002"):
        resumed = Trainer(config, resume=True, progress=False, log=False)
    assert resumed.step == 2 and (config.run_dir / "checkpoints" / "step_0000004.corrupt").is_dir()
    resumed.fit()
    assert_same_weights(straight.run_dir, config.run_dir)


def test_resume_with_nothing_to_resume_starts_a_new_run_and_says_so(tiny_config, capsys):
    trainer = Trainer(tiny_config(), resume=True, progress=False, log=False)
    err = capsys.readouterr().err
    assert trainer.step == 0 and "--resume: no checkpoint in" in err and "starting a new run" in err
    trainer.fit()
    assert ckpt.read_meta(trainer.run_dir).step == 4


# --- unlabelled tasks -------------------------------------------------------------------------
class _NoDepth(torch.utils.data.Dataset):
    """A dataset whose depth labels are all invalid (0)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.__dict__.update({k: v for k, v in dataset.__dict__.items() if k not in ("dataset",)})
        self.info = dataset.info

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_id(self, index: int) -> str:
        return self.dataset.sample_id(index)

    def sample(self, index: int) -> dict:
        sample = self.dataset.sample(index)
        sample["depth"] = torch.zeros_like(sample["depth"])
        return sample

    __getitem__ = sample


def test_a_task_without_labelled_pixels_is_warned_about_once(tiny_config):
    config = tiny_config("train.steps=5")
    train, val = builder.build_dataset(config, "train"), builder.build_dataset(config, "val")
    trainer = Trainer(config, progress=False, log=False, datasets=(_NoDepth(train), val))
    trainer.unlabelled_patience = 2
    with pytest.warns(UserWarning, match=r"task 'depth' has had no labelled pixel in the last 2 steps \(steps 1–2\)") as caught:
        trainer.fit()
    assert sum("no labelled pixel" in str(w.message) for w in caught) == 1  # once, not every step


def test_evaluation_without_any_labelled_pixel_of_a_task_is_an_error(tiny_config):
    config = tiny_config()
    trainer = Trainer(config, progress=False, log=False)
    trainer.close()
    info = builder.dataset_info(config)
    val = _NoDepth(builder.build_dataset(config, "val"))
    loader = builder.eval_loader(config, val, builder.build_transform(config, trainer.tasks, info, train=False))
    with pytest.raises(DataError, match=r"\['depth'\] have no labelled pixel in any of the 8 evaluation images"):
        evaluate(trainer.model, trainer.tasks, loader, torch.device("cpu"), progress=False)


# --- results beside the checkpoint, file modes ------------------------------------------------
def test_eval_writes_beside_the_checkpoint_and_checkpoints_honour_the_umask(tiny_config, tmp_path, capsys):
    import yaml

    trainer = Trainer(tiny_config("name=trained", "train.steps=1"), progress=False, log=False)
    trainer.fit()
    for file in ckpt.list_checkpoints(trainer.checkpoint_dir)[-1].iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask(), file.name  # 0644 under umask 022
    other = tiny_config("name=elsewhere")  # a config naming another run folder
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other.to_dict()))
    assert cli.main(["eval", str(path), "--checkpoint", str(trainer.run_dir), "--quiet"]) == 0
    assert (trainer.run_dir / "eval" / "results_val_step1.json").is_file()
    assert not other.run_dir.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
