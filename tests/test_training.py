"""Smoke training, resume, checkpoint reload, evaluation artefacts, and the CSV form of FER2013."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fer_batch.cli import app
from fer_batch.labels import EMOTIONS
from fer_batch.model import load_checkpoint
from fer_batch.training.data import load_split

runner = CliRunner()
ARTEFACTS = (
    "metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "per_class.png",
    "predictions.csv", "samples.png", "errors.csv", "index.html",
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fer_dir) -> Path:
    """Two small CNN epochs (half the crops degraded like detections) and one GRU epoch (on realistic
    clips), interrupted after the first and resumed."""
    out = tmp_path_factory.mktemp("train")
    common = [
        "train", "--data", str(fer_dir), "--out", str(out), "--small", "--epochs", "2", "--temporal-epochs", "1",
        "--limit-train", "640", "--limit-test", "160", "--clips-per-epoch", "64", "--batch-size", "64",
        "--device", "cpu", "--quiet", "--realistic-clips", "--realistic-stills", "0.5",
    ]
    first = runner.invoke(app, [*common, "--stop-after", "1"])
    assert first.exit_code == 0, first.output
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    second = runner.invoke(app, [*common, "--resume"])
    assert second.exit_code == 0, second.output
    return out


def test_training_loss_falls_and_stages_run_in_order(trained_run):
    saved = torch.load(trained_run / "best.pt", weights_only=False)["training_config"]
    assert saved["realistic_clips"] is True and saved["realistic_stills"] == 0.5
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2, 3]
    assert metrics.stage.tolist() == ["frame", "frame", "temporal"]
    assert metrics.train_loss[1] < metrics.train_loss[0]
    assert metrics.clip_accuracy.notna().tolist() == [False, False, True]


def test_checkpoint_rebuilds_the_model_and_carries_training_state(trained_run):
    checkpoint = load_checkpoint(trained_run / "last.pt")
    assert checkpoint.class_names == EMOTIONS
    assert checkpoint.preprocessing.crop_size == 48
    extra = checkpoint.extra
    assert extra["epoch"] == 3 and extra["stage"] == "temporal"
    assert extra["optimizer_state"]["state"] and extra["training_config"]["limit_train"] == 640
    probabilities = torch.softmax(checkpoint.model(torch.zeros(2, 1, 48, 48)), dim=1)
    assert probabilities.shape == (2, 7) and torch.allclose(probabilities.sum(1), torch.ones(2))
    # The temporal stage changed the GRU correction but not the frozen encoder of the best frame epoch.
    best = torch.load(trained_run / "best.pt", weights_only=False)
    assert torch.count_nonzero(best["model_state"]["temporal_head.weight"]) > 0


def test_evaluate_writes_every_artefact(trained_run, fer_dir, tmp_path):
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app, ["evaluate", "--weights", str(trained_run / "best.pt"), "--data", str(fer_dir), "--limit", "300",
              "--out", str(out), "--device", "cpu", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    for name in ARTEFACTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    assert metrics["count"] == len(predictions) == 300
    assert metrics["accuracy"] == pytest.approx((predictions.true == predictions.predicted).mean())
    assert np.array(metrics["confusion_matrix"]).sum() == 300
    sequence = metrics["sequence"]
    assert set(sequence) >= {"none", "cnn_gru", "causal", "bidirectional", "true_changes_per_100_frames"}
    for mode in ("none", "cnn_gru", "causal", "bidirectional"):
        assert 0 <= sequence[mode]["accuracy"] <= 1 and sequence[mode]["median_lag_frames"] >= 0
    # Smoothing can only remove label changes on steady clips, never add them (up to ties).
    assert sequence["bidirectional"]["steady_clip_flicker_per_100_frames"] <= sequence["cnn_gru"]["steady_clip_flicker_per_100_frames"]
    assert 0 <= sequence["known_changes"]["accuracy"] <= 1
    assert f"changes)</td><td>{sequence['known_changes']['accuracy']:.2%}</td>" in (out / "index.html").read_text()  # the page too
    realistic = sequence["realistic"]  # the same clips with real video's shake, blur and artefacts
    assert realistic["transition_clips"] == sequence["transition_clips"]
    assert realistic["bidirectional"]["steady_clip_flicker_per_100_frames"] <= realistic["cnn_gru"]["steady_clip_flicker_per_100_frames"]


def _fer_csv(fer_dir: Path, path: Path, per_class: int = 3) -> list[tuple[str, str, Path]]:
    """A fer2013.csv built from a few PNGs of each split: (usage, emotion, png) per row."""
    rows = []
    for usage, split in (("Training", "train"), ("PublicTest", "test")):
        for emotion in EMOTIONS:
            for png in sorted((fer_dir / split / emotion).glob("*.png"))[:per_class]:
                rows.append((usage, emotion, png))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, emotion, png in rows:
            pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
            writer.writerow([EMOTIONS.index(emotion), " ".join(map(str, pixels.flatten())), usage])
    return rows


def test_csv_and_folder_forms_load_the_same_faces(fer_dir, tmp_path):
    rows = _fer_csv(fer_dir, tmp_path / "fer2013.csv")
    from_csv = load_split(tmp_path / "fer2013.csv", "test", cache_dir=tmp_path / "cache")
    expected = [(emotion, png) for usage, emotion, png in rows if usage == "PublicTest"]
    assert len(from_csv) == len(expected) == 21
    for index, (emotion, png) in enumerate(expected):
        assert EMOTIONS[from_csv.labels[index]] == emotion
        assert np.array_equal(from_csv.images[index], cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    cached = load_split(tmp_path / "fer2013.csv", "test", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1 and np.array_equal(cached.images, from_csv.images)


def test_evaluate_accepts_the_csv_form(trained_run, fer_dir, tmp_path):
    _fer_csv(fer_dir, tmp_path / "fer2013.csv")
    result = runner.invoke(
        app, ["evaluate", "--weights", str(trained_run / "best.pt"), "--data", str(tmp_path / "fer2013.csv"),
              "--split", "test", "--out", str(tmp_path / "eval"), "--quiet", "--no-sequence"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["count"] == 21


def test_evaluate_detect_scores_largest_face_and_reports_photos_without_one(trained_run, media_dir, tmp_path):
    import shutil

    photos = tmp_path / "photos"
    (photos / "neutral").mkdir(parents=True)
    (photos / "happy").mkdir()
    for portrait in sorted(media_dir.glob("portrait-*.jpg"))[:2]:
        shutil.copy(portrait, photos / "neutral" / portrait.name)
    cv2.imwrite(str(photos / "happy" / "wall.jpg"), np.full((200, 300, 3), 128, np.uint8))
    result = runner.invoke(
        app, ["evaluate", "--weights", str(trained_run / "best.pt"), "--data", str(photos), "--detect",
              "--out", str(tmp_path / "eval"), "--quiet", "--no-sequence"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["detection_errors"] == 1
    errors = pd.read_csv(tmp_path / "eval" / "errors.csv")
    assert errors.to_dict("records") == [{"image": "happy/wall.jpg", "message": "no face detected"}]


def test_evaluate_through_detection_of_enlarged_crops_scores_the_same_faces_both_ways(fer_dir, tmp_path):
    """--detect --upscale: FER2013 crops enlarged and padded go through MTCNN and the alignment,
    and the faces found are also scored from their own crops, for the cost of detection."""
    import shutil

    faces = tmp_path / "faces"
    for emotion in ("happy", "surprise"):
        (faces / emotion).mkdir(parents=True)
        for source in sorted((fer_dir / "test" / emotion).iterdir())[:6]:
            shutil.copy(source, faces / emotion / source.name)
    result = runner.invoke(app, ["evaluate", "--data", str(faces), "--detect", "--upscale", "3", "--out",
                                 str(tmp_path / "eval"), "--no-sequence", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["upscale"] == 3 and metrics["count"] + metrics["detection_errors"] == 12
    assert metrics["count"] >= 8  # MTCNN finds most enlarged FER2013 faces
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert len(predictions) == metrics["count"] and all((faces / name).is_file() for name in predictions.image)
    assert 0 <= metrics["direct_accuracy_same_faces"] <= 1 and "the same faces' own crops" in result.output
    refused = runner.invoke(app, ["evaluate", "--data", str(faces), "--upscale", "3", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--detect" in refused.output


def test_training_rejects_a_path_that_is_not_fer2013(tmp_path):
    (tmp_path / "cats").mkdir()
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2 and str(tmp_path) in result.output


def test_init_from_fine_tunes_from_a_checkpoint_and_rejects_another_architecture(trained_run, fer_dir, tmp_path):
    common = [
        "train", "--data", str(fer_dir), "--small", "--epochs", "1", "--temporal-epochs", "0",
        "--limit-train", "128", "--limit-test", "64", "--batch-size", "64", "--device", "cpu", "--quiet",
    ]
    start = torch.load(trained_run / "best.pt", weights_only=False)["model_state"]
    tuned_run = tmp_path / "tuned"
    result = runner.invoke(app, [*common, "--out", str(tuned_run), "--init-from", str(trained_run / "best.pt"),
                                 "--lr", "1e-6"])
    assert result.exit_code == 0, result.output
    tuned = torch.load(tuned_run / "last.pt", weights_only=False)["model_state"]
    # Two steps at a tiny learning rate: the encoder stays next to the starting weights, far from a fresh init.
    first_conv = next(name for name in start if name.endswith("weight") and start[name].dim() == 4)
    assert torch.allclose(tuned[first_conv], start[first_conv], atol=1e-3)
    assert not torch.equal(tuned[first_conv], start[first_conv])

    default_size = [arg for arg in common if arg != "--small"]
    mismatch = runner.invoke(app, [*default_size, "--out", str(tmp_path / "other"),
                                   "--init-from", str(trained_run / "best.pt")])
    assert mismatch.exit_code == 2 and "model configuration differs" in " ".join(mismatch.output.split())
    not_an_ensemble = runner.invoke(app, [*common, "--out", str(tmp_path / "member"),
                                          "--init-from", str(trained_run / "best.pt"), "--init-member", "1"])
    assert not_an_ensemble.exit_code == 2 and "not an ensemble" in " ".join(not_an_ensemble.output.split())


def test_epochs_0_trains_the_gru_stage_alone_on_a_trained_encoder(trained_run, fer_dir, tmp_path):
    """`--epochs 0 --init-from`: only the GRU and its head move; the encoder and frame head keep the
    starting weights exactly. Without --init-from there is nothing to train the GRU on: refused."""
    common = [
        "train", "--data", str(fer_dir), "--small", "--epochs", "0", "--temporal-epochs", "1", "--realistic-clips",
        "--limit-train", "128", "--limit-test", "64", "--clips-per-epoch", "64", "--batch-size", "64",
        "--device", "cpu", "--quiet",
    ]
    start = torch.load(trained_run / "best.pt", weights_only=False)["model_state"]
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "gru"), "--init-from", str(trained_run / "best.pt")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "gru" / "metrics.csv").stage.tolist() == ["temporal"]
    tuned = torch.load(tmp_path / "gru" / "last.pt", weights_only=False)["model_state"]
    for name, weights in start.items():
        if name.startswith(("gru.", "temporal_head.")):
            continue
        assert torch.equal(tuned[name], weights), name
    assert any(not torch.equal(tuned[name], start[name]) for name in start if name.startswith("gru."))
    refused = runner.invoke(app, [*common, "--out", str(tmp_path / "none")])
    assert refused.exit_code == 2 and "init_from" in " ".join(refused.output.split())


@pytest.fixture(scope="module")
def ensemble_members(trained_run, tmp_path_factory) -> list[Path]:
    """The smoke run's best checkpoint and a second, wider network with its own (untrained) weights."""
    from fer_batch.model import EmotionNet, ModelConfig, checkpoint_payload, save_checkpoint

    trained = load_checkpoint(trained_run / "best.pt")
    torch.manual_seed(7)
    other = EmotionNet(ModelConfig(stage_channels=(8, 16, 32, 32), convs_per_stage=(1, 1, 1, 1), gru_hidden=24))
    torch.nn.init.normal_(other.temporal_head.weight, std=0.5)  # a GRU that matters, so hidden-state handling is tested
    second = tmp_path_factory.mktemp("member") / "other.pt"
    save_checkpoint(checkpoint_payload(other, trained.class_names, trained.preprocessing), second)
    return [trained_run / "best.pt", second]


def test_ensemble_checkpoint_averages_its_members_on_stills_and_tracks(ensemble_members, fer_dir, tmp_path):
    from fer_batch.classifier import SequenceClassifier
    from fer_batch.model import EmotionEnsemble
    from fer_batch.training.export import export_checkpoint
    from fer_batch.training.train import predict_stills

    shipped = tmp_path / "ensemble.pt"
    export_checkpoint(ensemble_members, shipped)
    ensemble = load_checkpoint(shipped)
    members = [load_checkpoint(path) for path in ensemble_members]
    assert isinstance(ensemble.model, EmotionEnsemble) and len(ensemble.model.members) == 2
    assert "optimizer_state" not in torch.load(shipped, weights_only=False)

    faces = load_split(fer_dir, "test").subset(np.arange(40))
    cpu = torch.device("cpu")
    expected = np.mean([predict_stills(m.model, faces, m.preprocessing, cpu) for m in members], axis=0)
    assert np.allclose(predict_stills(ensemble.model, faces, ensemble.preprocessing, cpu), expected, atol=1e-5)

    # One track over 6 frames, then a still: each member keeps its own GRU state inside the ensemble's,
    # and the GRU's own probabilities (the evidence the temporal filter then reads) are the members' mean.
    def run(checkpoint):
        classifier = SequenceClassifier(checkpoint, cpu)

        def evidence(crops, numbers, frames, tracks):
            features = torch.from_numpy(classifier.encode(crops))
            return classifier.step_with_evidence(features, numbers, frames, tracks)[1]

        one = np.ones(1, np.int64)
        track = [evidence(faces.images[frame : frame + 1], 0 * one, frame * one, one) for frame in range(6)]
        still = evidence(faces.images[6:7], one, 0 * one, 0 * one)
        return np.concatenate([*track, still])

    per_member = [run(member) for member in members]
    assert not np.allclose(per_member[1][0], per_member[1][5], atol=1e-3)  # the GRU state changed the answer
    assert np.allclose(run(ensemble), np.mean(per_member, axis=0), atol=1e-5)


def test_ensemble_export_rejects_members_that_disagree(ensemble_members, tmp_path):
    from fer_batch.model import checkpoint_payload, save_checkpoint
    from fer_batch.training.export import export_checkpoint

    trained = load_checkpoint(ensemble_members[0])
    renamed = tmp_path / "renamed.pt"
    save_checkpoint(checkpoint_payload(trained.model, tuple(reversed(trained.class_names)), trained.preprocessing), renamed)
    with pytest.raises(ValueError, match="member 2 predicts"):
        export_checkpoint([ensemble_members[0], renamed], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_evaluate_and_init_from_with_an_ensemble(ensemble_members, fer_dir, tmp_path):
    from fer_batch.training.export import export_checkpoint

    shipped = tmp_path / "ensemble.pt"
    export_checkpoint(ensemble_members, shipped)
    result = runner.invoke(
        app, ["evaluate", "--weights", str(shipped), "--data", str(fer_dir), "--limit", "120",
              "--out", str(tmp_path / "eval"), "--device", "cpu", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert metrics["count"] == len(predictions) == 120
    assert metrics["accuracy"] == pytest.approx((predictions.true == predictions.predicted).mean())
    assert set(metrics["sequence"]) >= {"none", "cnn_gru", "bidirectional"}  # clips run through the members' GRUs too
    small_run = ["train", "--data", str(fer_dir), "--small", "--epochs", "1", "--temporal-epochs", "0",
                 "--limit-train", "128", "--limit-test", "64", "--batch-size", "64", "--device", "cpu", "--quiet",
                 "--lr", "1e-6", "--init-from", str(shipped)]

    def refusal(*extra: str) -> str:
        result = runner.invoke(app, [*small_run, "--out", str(tmp_path / "refused"), *extra])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert "choose one with --init-member" in refusal()
    assert "out of range (members 1 to 2)" in refusal("--init-member", "3")
    assert "model configuration differs" in refusal("--init-member", "2")  # member 2 is the wider network
    assert not (tmp_path / "refused" / "last.pt").exists()

    # Member 1 (the small run) as the start of a fine-tune: its weights, not a fresh init.
    tuned = runner.invoke(app, [*small_run, "--out", str(tmp_path / "tuned"), "--init-member", "1"])
    assert tuned.exit_code == 0, tuned.output
    start = torch.load(ensemble_members[0], weights_only=False)["model_state"]
    after = torch.load(tmp_path / "tuned" / "last.pt", weights_only=False)["model_state"]
    first_conv = next(name for name in start if name.endswith("weight") and start[name].dim() == 4)
    assert torch.allclose(after[first_conv], start[first_conv], atol=1e-3)


def test_precision_is_resolved_per_device_and_bad_choices_are_refused():
    from fer_batch.training.train import cpu_has_native_bf16, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cuda) is torch.float16
    # On CPU, auto takes bf16 only where oneDNN runs it natively (emulated bf16 is slower than fp32).
    assert resolve_precision("auto", cpu) is (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("half", cpu)


def test_bf16_run_with_sparse_evaluation_keeps_fp32_weights_and_scores_the_last_fifth(fer_dir, tmp_path):
    from fer_batch.model import MODEL_PRESETS

    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--data", str(fer_dir), "--out", str(out), "--model", "small", "--precision", "bf16",
              "--epochs", "5", "--temporal-epochs", "0", "--eval-every", "2", "--limit-train", "512",
              "--limit-test", "128", "--batch-size", "64", "--device", "cpu", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / "metrics.csv")
    # Every 2nd epoch, plus the last fifth of the schedule (epoch 5 of 5).
    assert metrics.test_accuracy.notna().tolist() == [False, True, False, True, True]
    assert metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[0]
    best = torch.load(out / "best.pt", weights_only=False)
    evaluated = metrics.dropna(subset=["test_accuracy"])
    assert best["epoch"] == int(evaluated.loc[evaluated.test_accuracy.idxmax(), "epoch"])
    assert best["model_config"] == MODEL_PRESETS["small"].to_dict()
    # Autocast computes in bf16 but the weights the optimiser updates stay fp32.
    assert {value.dtype for value in best["model_state"].values() if value.is_floating_point()} == {torch.float32}
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 5


def test_a_run_stopped_before_its_first_scored_epoch_says_so_and_resumes(fer_dir, tmp_path):
    """`--stop-after` before the first epoch PublicTest scores (`--eval-every`): the run stops
    cleanly with its last checkpoint and no best one (it ended in a traceback, looking for best.pt),
    and `--resume` carries it on to the end, where the best epoch is chosen as usual."""
    out = tmp_path / "run"
    common = ["train", "--data", str(fer_dir), "--out", str(out), "--model", "small", "--epochs", "5",
              "--temporal-epochs", "0", "--eval-every", "4", "--limit-train", "256", "--limit-test", "64",
              "--batch-size", "64", "--device", "cpu"]
    first = runner.invoke(app, [*common, "--stop-after", "1"])
    assert first.exit_code == 0, first.output
    assert "stopped after epoch 1" in first.output and "--resume" in first.output
    assert (out / "last.pt").is_file() and not (out / "best.pt").exists()
    second = runner.invoke(app, [*common, "--resume"])
    assert second.exit_code == 0, second.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2, 3, 4, 5]
    assert metrics.test_accuracy.notna().tolist() == [False, False, False, True, True]
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] in (4, 5)
    assert "best checkpoint" in second.output


def test_train_refuses_an_unknown_model_preset(fer_dir, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(fer_dir), "--out", str(tmp_path / "run"), "--model", "huge"])
    assert result.exit_code == 2
    assert "unknown --model 'huge'" in result.output and "wide" in result.output


def test_a_run_joins_an_exported_ensemble_and_selection_scores_what_the_ensemble_computes(
    ensemble_members, fer_dir, tmp_path
):
    from fer_batch.training.export import export_checkpoint
    from fer_batch.training.select_members import member_probabilities, score_combinations
    from fer_batch.training.train import predict_stills

    pair = tmp_path / "pair.pt"
    export_checkpoint(ensemble_members, pair)
    trio = tmp_path / "trio.pt"
    export_checkpoint([pair, ensemble_members[0]], trio)
    payload = torch.load(trio, weights_only=False)
    origins = [ensemble_members[0], ensemble_members[1], ensemble_members[0]]
    assert payload["exported_from"] == [str(path) for path in origins]
    for entry, origin in zip(payload["ensemble"], origins):
        source_state = torch.load(origin, weights_only=False)["model_state"]
        assert all(torch.equal(entry["model_state"][key], source_state[key]) for key in source_state)
    assert payload["member_metrics"][2]["epoch"] == torch.load(origins[2], weights_only=False)["epoch"]

    probabilities = member_probabilities([pair], str(fer_dir))
    assert list(probabilities) == [f"{pair}#0", f"{pair}#1"]
    labels = load_split(fer_dir, "test").labels
    scores = score_combinations(probabilities, labels)
    assert sorted(len(score.members) for score in scores) == [1, 1, 2]
    assert [score.accuracy for score in scores] == sorted((score.accuracy for score in scores), reverse=True)
    shipped = load_checkpoint(pair)
    ensemble_accuracy = (predict_stills(shipped.model, load_split(fer_dir, "test"), shipped.preprocessing,
                                        torch.device("cpu")).argmax(1) == labels).mean()
    assert next(s for s in scores if len(s.members) == 2).accuracy == pytest.approx(ensemble_accuracy)


def test_half_export_stores_fp16_weights_that_load_as_fp32_with_the_same_answers(ensemble_members, fer_dir, tmp_path):
    from fer_batch.training.export import export_checkpoint
    from fer_batch.training.train import predict_stills

    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    export_checkpoint(ensemble_members, full)
    export_checkpoint(ensemble_members, half, half=True)
    stored = torch.load(half, weights_only=False)["ensemble"][0]["model_state"]
    assert {value.dtype for value in stored.values() if value.is_floating_point()} == {torch.float16}
    assert stored["encoder.features.1.num_batches_tracked"].dtype == torch.int64
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert {parameter.dtype for parameter in loaded.model.parameters()} == {torch.float32}
    faces = load_split(fer_dir, "test").subset(np.arange(200))
    cpu = torch.device("cpu")
    reference = predict_stills(load_checkpoint(full).model, faces, loaded.preprocessing, cpu)
    rounded = predict_stills(loaded.model, faces, loaded.preprocessing, cpu)
    assert np.abs(rounded - reference).max() < 5e-3
    assert (rounded.argmax(1) == reference.argmax(1)).mean() >= 0.98


def _kl_to_teacher(student_path: Path, teacher_path: Path, fer_dir: Path) -> float:
    """Mean KL(teacher || student) of the CNN answers on 200 training stills."""
    from fer_batch.preprocess import normalize_crops

    images = load_split(fer_dir, "train").images[:200]
    answers = []
    for path in (teacher_path, student_path):
        checkpoint = load_checkpoint(path)
        with torch.no_grad():
            features = checkpoint.model.encode(normalize_crops(images, checkpoint.preprocessing))
            answers.append(torch.log_softmax(checkpoint.model.frame_logits(features).float(), dim=1))
    teacher, student = answers
    return float((teacher.exp() * (teacher - student)).sum(1).mean())


def test_distillation_pulls_the_student_towards_the_teacher(trained_run, fer_dir, tmp_path):
    """Same seed, same data, same schedule: with --teacher (distillation alone) the student ends
    nearer the teacher's answers than without it; flip averaging off is recorded for annotate."""
    common = [
        "train", "--data", str(fer_dir), "--small", "--epochs", "2", "--temporal-epochs", "0",
        "--limit-train", "640", "--limit-test", "160", "--batch-size", "64", "--device", "cpu", "--quiet",
        "--seed", "3", "--no-tta-flip",
    ]
    teacher = trained_run / "best.pt"
    plain = runner.invoke(app, [*common, "--out", str(tmp_path / "plain")])
    distilled = runner.invoke(app, [*common, "--out", str(tmp_path / "kd"), "--teacher", str(teacher),
                                    "--distill-weight", "1.0"])
    assert plain.exit_code == 0 and distilled.exit_code == 0, plain.output + distilled.output
    kl_plain = _kl_to_teacher(tmp_path / "plain" / "last.pt", teacher, fer_dir)
    kl_distilled = _kl_to_teacher(tmp_path / "kd" / "last.pt", teacher, fer_dir)
    assert kl_distilled < 0.7 * kl_plain, (kl_distilled, kl_plain)
    student = load_checkpoint(tmp_path / "kd" / "last.pt")
    assert student.preprocessing.tta_flip is False
    assert student.extra["training_config"]["teacher"] == str(teacher)
    bad_weight = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--teacher", str(teacher),
                                     "--distill-weight", "0"])
    assert bad_weight.exit_code == 2 and "distill_weight" in bad_weight.output


def test_export_can_turn_flip_averaging_back_on(trained_run, tmp_path):
    from fer_batch.training.export import export_checkpoint

    run_flip = load_checkpoint(trained_run / "best.pt").preprocessing.tta_flip
    export_checkpoint(trained_run / "best.pt", tmp_path / "as-run.pt")
    export_checkpoint(trained_run / "best.pt", tmp_path / "flipped.pt", half=True, tta_flip=not run_flip)
    assert load_checkpoint(tmp_path / "as-run.pt").preprocessing.tta_flip is run_flip
    assert load_checkpoint(tmp_path / "flipped.pt").preprocessing.tta_flip is (not run_flip)


def test_mixup_blends_the_crops_from_the_runs_own_generator(trained_run, fer_dir, tmp_path):
    """--mixup-alpha blends each crop with another (labels and the teacher's answer in the same
    shares): two runs of one seed end with the same weights, which differ from a run without
    mixup; the setting is recorded in the checkpoint, and it works beside distillation."""
    common = [
        "train", "--data", str(fer_dir), "--small", "--epochs", "1", "--temporal-epochs", "0",
        "--limit-train", "256", "--limit-test", "64", "--batch-size", "64", "--device", "cpu", "--quiet",
        "--seed", "5", "--precision", "fp32", "--teacher", str(trained_run / "best.pt"),
    ]
    for name, extra in (("mix-a", ["--mixup-alpha", "0.4"]), ("mix-b", ["--mixup-alpha", "0.4"]), ("plain", [])):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output

    def weights(name: str) -> dict:
        return torch.load(tmp_path / name / "last.pt", map_location="cpu", weights_only=False)["model_state"]

    first, again, plain = weights("mix-a"), weights("mix-b"), weights("plain")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], plain[key]) for key in first if first[key].is_floating_point())
    assert load_checkpoint(tmp_path / "mix-a" / "last.pt").extra["training_config"]["mixup_alpha"] == 0.4
    refused = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--mixup-alpha", "-1"])
    assert refused.exit_code == 2


def test_the_held_out_slice_is_the_same_for_a_seed_and_never_trained_on(fer_dir):
    """`split_holdout` draws the same images for a seed and others for another seed, and keeps every
    image exactly once; a run with --holdout trains on the rest only."""
    from fer_batch.training.train import SMALL_MODEL, TrainConfig, Trainer, _limit, split_holdout

    images = _limit(load_split(str(fer_dir), "train"), 500, 0)
    kept, held = split_holdout(images, 0.2, seed=3)
    again, held_again = split_holdout(images, 0.2, seed=3)
    _, other = split_holdout(images, 0.2, seed=4)
    assert (len(kept), len(held)) == (400, 100)
    assert np.array_equal(held.images, held_again.images) and np.array_equal(kept.images, again.images)
    assert not np.array_equal(held.images, other.images)
    rows = lambda dataset: {image.tobytes() for image in dataset.images}  # noqa: E731
    assert rows(kept) | rows(held) == rows(images)
    assert sorted(np.concatenate([kept.labels, held.labels]).tolist()) == sorted(images.labels.tolist())
    assert split_holdout(images, 0.0, seed=3) == (images, None)
    run = Trainer(TrainConfig(data=str(fer_dir), limit_train=500, limit_test=32, holdout=0.2, seed=0,
                              model=SMALL_MODEL, device="cpu"), log=lambda _: None)
    trained_on, held_out = split_holdout(images, 0.2, seed=0)
    assert np.array_equal(run.train_set.images, trained_on.images) and np.array_equal(run.holdout_set.images, held_out.images)
    assert len(run.train_set) == 400 and len(run.holdout_set) == 100


def test_sgd_on_plateaus_cuts_the_rate_when_the_held_out_accuracy_stalls_and_resumes(fer_dir, tmp_path, monkeypatch):
    """--optimizer sgd --schedule plateau: Nesterov SGD whose rate is cut by --plateau-factor once the
    held-out accuracy has not risen for --plateau-patience epochs (here it never rises after the first
    epoch); the schedule's state carries over a resume, and the held-out accuracy is in metrics.csv."""
    from fer_batch.training.train import SMALL_MODEL, TrainConfig, Trainer, train

    monkeypatch.setattr(Trainer, "_holdout_accuracy", lambda self: 0.5)
    common = dict(data=str(fer_dir), epochs=3, temporal_epochs=0, batch_size=64, learning_rate=0.01, device="cpu",
                  limit_train=256, limit_test=64, model=SMALL_MODEL, precision="fp32", optimizer="sgd",
                  schedule="plateau", holdout=0.25, plateau_patience=0, plateau_factor=0.5)
    train(TrainConfig(out_dir=str(tmp_path / "whole"), **common), show_progress=False, log=lambda _: None)
    train(TrainConfig(out_dir=str(tmp_path / "halves"), **common), show_progress=False, log=lambda _: None, stop_after=2)
    train(TrainConfig(out_dir=str(tmp_path / "halves"), **common), resume=True, show_progress=False, log=lambda _: None)
    for run in ("whole", "halves"):
        metrics = pd.read_csv(tmp_path / run / "metrics.csv")
        assert np.allclose(metrics.lr, [0.01, 0.01, 0.005]) and (metrics.holdout_accuracy == 0.5).all()
    state = torch.load(tmp_path / "halves" / "last.pt", weights_only=False)
    group = state["optimizer_state"]["param_groups"][0]
    assert group["nesterov"] and group["momentum"] == 0.9 and np.isclose(group["lr"], 0.0025)
    assert group["weight_decay"] == 5e-4  # SGD's default L2, not AdamW's decoupled 0.05
    assert state["training_config"]["holdout"] == 0.25

    adamw = Trainer(TrainConfig(out_dir=str(tmp_path / "adamw"), **{**common, "optimizer": "adamw"}), log=lambda _: None)
    adamw._start_stage("frame")  # the schedule does not choose the optimiser
    assert isinstance(adamw.optimizer, torch.optim.AdamW) and adamw.optimizer.param_groups[0]["weight_decay"] == 0.05

    refused = runner.invoke(app, ["train", "--data", str(fer_dir), "--out", str(tmp_path / "bad"), "--small",
                                  "--schedule", "plateau", "--quiet"])
    assert refused.exit_code != 0 and "--holdout" in refused.output
