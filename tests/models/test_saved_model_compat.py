"""A model file saved before the package moved into stage folders still loads and runs."""

import numpy as np

from captioner.inference.captioner import load_model_file
from captioner.models.captioning_model import CaptioningModel
from tests.helpers import FIXTURES

SAVED = FIXTURES / "saved_models"


def test_a_model_saved_by_the_flat_layout_loads_with_the_same_outputs():
    # Written at commit 62e0c6d, when the model lived in captioner/model.py: registered Keras
    # names ("captioner>CaptioningModel", ...) are what a .keras file refers to.
    model = load_model_file(SAVED / "tiny_small_cnn_v1.keras")
    assert isinstance(model, CaptioningModel)
    assert model.feature_norm and model.feature_dim == 12
    assert model.decoder_kind == "paper"  # saved before the decoder became an option
    expected = np.load(SAVED / "tiny_small_cnn_v1_outputs.npz")
    out = model((expected["images"], expected["caption_in"]))
    np.testing.assert_allclose(np.asarray(out["logits"]), expected["logits"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["alphas"]), expected["alphas"], atol=1e-6)
