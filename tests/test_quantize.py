"""int8 inference of the encoder (fer_batch.quantize): the shipped int8 network, its storage, the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_batch.model import EmotionEnsemble, EmotionNet, MODEL_PRESETS, checkpoint_payload, load_checkpoint, save_checkpoint
from fer_batch.preprocess import Preprocessing, normalize_crops
from fer_batch.quantize import INT8_KEY, Int8Encoder, apply_int8, calibrate_int8, resolve_precision
from fer_batch.training.data import load_split
from fer_batch.training.train import predict_stills


@pytest.fixture(scope="module")
def publictest_sample(fer_dir):
    """1,000 PublicTest crops, a seeded random subset that keeps every class."""
    dataset = load_split(fer_dir, "test")
    chosen = np.sort(np.random.default_rng(3).permutation(len(dataset))[:1000])
    return dataset.subset(chosen)


def test_shipped_int8_network_answers_like_the_float_one(shipped_weights, publictest_sample):
    """The shipped file carries int8 encoders; on real PublicTest crops, with the shipped flip
    averaging, int8 gives the float network's label for nearly every face and the same accuracy
    within a point (the whole split: 72.08 % fp32, fer_batch/weights/README.md for int8)."""
    float_checkpoint = load_checkpoint(shipped_weights, precision="fp32")
    int8_checkpoint = load_checkpoint(shipped_weights, precision="int8")
    assert float_checkpoint.precision == "fp32" and int8_checkpoint.precision == "int8"
    assert isinstance(int8_checkpoint.model.encoder, Int8Encoder)
    assert not isinstance(float_checkpoint.model.encoder, Int8Encoder)
    cpu = torch.device("cpu")
    floats = predict_stills(float_checkpoint.model, publictest_sample, float_checkpoint.preprocessing, cpu)
    int8s = predict_stills(int8_checkpoint.model, publictest_sample, int8_checkpoint.preprocessing, cpu)
    labels = publictest_sample.labels
    agreement = (floats.argmax(1) == int8s.argmax(1)).mean()
    assert agreement >= 0.95, agreement
    assert abs((floats.argmax(1) == labels).mean() - (int8s.argmax(1) == labels).mean()) <= 0.01
    assert np.abs(floats - int8s).mean() < 0.02
    np.testing.assert_allclose(int8s.sum(1), 1.0, atol=1e-5)


def test_auto_precision_is_int8_on_the_cpu_with_the_shipped_weights(shipped_weights):
    assert load_checkpoint(shipped_weights, precision="auto", device="cpu").precision == "int8"
    assert resolve_precision("auto", torch.device("cuda"), has_int8=True) == "fp32"
    assert resolve_precision("auto", torch.device("cpu"), has_int8=False) == "fp32"
    assert resolve_precision("fp32", torch.device("cpu"), has_int8=True) == "fp32"


def test_refusals_name_the_cause(tmp_path):
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"), has_int8=True)
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        resolve_precision("int4", torch.device("cpu"), has_int8=True)
    plain = tmp_path / "plain.pt"
    save_checkpoint(checkpoint_payload(EmotionNet(MODEL_PRESETS["small"]), ("a", "b", "c", "d", "e", "f", "g"),
                                       Preprocessing()), plain)
    with pytest.raises(ValueError, match="carries no int8 encoders.*fer_batch.training.quantize"):
        load_checkpoint(plain, precision="int8")
    assert load_checkpoint(plain, precision="auto").precision == "fp32"  # an older file still loads


@pytest.mark.parametrize("members", [1, 2])
def test_stored_int8_encoders_rebuild_the_calibrated_network_exactly(tmp_path, publictest_sample, members):
    """What calibration converts is what every later load rebuilds from the file (no data needed),
    for a single network and for each member of an ensemble."""
    torch.manual_seed(0)
    networks = [EmotionNet(MODEL_PRESETS["small"]).eval() for _ in range(members)]
    model = networks[0] if members == 1 else EmotionEnsemble(networks).eval()
    preprocessing = Preprocessing()
    crops = normalize_crops(publictest_sample.images[:256], preprocessing)
    states = calibrate_int8(model, [crops[:128], crops[128:]])
    assert len(states) == members
    if members == 1:
        payload = checkpoint_payload(model, tuple("abcdefg"), preprocessing)
    else:
        from fer_batch.model import ensemble_payload

        payload = ensemble_payload([checkpoint_payload(network, tuple("abcdefg"), preprocessing) for network in networks])
    payload[INT8_KEY] = states
    path = tmp_path / "with-int8.pt"
    save_checkpoint(payload, path)

    import copy

    in_memory = apply_int8(copy.deepcopy(model), states)
    loaded = load_checkpoint(path, precision="int8")
    probe = normalize_crops(publictest_sample.images[300:364], preprocessing)
    with torch.no_grad():
        expected = in_memory.encode(probe, flip_average=True)
        rebuilt = loaded.model.encode(probe, flip_average=True)
        reference = model.encode(probe, flip_average=True)
    assert torch.equal(expected, rebuilt)
    assert rebuilt.shape == reference.shape
    # int8 follows the float features: relative error of a few per cent, not noise
    assert (rebuilt - reference).norm() / reference.norm() < 0.1
    with pytest.raises(ValueError, match="already int8"):
        apply_int8(in_memory, states)
    with pytest.raises(ValueError, match=f"stores {members + 1} int8 encoders for {members} networks"):
        apply_int8(copy.deepcopy(model), states + states[:1])


def test_a_run_records_the_precision_it_ran_in(media_dir, annotator):
    """The default CPU annotator runs int8 and says so in the output metadata; fp32 finds the very
    same faces (detection is untouched) and nearly always the same emotion."""
    from fer_batch.api import iter_faces
    from fer_batch.pipeline import Annotator

    photo = media_dir / "group-six-faces.jpg"
    assert annotator.checkpoint.precision == "int8"
    int8_run = annotator.run([photo])
    int8_faces = list(int8_run)
    assert int8_run.metadata().precision == "int8"
    float_annotator = Annotator(device="cpu", precision="fp32")
    float_run = float_annotator.run([photo])
    float_faces = list(float_run)
    assert float_run.metadata().precision == "fp32"
    np.testing.assert_array_equal(int8_faces[0].boxes, float_faces[0].boxes)
    same = (int8_faces[0].probabilities.argmax(1) == float_faces[0].probabilities.argmax(1)).mean()
    assert same >= 5 / 6
    with pytest.raises(ValueError, match="precision='fp32'"):
        next(iter_faces([photo], annotator=annotator, precision="fp32"))
