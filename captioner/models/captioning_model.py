"""The captioning model: encoder + decoder, with the paper's training loss."""

from __future__ import annotations

import keras
from keras import ops

from captioner.models.decoder import AttentionDecoder
from captioner.models.encoders import build_encoder
from captioner.models.encoders.coordinates import append_coordinates
from captioner.models.topdown_decoder import TopDownDecoder


def caption_loss(targets, logits, alphas, penalty_weight=1.0):
    """Masked cross-entropy plus the doubly stochastic attention penalty.

    Args:
        targets: (B, T) ids, 0 on padding; or (B, C, T), C captions per image, flattened
            to the order of the logits' rows.
        logits: (B, T, V).
        alphas: (B, T, L) attention weights.
        penalty_weight: lambda.

    Returns:
        (total, cross_entropy, penalty): cross-entropy is the mean over real tokens only;
        penalty = mean_b sum_i (1 - sum_t alpha_ti)^2 with t over real steps only, b over
        the captions with at least one real token (an image with fewer than C captions
        has all-padding rows, which count nowhere).
    """
    cross_entropy_sum, tokens, penalty_sum, captions = caption_loss_sums(targets, logits, alphas)
    cross_entropy = cross_entropy_sum / ops.maximum(tokens, 1.0)
    penalty = penalty_sum / ops.maximum(captions, 1.0)
    return cross_entropy + penalty_weight * penalty, cross_entropy, penalty


def caption_loss_sums(targets, logits, alphas):
    """The loss as sums, for batches split over several devices; all float32.

    Returns:
        (cross_entropy_sum, tokens, penalty_sum, captions): the summed cross-entropy of the
        real tokens, their number, sum_b sum_i (1 - sum_t alpha_ti)^2 over the captions
        with real tokens, and the number of those captions.
    """
    targets = ops.reshape(targets, (-1, ops.shape(targets)[-1]))  # (B, C, T) -> (B·C, T)
    mask = ops.cast(ops.not_equal(targets, 0), "float32")  # (B, T)
    logits = ops.cast(logits, "float32")
    token_loss = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    penalty_sum, captions = attention_penalty_sums(targets, alphas)
    return ops.sum(token_loss * mask), ops.sum(mask), penalty_sum, captions


def attention_penalty_sums(targets, alphas):
    """The doubly stochastic attention penalty of captions (B, T) (0 after the last token)
    with attention maps alphas (B, T, L): (sum_b sum_i (1 - sum_t alpha_ti)^2 over the
    captions with real tokens, the number of those captions), float32."""
    mask = ops.cast(ops.not_equal(targets, 0), "float32")  # (B, T)
    attention_sum = ops.sum(ops.cast(alphas, "float32") * mask[..., None], axis=1)  # (B, L)
    real = ops.max(mask, axis=-1)  # (B,) 1 for the captions with real tokens
    penalty_sum = ops.sum(real * ops.sum(ops.square(1.0 - attention_sum), axis=-1))
    return penalty_sum, ops.sum(real)


def _serialize_encoder(encoder):
    # Without its build config: the model builds the encoder itself, by running it.
    config = keras.saving.serialize_keras_object(encoder)
    config.pop("build_config", None)
    return config


# "paper": attention from h_{t-1} (Xu et al.); "topdown": from a state that has read the
# previous word (see `TopDownDecoder`).
DECODERS = {"paper": AttentionDecoder, "topdown": TopDownDecoder}


@keras.saving.register_keras_serializable(package="captioner")
class CaptioningModel(keras.Model):
    """Image (B, S, S, 3) uint8 + previous words (B, T) -> next-word logits and attention.

    Inputs are `(images, caption_in)`. In training, `images` may instead be the cached
    output of `grid_features` (B, L, D), so that a frozen encoder runs once per image and
    not every epoch, and `caption_in` may hold C captions per image (B, C, T): the image is
    encoded once and its annotations shared by its C captions (logits then have B·C rows).

    Args:
        vocab_size: V.
        encoder: an encoder name (see `captioner.models.encoders.ENCODERS`), or a serialized
            encoder layer (as in a saved model's config).
        image_size: S.
        encoder_weights: None, "imagenet" or a local file, used at construction only; a
            saved model carries its weights and its config says None.
        grid_stride: where an offline encoder is cut (see `build_encoder`), at construction
            only; a saved model's serialized encoder carries it.
        train_encoder: whether the encoder's weights are trained.
        penalty_weight: lambda of the doubly stochastic penalty (0 for the ablation).
        feature_dim: if > 0, the encoder's features are first projected to this depth by a
            trained linear map (a 1x1 convolution on the grid): it keeps the decoder small
            on top of wide frozen backbones (1280 channels).
        feature_norm: standardise the encoder's features per channel (batch normalization)
            before the projection.
        grid_coordinates: append every cell's (x, y) to its features (see
            `append_coordinates`).
        max_length: the longest caption (words) the model is trained for and generates.
        decoder: "paper" (`AttentionDecoder`) or "topdown" (`TopDownDecoder`).
        coverage: attention that sees how much each cell has been attended so far.
        **decoder_options: the decoder's arguments (embed_dim, units, ...).
    """

    def __init__(
        self,
        vocab_size,
        encoder="small_cnn",
        image_size=128,
        encoder_weights=None,
        grid_stride=32,
        train_encoder=True,
        penalty_weight=1.0,
        feature_dim=0,
        feature_norm=False,
        grid_coordinates=True,
        max_length=20,
        embed_dim=64,
        units=256,
        attention_dim=128,
        dropout=0.3,
        attention="soft",
        decoder="paper",
        coverage=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.image_size = image_size
        self.train_encoder = train_encoder
        self.penalty_weight = penalty_weight
        self.feature_dim = feature_dim
        self.feature_norm = feature_norm
        self.grid_coordinates = grid_coordinates
        self.max_length = max_length
        if isinstance(encoder, dict):
            self.encoder = keras.saving.deserialize_keras_object(encoder)
        else:
            self.encoder = build_encoder(
                encoder, image_size, encoder_weights, grid_stride=grid_stride
            )
        self.encoder.trainable = train_encoder
        # Pretrained grids come on their own scale (channel means up to +-9, std 3-8 for
        # EfficientNet-Lite's stride-16 block); standardising them keeps the attention MLP's
        # tanh out of saturation.
        self.normalization = (
            keras.layers.BatchNormalization(name="feature_norm") if feature_norm else None
        )
        self.projection = (
            keras.layers.Dense(feature_dim, name="projection") if feature_dim else None
        )
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.decoder_kind = decoder
        self.decoder = DECODERS[decoder](
            vocab_size,
            embed_dim=embed_dim,
            units=units,
            attention_dim=attention_dim,
            dropout=dropout,
            attention=attention,
            coverage=coverage,
            name="decoder",
        )
        self.cross_entropy_tracker = keras.metrics.Mean(name="xent")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")

    def grid_features(self, images, training=False):
        """(B, S, S, 3) uint8 images -> the encoder's grid, flattened: (B, L, D_encoder).

        This is what the feature cache stores for a frozen encoder.
        """
        features = self.encoder(images, training=training and self.train_encoder)
        _, height, width, depth = features.shape
        return ops.reshape(features, (-1, height * width, depth))

    def annotate(self, features, grid=None, training=False):
        """(B, L, D_encoder) grid features -> (B, L, D) annotations for the decoder.

        `grid` is (gh, gw) with gh·gw = L; by default the grid of `image_size` inputs.
        """
        x = ops.cast(features, self.compute_dtype)
        if self.normalization is not None:
            x = self.normalization(x, training=training)
        if self.projection is not None:
            x = self.projection(x)
        if self.grid_coordinates:
            height, width = grid or self.grid_size
            x = append_coordinates(ops.reshape(x, (-1, height, width, x.shape[-1])))
            x = ops.reshape(x, (-1, height * width, x.shape[-1]))
        return x

    def encode(self, images, training=False):
        """(B, S, S, 3) uint8 images -> (B, L, D) annotations and the grid (gh, gw)."""
        grid = self.encoder.compute_output_shape(tuple(images.shape))[1:3]
        features = self.grid_features(images, training=training)
        return self.annotate(features, grid, training=training), grid

    @property
    def grid_size(self):
        shape = self.encoder.compute_output_shape((None, self.image_size, self.image_size, 3))
        return shape[1], shape[2]

    def call(self, inputs, training=False):
        images, caption_in = inputs
        if len(images.shape) == 3:  # cached grid features
            annotations = self.annotate(images, training=training)
        else:
            annotations, _ = self.encode(images, training=training)
        repeats = 1
        if len(caption_in.shape) == 3:  # (B, C, T): C captions per image
            repeats = caption_in.shape[1]
            caption_in = ops.reshape(caption_in, (-1, caption_in.shape[-1]))  # (B·C, T)
        logits, alphas, betas = self.decoder(
            annotations, caption_in, training=training, repeats=repeats
        )
        return {"logits": logits, "alphas": alphas, "betas": betas}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, cross_entropy, penalty = caption_loss(
            y, y_pred["logits"], y_pred["alphas"], self.penalty_weight
        )
        self.cross_entropy_tracker.update_state(cross_entropy)
        self.penalty_tracker.update_state(penalty)
        return total + ops.sum(self.losses) if self.losses else total

    def build(self, input_shape=None):
        # Runs the model once on dummy inputs so that every weight exists (also on load).
        if self.built:
            return
        self.built = True  # before the call, which would otherwise build again
        images = ops.zeros((1, self.image_size, self.image_size, 3), "uint8")
        caption_in = ops.zeros((1, 2), "int32")
        self((images, caption_in))

    def get_build_config(self):
        return {"image_size": self.image_size}

    def build_from_config(self, config):
        self.build()

    def get_config(self):
        config = super().get_config()
        decoder = self.decoder
        config.update(
            vocab_size=self.vocab_size,
            encoder=_serialize_encoder(self.encoder),
            image_size=self.image_size,
            encoder_weights=None,
            train_encoder=self.train_encoder,
            penalty_weight=self.penalty_weight,
            feature_dim=self.feature_dim,
            feature_norm=self.feature_norm,
            grid_coordinates=self.grid_coordinates,
            max_length=self.max_length,
            embed_dim=decoder.embed_dim,
            units=decoder.units,
            attention_dim=decoder.attention_dim,
            dropout=decoder.dropout_rate,
            attention=decoder.attention_mode,
            decoder=self.decoder_kind,
            coverage=decoder.coverage,
        )
        return config
