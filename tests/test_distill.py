"""Distillation (`train-branch --teacher PREDS|MODEL`): the teacher's predictions reach the
targets, only predictions of this data's train split are taken, a model teacher answers for the
very faces the student is shown, and the run records its teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import invoke, json_of, listing, ok, one_line_error
from trainhelpers import agreement_on_train, ctrl_c_in_epoch, next_class_teacher, write_teacher

from fertool.artifacts import load_artifact, save_tensors
from fertool.cli.info import field_text
from fertool.distill import blend_targets, teacher_probabilities, view_probabilities
from fertool.errors import BadInputError
from fertool.evaluate import select_split
from fertool.models import load_model
from fertool.train import TrainConfig, train_branch

TRAIN = ["--recipe", "report", "--arch", "tiny", "--device", "cpu", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def dataset(synthetic_data):
    return load_artifact(synthetic_data, expect="dataset")


@pytest.mark.parametrize("mixup", [0.0, 0.4])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_student_of_the_teacher_alone_learns_the_teachers_answers(
    easy_data, tmp_path, seed, mixup
):
    # Weight 1: the labels are gone from the targets, so whatever the student learns came from
    # the teacher. It names each face's next class; the student must learn to do the same, with
    # mixup too (which must blend the teacher's targets, not the labels). The faces are easy (their
    # class is their brightness) and the run is one epoch: a run keeps its best epoch on val,
    # scored against the labels, which would pick the epoch that learned the teacher least.
    dataset = load_artifact(easy_data, expect="dataset")
    teacher = load_artifact(next_class_teacher(dataset, tmp_path))
    config = TrainConfig(
        arch="tiny",
        epochs=1,
        lr=3e-3,
        batch_size=32,
        augment=False,
        seed=seed,
        device="cpu",
        teacher="t",
        teacher_weight=1.0,
        mixup=mixup,
    )
    student = train_branch(dataset, config, teacher=teacher).model
    agrees_with_teacher, agrees_with_labels = agreement_on_train(student, dataset)
    # When written: 72-100 % next class and 0-14 % labels over these seeds, with 1 or 2 threads.
    assert agrees_with_teacher > 0.6 and agrees_with_labels < 0.2, (
        agrees_with_teacher,
        agrees_with_labels,
    )


def test_targets_blend_label_and_teacher_and_keep_the_label_on_top_up_to_half():
    labels = torch.tensor([0, 2])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    targets = blend_targets(labels, teacher, 0.5)
    assert torch.allclose(targets, torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.15, 0.75]]))
    assert torch.allclose(targets.sum(1), torch.ones(2))
    # A confident, wrong teacher at weight 0.5 at most ties the label: the hit count stays honest.
    assert torch.equal(
        blend_targets(labels, torch.tensor([[0.1, 0.9, 0.0], [1.0, 0.0, 0.0]]), 0.45).argmax(1),
        labels,
    )


def test_blending_takes_mixed_labels_as_probabilities():
    # A model teacher is blended in after mixup, when the labels are already probabilities.
    mixed = torch.tensor([[0.7, 0.3, 0.0]])
    assert torch.allclose(
        blend_targets(mixed, torch.tensor([[0.0, 0.0, 1.0]]), 0.5),
        torch.tensor([[0.35, 0.15, 0.5]]),
    )


def test_mixup_blends_the_teachers_targets_not_fresh_one_hot_labels():
    # With --mixup the blended targets must carry the teacher's share: mixup receives the
    # probabilities and pairs them as it pairs the images. Its draws do not depend on the
    # targets, so the same seed with one-hot targets of four "classes", one per image, gives
    # the mixing matrix itself: row i holds how much of each image image i became.
    from fertool.train import mixup

    x = torch.rand(4, 1, 2, 2)
    probabilities = torch.tensor(
        [[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.5, 0.0, 0.5], [0.2, 0.2, 0.6]]
    )
    _, mixing = mixup(x, torch.arange(4), 4, 0.4, torch.Generator().manual_seed(1))
    _, targets = mixup(x, probabilities, 3, 0.4, torch.Generator().manual_seed(1))
    assert not torch.allclose(mixing, torch.eye(4))  # this seed does blend
    assert torch.allclose(targets, mixing @ probabilities, atol=1e-6)


def test_temperature_softens_the_teachers_probabilities(dataset, tmp_path):
    _, labels, _ = select_split(dataset, "train")
    logits = np.eye(7)[labels.numpy()] * 4.0
    teacher = load_artifact(write_teacher(tmp_path / "t.npz", dataset, logits))
    sharp, soft = (
        teacher_probabilities(teacher, dataset, 1.0),
        teacher_probabilities(teacher, dataset, 4.0),
    )
    assert torch.allclose(sharp.sum(1), torch.ones(len(labels))) and torch.allclose(
        soft.sum(1), torch.ones(len(labels))
    )
    assert torch.equal(sharp.argmax(1), labels) and torch.equal(soft.argmax(1), labels)
    top = sharp.max(1).values
    assert (
        top[0].item() == pytest.approx(np.exp(4) / (np.exp(4) + 6))
        and (soft.max(1).values < top).all()
    )


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"split": "val"}, "train split"),
        ({"dataset_sha256": "0" * 64}, "other data"),
        ({"classes": ["a", "b", "c", "d", "e", "f", "g"]}, "classes"),
    ],
)
def test_a_teacher_for_other_faces_is_refused(dataset, tmp_path, change, needle):
    split = change.get("split", "train")
    count = len(select_split(dataset, split)[0])
    path = write_teacher(
        tmp_path / "t.npz",
        dataset,
        np.zeros((count, 7)),
        split=split,
        **{k: v for k, v in change.items() if k != "split"},
    )
    with pytest.raises(BadInputError, match=needle):
        teacher_probabilities(load_artifact(path), dataset, 1.0)


def test_a_teacher_in_another_order_is_refused(dataset, tmp_path):
    _, _, indices = select_split(dataset, "train")
    path = write_teacher(
        tmp_path / "t.npz",
        dataset,
        np.zeros((len(indices), 7)),
        indices=indices.numpy()[::-1].copy(),
    )
    with pytest.raises(BadInputError, match="one prediction per train face in order"):
        teacher_probabilities(load_artifact(path), dataset, 1.0)


def test_a_teacher_needs_a_share_and_a_share_needs_a_teacher(dataset, tmp_path):
    _, labels, _ = select_split(dataset, "train")
    teacher = load_artifact(write_teacher(tmp_path / "t.npz", dataset, np.zeros((len(labels), 7))))
    with pytest.raises(BadInputError, match="--teacher-weight 0: a teacher needs a share above 0"):
        train_branch(
            dataset,
            TrainConfig(arch="tiny", epochs=1, teacher="t", teacher_weight=0.0),
            teacher=teacher,
        )
    with pytest.raises(BadInputError, match="--teacher-weight 0.3: needs --teacher"):
        train_branch(dataset, TrainConfig(arch="tiny", epochs=1, teacher_weight=0.3))


# ---------------------------------------------------------------- a model as the teacher


def next_class_model(trained: Path, path: Path) -> Path:
    """`trained`, with its classifier's rows turned so that it names the next class of what it sees:
    the score of class k moves to class k + 1."""
    artifact = load_artifact(trained, expect="branch")
    tensors = dict(artifact.tensors)
    for name in ("backbone.fc.weight", "backbone.fc.bias"):
        tensors[name] = torch.roll(tensors[name], 1, dims=0)
    save_tensors(path, tensors, kind="branch", meta=artifact.meta)
    return path


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_a_student_of_a_model_teacher_alone_learns_its_answers(easy_data, tmp_path, mixup):
    # As with predictions: at weight 1 all the student learns comes from the teacher, here a
    # branch that knows the faces and names the next class. It runs on the step's faces, mixed
    # ones included, so the student must come to name the next class too.
    dataset = load_artifact(easy_data, expect="dataset")
    expert = tmp_path / "expert.safetensors"
    ok(
        invoke(
            "train-branch",
            easy_data,
            "-o",
            expert,
            *TRAIN,
            "--epochs",
            4,
            "--no-augment",
            "--seed",
            0,
        )
    )
    teacher = load_artifact(next_class_model(expert, tmp_path / "next.safetensors"))
    teacher_says, _ = agreement_on_train(load_model(teacher.path)[0], dataset)
    assert teacher_says > 0.9, teacher_says
    config = TrainConfig(
        arch="tiny",
        epochs=1,
        lr=3e-3,
        batch_size=32,
        augment=False,
        seed=1,
        device="cpu",
        teacher="t",
        teacher_weight=1.0,
        mixup=mixup,
    )
    student = train_branch(dataset, config, teacher=teacher).model
    agrees_with_teacher, agrees_with_labels = agreement_on_train(student, dataset)
    assert agrees_with_teacher > 0.6 and agrees_with_labels < 0.2, (
        agrees_with_teacher,
        agrees_with_labels,
    )


def test_a_model_teacher_sees_exactly_what_the_student_sees(dataset, tiny_branch, monkeypatch):
    # The point of a model teacher: its answer is for the transformed (and mixed) face the step
    # trains on, not for the plain face. Both networks record their training inputs.
    import fertool.train as train_module

    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}

    def recording(name):
        def hook(module, inputs):
            if name == "teacher" or module.training:  # the student's val passes are not steps
                seen[name].append(inputs[0].detach().clone())

        return hook

    real_build, real_network = train_module.build_classifier, train_module.teacher_network

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(recording("student"))
        return model

    def network(*args, **kwargs):
        model = real_network(*args, **kwargs)
        model.register_forward_pre_hook(recording("teacher"))
        return model

    monkeypatch.setattr(train_module, "build_classifier", build)
    monkeypatch.setattr(train_module, "teacher_network", network)
    teacher = load_artifact(tiny_branch)
    config = TrainConfig(
        arch="tiny",
        epochs=1,
        batch_size=64,
        seed=2,
        device="cpu",
        precision="fp32",
        augment_preset="strong",
        mixup=0.4,
        teacher="t",
        teacher_weight=0.5,
    )
    train_branch(dataset, config, teacher=teacher)
    steps = len(seen["student"])
    assert (
        steps == -(-len(select_split(dataset, "train")[0]) // 64) and len(seen["teacher"]) == steps
    )
    assert all(torch.equal(s, t) for s, t in zip(seen["student"], seen["teacher"]))
    # ...and those faces were transformed: no batch is the plain faces in any order.
    plain = select_split(dataset, "train")[0].float().div(255).flatten(1)
    first = seen["teacher"][0].flatten(1)
    assert not any(torch.allclose(first[0], face) for face in plain)


def test_view_probabilities_are_the_teachers_softmax_at_the_temperature(tiny_branch):
    network, _ = load_model(tiny_branch)
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        logits = network(x)
    for temperature in (1.0, 3.0):
        assert torch.allclose(
            view_probabilities(network, x, temperature, None),
            (logits / temperature).softmax(1),
            atol=1e-6,
        )


# ---------------------------------------------------------------- the command


def test_train_branch_with_a_teacher_from_eval_records_it(synthetic_data, tiny_branch, tmp_path):
    # The chain a user runs: eval writes the teacher's predictions, train-branch learns from them.
    teacher = tmp_path / "teacher.npz"
    ok(invoke("eval", synthetic_data, tiny_branch, "--split", "train", "-o", teacher))
    runs = {}
    for name, extra in {"plain": [], "taught": ["--teacher", teacher, "--temperature", 2]}.items():
        output = tmp_path / f"{name}.safetensors"
        json_of(
            invoke(
                "train-branch",
                synthetic_data,
                "-o",
                output,
                "--epochs",
                1,
                "--seed",
                3,
                *TRAIN,
                *extra,
                "--json",
            )
        )
        runs[name] = load_artifact(output).meta
    config = runs["taught"]["train_config"]
    assert (
        config["teacher_weight"] == 0.5
        and config["temperature"] == 2.0
        and len(config["teacher"]) == 64
    )
    assert runs["taught"]["teacher"]["file"] == str(teacher) and runs["taught"]["teacher"][
        "model"
    ] == str(tiny_branch)
    assert runs["plain"]["train_config"]["teacher"] == "" and "teacher" not in runs["plain"]
    assert runs["taught"]["history"][0]["loss"] != runs["plain"]["history"][0]["loss"]
    info = ok(invoke("info", tmp_path / "taught.safetensors")).stdout
    assert f"teacher {teacher}: {tiny_branch}'s predictions" in " ".join(info.split())


def test_train_branch_with_a_model_teacher_records_it(synthetic_data, tiny_branch, tmp_path):
    runs = {}
    for name, extra in {"plain": [], "taught": ["--teacher", tiny_branch]}.items():
        output = tmp_path / f"{name}.safetensors"
        json_of(
            invoke(
                "train-branch",
                synthetic_data,
                "-o",
                output,
                "--epochs",
                1,
                "--seed",
                3,
                *TRAIN,
                *extra,
                "--json",
            )
        )
        runs[name] = load_artifact(output).meta
    meta = runs["taught"]
    # Same seed, same faces: only the teacher's share of the targets can change the loss.
    assert meta["history"][0]["loss"] != runs["plain"]["history"][0]["loss"]
    assert meta["teacher"]["online"] is True and meta["teacher"]["file"] == str(tiny_branch)
    assert meta["teacher"]["arch"] == "tiny" and meta["train_config"]["teacher_weight"] == 0.5
    teacher_val = load_artifact(tiny_branch).meta["metrics"]["best_val_accuracy"]
    info = " ".join(ok(invoke("info", tmp_path / "taught.safetensors")).stdout.split())
    assert (
        f"teacher {tiny_branch} (tiny, val {teacher_val:.2%} on single views), "
        "run on every step's transformed faces" in info
    )


def test_an_ensemble_teacher_is_described_by_its_branches(synthetic_data, tiny_branch, tmp_path):
    # An ensemble's own arch is "ensemble"; info should say what it is made of.
    ensemble = tmp_path / "ensemble.safetensors"
    ok(invoke("ensemble", synthetic_data, tiny_branch, tiny_branch, "--average", "-o", ensemble))
    student = tmp_path / "student.safetensors"
    json_of(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            student,
            "--epochs",
            1,
            *TRAIN,
            "--teacher",
            ensemble,
            "--json",
        )
    )
    assert load_artifact(student).meta["teacher"]["arch"] == "ensemble of 2: 2 tiny"
    ensemble_val = load_artifact(ensemble).meta["metrics"]["best_val_accuracy"]
    info = " ".join(ok(invoke("info", student)).stdout.split())
    assert (
        f"teacher {ensemble} (ensemble of 2: 2 tiny, val {ensemble_val:.2%} on single views), "
        "run on every step's" in info
    )


def test_bad_teachers_are_one_line_errors_and_write_nothing(synthetic_data, tiny_branch, tmp_path):
    val_preds = tmp_path / "val.npz"
    ok(invoke("eval", synthetic_data, tiny_branch, "--split", "val", "-o", val_preds))
    out = tmp_path / "out"
    out.mkdir()
    train = ["train-branch", synthetic_data, "-o", out / "b.safetensors", "--epochs", 1, *TRAIN]
    one_line_error(invoke(*train, "--teacher", val_preds), str(val_preds), "train split")
    one_line_error(invoke(*train, "--teacher", synthetic_data), str(synthetic_data), "predictions")
    one_line_error(invoke(*train, "--teacher-weight", 0.3), "--teacher-weight", "--teacher")
    one_line_error(
        invoke(*train, "--teacher", val_preds, "--teacher-weight", 1.5), "--teacher-weight"
    )
    one_line_error(invoke(*train, "--teacher", val_preds, "--temperature", 0), "--temperature")
    assert listing(out) == []


def test_a_resumed_run_keeps_its_teacher(dataset, tmp_path):
    # The teacher's digest is one of the run's settings: a checkpoint resumes only with the same
    # predictions, and then ends where the uninterrupted run does.
    _, labels, _ = select_split(dataset, "train")
    teacher = load_artifact(
        write_teacher(
            tmp_path / "t.npz", dataset, np.random.default_rng(0).normal(size=(len(labels), 7))
        )
    )
    settings = dict(
        arch="tiny",
        epochs=2,
        lr=3e-3,
        seed=2,
        teacher="a" * 64,
        teacher_weight=0.5,
        temperature=2.0,
    )
    whole = train_branch(dataset, TrainConfig(**settings), teacher=teacher)
    checkpoint = tmp_path / "run.ckpt"
    with ctrl_c_in_epoch(2):
        train_branch(dataset, TrainConfig(**settings), teacher=teacher, checkpoint=checkpoint)
    with pytest.raises(BadInputError, match="teacher"):
        train_branch(
            dataset,
            TrainConfig(**{**settings, "teacher": "b" * 64}),
            teacher=teacher,
            checkpoint=checkpoint,
            resume=True,
        )
    resumed = train_branch(
        dataset, TrainConfig(**settings), teacher=teacher, checkpoint=checkpoint, resume=True
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]


def test_a_model_teacher_without_a_val_accuracy_is_named_without_one():
    # Files from before teachers recorded their val accuracy: no "val" and no "on single views".
    record = {"online": True, "file": "t.safetensors", "arch": "tiny"}
    assert (
        field_text("teacher", record)
        == "t.safetensors (tiny), run on every step's transformed faces"
    )
    assert field_text("teacher", {**record, "val_accuracy": 0.5}) == (
        "t.safetensors (tiny, val 50.00% on single views), run on every step's transformed faces"
    )
