"""Many-to-many classification end to end: MTAN-WRN (tiny) on three decathlon domains of a fixture in the
release's layout, grouped batches, the decathlon score, and batch-norm recalibration per domain."""

from __future__ import annotations

import json

import torch

from scenemtl.engine.evaluate import move
from scenemtl.engine.recalibrate import batch_norm_state, recalibrate_batch_norm
from scenemtl.engine.trainer import Trainer
from tests.data.test_decathlon import FIXTURE, write_decathlon


def decathlon_trainer(tiny_config, tmp_path, *overrides, log: bool = True):
    root = write_decathlon(tmp_path / "decathlon-1.0", test_labels=True)
    config = tiny_config(
        "tasks={daimlerpedcls: {}, dtd: {}, svhn: {}}",
        "data.name=decathlon",
        f"data.root={root}",
        "data.options={}",
        "data.batching=grouped",
        "data.batch_size=2",
        "data.eval_batch_size=4",
        "data.augment={scale: null, crop: [72, 72], flip: true, photometric: false}",
        "model={arch: mtan_wrn, options: {filters: [4, 8, 8, 16], blocks: 1}}",
        "train.optimizer=sgd",
        "train.steps=6",
        "train.lr=0.05",
        "train.init_output_bias=false",
        *overrides,
    )
    return Trainer(config, progress=False, log=log)


def test_grouped_batches_train_one_domain_at_a_time_and_the_report_scores_the_decathlon(tiny_config, tmp_path):
    trainer = decathlon_trainer(tiny_config, tmp_path)
    for batch in list(trainer.loader)[:5]:
        labelled = {tuple(meta["labelled"]) for meta in batch["meta"]}
        assert len(labelled) == 1  # one domain per batch
        (domain,) = next(iter(labelled))
        assert bool((batch[domain] >= 0).all()) and all(bool((batch[d] == -1).all()) for d in FIXTURE if d != domain)
        assert batch["image"].shape[-2:] == (72, 72)
    batch = move(next(iter(trainer.loader)), trainer.device)
    domain = batch["meta"][0]["labelled"][0]
    losses = trainer.task_losses(trainer.model(batch["image"]), batch)
    assert losses[domain].item() > 0 and all(losses[d].item() == 0.0 for d in FIXTURE if d != domain)
    trainer.fit()
    report = json.loads((trainer.run_dir / "results.json").read_text())
    assert set(report["metrics"]) == set(FIXTURE) and all(report["metrics"][d]["images"] == 3.0 or d == "daimlerpedcls" for d in FIXTURE)
    decathlon = report["decathlon"]
    assert decathlon["domains"] == 3 and not decathlon["complete"] and 0 <= decathlon["score"] <= 3000
    assert "Decathlon score" in (trainer.run_dir / "results.md").read_text()


def test_recalibration_changes_only_the_batch_norm_statistics_and_restores_them(tiny_config, tmp_path):
    trainer = decathlon_trainer(tiny_config, tmp_path, "eval.recalibrate_bn=true", "train.steps=2", log=False)
    trainer.fit()
    model = trainer.model
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    before = batch_norm_state(model)
    recalibrate_batch_norm(model, [move(next(iter(trainer.loader)), trainer.device)], trainer.device, tasks=["dtd"])
    after = batch_norm_state(model)
    assert all(torch.equal(weights[name], p) for name, p in model.named_parameters())  # no weight moved
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all(".running_" in name or "num_batches" in name for name in changed)
    # the routed pass leaves the other domains' attention statistics alone
    assert not any("svhn" in name or "daimlerpedcls" in name for name in changed if "attention" in name)
    model.load_state_dict({**model.state_dict(), **before})
    report = trainer.evaluate()
    assert report["decathlon"]["domains"] == 3
    assert all(torch.equal(before[name], value) for name, value in batch_norm_state(model).items())  # restored after scoring


def test_epochs_count_the_grouped_batches_and_sgd_is_nesterov(tiny_config, tmp_path):
    trainer = decathlon_trainer(
        tiny_config, tmp_path, "train.epochs=2", "train.schedule=step", "train.decay_every_epochs=1", "train.nesterov=true", log=False
    )
    # batches of 2 within each domain: 4, 3 and 3 images → 2 + 2 + 2 batches per epoch
    assert trainer.config.train.steps == 12 and trainer.config.train.decay_every == 6
    assert trainer.optimizer.param_groups[0]["nesterov"] is True


def test_phase_two_starts_from_the_phase_one_weights_without_a_domain(tiny_config, tmp_path):
    import pytest

    first = decathlon_trainer(tiny_config, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    first.fit()
    second = decathlon_trainer(
        tiny_config,
        tmp_path,
        "name=phase2",
        f"model.weights={first.run_dir}",
        "data.options={train_domains: [dtd, svhn]}",
        "eval.recalibrate_bn=true",
        "train.steps=2",
        log=False,
    )
    trained = dict(first.model.named_parameters())
    assert all(torch.equal(p, trained[name]) for name, p in second.model.named_parameters())
    assert {second.train_set.sample(i)["meta"]["domain"] for i in range(len(second.train_set))} == {"dtd", "svhn"}
    with pytest.warns(UserWarning, match="no training images of 'daimlerpedcls'"):
        report = second.evaluate()
    assert report["metrics"]["daimlerpedcls"]["images"] == 4.0  # still scored, with the trained statistics


def test_eval_writes_the_challenge_submission_with_the_release_category_ids(tiny_config, tmp_path):
    """`scenemtl eval --decathlon-results`: one {image_id, category_id} per test image, recalibrated per domain."""
    from scenemtl.cli import main
    from scenemtl.data.decathlon import CATEGORY_BASE

    trainer = decathlon_trainer(tiny_config, tmp_path, "train.steps=2")
    trainer.fit()
    config = trainer.run_dir / "config.yaml"
    out = tmp_path / "submission" / "results.json"
    code = main(
        ["eval", str(config), "--checkpoint", str(trainer.run_dir), "--split", "test", "--decathlon-results", str(out), "--quiet",
         "--set", "eval.recalibrate_bn=true", "--out", str(tmp_path / "report.json")]
    )  # fmt: skip
    assert code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 10 and [r["image_id"] for r in rows] == sorted(r["image_id"] for r in rows)
    for row in rows:
        domain = next(d for d in FIXTURE if CATEGORY_BASE[d] <= row["image_id"] < CATEGORY_BASE[d] + 10**7)
        assert CATEGORY_BASE[domain] < row["category_id"] <= CATEGORY_BASE[domain] + 100  # a category of its own domain
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["decathlon"]["domains"] == 3  # the fixture's test labels were unzipped: the test split is scored


def test_routed_steps_move_the_weights_as_computing_every_domain_but_leave_the_others_batch_norms(tiny_config, tmp_path):
    """train.route_tasks (on by itself with grouped batches): each batch runs only its domain's branch, as MTAN's loop;
    the same losses, gradients, weight decay and Nesterov momentum as computing every branch, and the other domains'
    batch-norm statistics untouched."""
    common = ("train.nesterov=true", "train.weight_decay=0.01", "train.momentum=0.9")
    routed = decathlon_trainer(tiny_config, tmp_path / "a", *common, log=False)
    every = decathlon_trainer(tiny_config, tmp_path / "b", *common, "train.route_tasks=false", "name=every", log=False)
    assert routed.route and not every.route
    assert all(torch.equal(p, q) for p, q in zip(routed.model.parameters(), every.model.parameters()))
    batches = list(routed.loader)
    picked = [batches[0], next(b for b in batches if b["meta"][0]["labelled"] != batches[0]["meta"][0]["labelled"])]
    before = batch_norm_state(routed.model)
    for batch in picked:
        a, b = routed.train_step([batch]), every.train_step([batch])
        assert a["loss"].keys() == b["loss"].keys() == set(FIXTURE)
        assert all(abs(a["loss"][d] - b["loss"][d]) < 1e-6 for d in FIXTURE)
    for (name, p), q in zip(routed.model.named_parameters(), every.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    seen = {batch["meta"][0]["labelled"][0] for batch in picked}
    (unseen,) = set(FIXTURE) - seen
    after, mixed = batch_norm_state(routed.model), batch_norm_state(every.model)
    own = [name for name in before if unseen in name and "running_mean" in name]
    assert own and all(torch.equal(before[name], after[name]) for name in own)  # never ran
    assert any(not torch.equal(before[name], mixed[name]) for name in own)  # without routing it saw the others' images


def test_route_tasks_is_refused_where_the_model_cannot_route(tiny_config, tmp_path):
    import pytest

    from scenemtl.errors import ConfigError

    with pytest.raises(ConfigError, match="train.route_tasks: true cannot be used here: model 'hps' computes every task"):
        Trainer(tiny_config("model.arch=hps", "train.route_tasks=true"), progress=False, log=False)
    assert not Trainer(tiny_config("model.arch=stl"), progress=False, log=False).route  # mixed batches: off by itself


def test_independent_networks_run_only_the_named_tasks(tiny_config):
    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models.registry import build_model

    config = tiny_config("model.arch=stl")
    model = build_model(config.model, build_tasks(config, dataset_info(config))).eval()
    image = torch.rand(1, 3, 32, 32)
    first = next(iter(model.networks))
    output = model(image, tasks=[first])
    assert list(output.final) == [first]
    assert torch.equal(output.final[first], model(image).final[first])
