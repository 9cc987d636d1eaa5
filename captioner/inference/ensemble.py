"""Several trained decoders captioning as one: the mean of their words' log-probabilities.

Models trained apart make different mistakes; decoding with the mean of their
log-probabilities at every step (a product of their distributions, renormalised by the
search) gives better captions than any one of them. The members must share the vocabulary
and read the same encoder grid; each projects it with its own layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops


class DecoderEnsemble:
    """Decoders stepping together, with the interface of one decoder for the searches.

    The state is the members' states one after the other; alpha and beta are the first
    member's, so attention maps are those of the first model.

    Args:
        decoders: two or more decoders (`AttentionDecoder` or `TopDownDecoder`) over one
            vocabulary.
    """

    def __init__(self, decoders: Sequence):
        if len(decoders) < 2:
            raise ValueError(f"an ensemble needs at least two decoders, got {len(decoders)}")
        sizes = {decoder.vocab_size for decoder in decoders}
        if len(sizes) != 1:
            raise ValueError(f"the decoders' vocabularies differ in size: {sorted(sizes)}")
        self.decoders = tuple(decoders)
        self._state_sizes: tuple[int, ...] | None = None  # known once a state is made

    def initial_state(self, annotations: Sequence) -> tuple:
        """One (B, L, D_m) annotations per member -> the joint decoding state."""
        if len(annotations) != len(self.decoders):
            raise ValueError(
                f"{len(annotations)} annotations for an ensemble of {len(self.decoders)}"
            )
        states = [d.initial_state(a) for d, a in zip(self.decoders, annotations)]
        self._state_sizes = tuple(len(state) for state in states)
        return tuple(x for state in states for x in state)

    @property
    def static_state_entries(self) -> tuple[int, ...]:
        """The joint state's entries that no member changes from step to step."""
        if self._state_sizes is None:
            raise RuntimeError("static_state_entries is known after initial_state")
        entries, offset = [], 0
        for decoder, size in zip(self.decoders, self._state_sizes):
            entries += [offset + i for i in decoder.static_state_entries]
            offset += size
        return tuple(entries)

    def step(self, tokens, state, training=False):
        """One step of every member: (B,) tokens -> the mean log-probabilities (B, V), the
        joint state, and the first member's alpha (B, L) and beta (B,)."""
        if self._state_sizes is None:
            raise RuntimeError("step needs a state made by initial_state")
        log_probs, new_state, offset = 0.0, [], 0
        for decoder, size in zip(self.decoders, self._state_sizes):
            logits, member_state, alpha, beta = decoder.step(
                tokens, tuple(state[offset : offset + size]), training=training
            )
            log_probs += ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
            new_state += list(member_state)
            if offset == 0:
                first_alpha, first_beta = alpha, beta
            offset += size
        return log_probs / len(self.decoders), tuple(new_state), first_alpha, first_beta
