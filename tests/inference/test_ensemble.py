"""Ensembles: several models decoding as one, by the mean of their log-probabilities."""

import json
import shutil

import numpy as np
import pytest
from keras import ops
from PIL import Image

from captioner.cli import main
from captioner.data.vocabulary import Vocabulary
from captioner.errors import RunDirectoryError
from captioner.inference.captioner import Captioner, load_model_file
from captioner.inference.ensemble import DecoderEnsemble
from captioner.inference.export import export_model
from tests.helpers import TINY_WORDS, tiny_model, write_untrained_run

WORDS = TINY_WORDS


@pytest.fixture(scope="module")
def models():
    """A paper-decoder and a top-down model over one vocabulary and one encoder."""
    paper = tiny_model(WORDS)
    topdown = tiny_model(WORDS, decoder="topdown")
    topdown.encoder.set_weights(paper.encoder.get_weights())
    return paper, topdown


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)


def test_a_step_is_the_mean_of_the_members_log_probabilities(models, images):
    paper, topdown = models
    ensemble = DecoderEnsemble([paper.decoder, topdown.decoder])
    annotations = [m.encode(images)[0] for m in models]
    state = ensemble.initial_state(annotations)
    alone = [m.decoder.initial_state(a) for m, a in zip(models, annotations)]
    assert len(state) == len(alone[0]) + len(alone[1])
    # Each member's static entries, after the ones before it.
    assert ensemble.static_state_entries == (2, 3, 4 + 4, 4 + 5)
    tokens = np.array([1, 5, 6], np.int32)
    for _ in range(2):  # the second step checks that each member got its own state back
        log_probs, state, alpha, beta = ensemble.step(tokens, state)
        outputs = [m.decoder.step(tokens, s) for m, s in zip(models, alone)]
        expected = np.mean(
            [ops.convert_to_numpy(ops.log_softmax(out[0], axis=-1)) for out in outputs], axis=0
        )
        np.testing.assert_allclose(ops.convert_to_numpy(log_probs), expected, atol=1e-5)
        np.testing.assert_allclose(  # the maps are the first model's
            ops.convert_to_numpy(alpha), ops.convert_to_numpy(outputs[0][2]), atol=1e-6
        )
        np.testing.assert_allclose(
            ops.convert_to_numpy(beta), ops.convert_to_numpy(outputs[0][3]), atol=1e-6
        )
        alone = [out[1] for out in outputs]
        tokens = np.argmax(expected, axis=-1).astype(np.int32)


def test_greedy_ensemble_captions_follow_the_mean_log_probabilities(models, images):
    paper, topdown = models
    vocab = Vocabulary(WORDS)
    out = Captioner(paper, vocab, members=[topdown]).generate(images)
    # The same decoding, one Python step at a time with the models apart.
    states = [m.decoder.initial_state(m.encode(images)[0]) for m in models]
    tokens = np.full(len(images), vocab.start_id, np.int32)
    finished = np.zeros(len(images), bool)
    for t in range(paper.max_length + 1):
        steps = [m.decoder.step(tokens, s) for m, s in zip(models, states)]
        states = [step[1] for step in steps]
        log_probs = np.mean(
            [ops.convert_to_numpy(ops.log_softmax(step[0], axis=-1)) for step in steps], axis=0
        )
        log_probs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
        if t == 0:
            log_probs[:, vocab.end_id] = -np.inf
        tokens = np.where(finished, vocab.pad_id, np.argmax(log_probs, axis=-1)).astype(np.int32)
        np.testing.assert_array_equal(out["tokens"][:, t], tokens)
        finished |= tokens == vocab.end_id


def test_beam_search_of_a_model_with_itself_is_the_model_alone(models, images):
    paper, _ = models
    vocab = Vocabulary(WORDS)
    alone = Captioner(paper, vocab, beam_size=3, length_penalty=1).generate(images)
    doubled = Captioner(paper, vocab, beam_size=3, length_penalty=1, members=[paper]).generate(
        images
    )
    np.testing.assert_array_equal(doubled["tokens"], alone["tokens"])
    np.testing.assert_allclose(doubled["scores"], alone["scores"], atol=1e-4)
    np.testing.assert_allclose(doubled["alphas"], alone["alphas"], atol=1e-6)


def test_cached_features_give_the_captions_of_images(models, images):
    paper, topdown = models
    captioner = Captioner(paper, Vocabulary(WORDS), beam_size=2, members=[topdown])
    features = ops.convert_to_numpy(paper.grid_features(images))
    np.testing.assert_array_equal(
        captioner.generate_from_features(features)["tokens"], captioner.generate(images)["tokens"]
    )


def test_members_with_another_encoder_or_vocabulary_are_refused(models):
    paper, _ = models
    other_encoder = tiny_model(WORDS)  # freshly initialised: other encoder weights
    with pytest.raises(ValueError, match="share the encoder"):
        Captioner(paper, Vocabulary(WORDS), members=[other_encoder])
    with pytest.raises(ValueError, match="built for"):
        Captioner(paper, Vocabulary(WORDS), members=[tiny_model(WORDS[:-1])])
    with pytest.raises(ValueError, match="at least two"):
        DecoderEnsemble([paper.decoder])


def test_an_ensemble_cannot_be_exported(models, tmp_path):
    paper, topdown = models
    captioner = Captioner(paper, Vocabulary(WORDS), members=[topdown])
    with pytest.raises(ValueError, match="ensemble cannot be exported"):
        export_model(captioner, tmp_path / "export")
    assert not (tmp_path / "export").exists()


@pytest.fixture
def second_run(untrained_run, tmp_path):
    """A copy of `untrained_run` with other decoder weights, the same encoder and vocabulary."""
    run = tmp_path / "second"
    shutil.copytree(untrained_run, run)
    model = load_model_file(run / "model.keras")
    decoder_weights = model.decoder.get_weights()
    rng = np.random.default_rng(0)
    model.decoder.set_weights([w + rng.normal(0, 0.5, w.shape) for w in decoder_weights])
    model.save(run / "model.keras")
    return run


def test_run_directories_with_another_vocabulary_or_encoder_are_named(
    untrained_run, second_run, tmp_path
):
    captioner = Captioner.from_run_dir(untrained_run, ensemble=[second_run], beam_size=2)
    assert len(captioner.members) == 1
    vocab = json.loads((second_run / "vocab.json").read_text())
    vocab["itos"][-1] = "triangle"
    (second_run / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(RunDirectoryError, match=r"second/vocab\.json: another vocabulary"):
        Captioner.from_run_dir(untrained_run, ensemble=[second_run])

    bigger = write_untrained_run(tmp_path / "bigger", image_size=64)
    with pytest.raises(RunDirectoryError, match=r"bigger/model\.keras: another encoder"):
        Captioner.from_run_dir(untrained_run, ensemble=[bigger])


def test_cli_captions_with_an_ensemble_and_needs_out_to_evaluate(
    untrained_run, second_run, tmp_path, capsys
):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    args = ["caption", "--model", str(untrained_run), str(image), "--format", "json"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--ensemble", str(second_run)]) == 0
    together = json.loads(capsys.readouterr().out)
    assert together["image"] == alone["image"] == str(image)
    assert together["score"] != alone["score"]  # the second model changed the scores

    code = main(["evaluate", "--model", str(untrained_run), "--ensemble", str(second_run)])
    assert code == 2
    assert "--ensemble needs --out" in capsys.readouterr().err
