"""The PyTorch port of the toxic-comment-classifier BiLSTM, its safe tokenizer loading, and the Toxicity metric.

The reference outputs come from a second, independent implementation written here with numpy: Keras'
``texts_to_sequences`` + ``pad_sequences`` over the full pickled word index, an embedding lookup, an
LSTM cell loop in each direction (Keras gate order i, f, c, o; sigmoid recurrent activation), max pooling
over time and the two dense layers, all in float64 from the h5 weights.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from lineas.metrics import Toxicity, toxicity

MODEL_DIR = toxicity.package_dir()  # installed by `make install` (--no-deps toxic-comment-classifier)
from lineas.metrics.toxicity import (  # noqa: E402
    LABELS,
    RestrictedUnpickler,
    default_classifier,
    load_vocab,
    restricted_loads,
)

RARE = "shattering"  # in the pickled index, but beyond num_words: Keras drops it (no OOV token)
SENTENCES = [
    "Thank you for your help",
    "You are a stupid idiot",
    "I will kill you",
    "WHAT?!?! Don't you DARE revert my edits again, you moron...",
    "The article on the history of the river was expanded with three new sources.",
    f"I was {RARE} the glass; zxqvbnm-blorf is not a word.",
    "",
    " ".join(["please", "stop", "vandalising", "this", "page", "you", "absolute", "clown"] * 16),  # 128 words
]
REFERENCE_TOXIC = {"Thank you for your help": 0.03, "You are a stupid idiot": 0.997, "I will kill you": 0.77}


# --------------------------------------------------------------------------- the independent numpy reference


@pytest.fixture(scope="module")
def keras_tokenizer():
    with open(MODEL_DIR / "tokenizer.pickle", "rb") as f:
        return RestrictedUnpickler(f).load().__dict__


@pytest.fixture(scope="module")
def h5_weights():
    import h5py

    with h5py.File(MODEL_DIR / "model.weights.h5", "r") as f:
        out = {}
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()].astype(np.float64))
                if isinstance(obj, h5py.Dataset) and name.startswith("layers/")
                else None
            )
        )
    return out


def _np_sequences(tok: dict, texts: list[str], maxlen: int = 100) -> np.ndarray:
    """Keras ``texts_to_sequences`` then ``pad_sequences(maxlen)`` ('pre' padding and truncating)."""
    out = np.zeros((len(texts), maxlen), dtype=np.int64)
    for row, text in enumerate(texts):
        text = text.lower() if tok["lower"] else text
        for c in tok["filters"]:
            text = text.replace(c, tok["split"])
        seq = []
        for word in (w for w in text.split(tok["split"]) if w):
            i = tok["word_index"].get(word)
            if i is not None and i < tok["num_words"]:
                seq.append(i)
        seq = seq[-maxlen:]
        if seq:
            out[row, maxlen - len(seq) :] = seq
    return out


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_lstm(x: np.ndarray, kernel, recurrent, bias) -> np.ndarray:
    """(N, T, D) -> (N, T, U) hidden states, one time step at a time."""
    n, steps, _ = x.shape
    units = recurrent.shape[0]
    h, c = np.zeros((n, units)), np.zeros((n, units))
    hs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
        h = _np_sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1)


def _np_model(w: dict, ids: np.ndarray) -> np.ndarray:
    x = w["layers/embedding/vars/0"][ids]
    cell = "layers/bidirectional/{}/cell/vars/{}"
    fwd = _np_lstm(x, *(w[cell.format("forward_layer", k)] for k in range(3)))
    bwd = _np_lstm(x[:, ::-1], *(w[cell.format("backward_layer", k)] for k in range(3)))[:, ::-1]
    pooled = np.concatenate([fwd, bwd], axis=-1).max(axis=1)
    hidden = np.maximum(pooled @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"], 0.0)
    return _np_sigmoid(hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"])


# --------------------------------------------------------------------------- (a) port == reference


def test_encoder_matches_keras_preprocessing(keras_tokenizer):
    assert keras_tokenizer["word_index"][RARE] >= keras_tokenizer["num_words"]  # the cap is exercised
    expected = _np_sequences(keras_tokenizer, SENTENCES)
    ids = toxicity.default_classifier().encoder(SENTENCES)
    assert ids.dtype == torch.long and ids.shape == (len(SENTENCES), 100)
    np.testing.assert_array_equal(ids.numpy(), expected)
    assert not ids[6].any()  # the empty text is all padding
    assert (ids[7] != 0).all()  # 128 known words: truncated to the last 100
    assert ids[0, :-5].eq(0).all() and ids[0, -5:].ne(0).all()  # padded at the front


def test_port_reproduces_numpy_reference(keras_tokenizer, h5_weights):
    expected = _np_model(h5_weights, _np_sequences(keras_tokenizer, SENTENCES))
    got = default_classifier().score(SENTENCES, batch_size=3)  # several batches, the last one short
    assert got.shape == (len(SENTENCES), len(LABELS)) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)
    assert not torch.is_grad_enabled() or not got.requires_grad


# --------------------------------------------------------------------------- (b) checked reference scores


def test_reference_sentences():
    probs = default_classifier().score(list(REFERENCE_TOXIC))[:, LABELS.index("toxic")]
    for (text, ref), p in zip(REFERENCE_TOXIC.items(), probs.tolist()):
        assert abs(p - ref) <= 0.02, (text, p, ref)


# --------------------------------------------------------------------------- (c) the unpickler


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalEvil:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize(
    "make",
    [
        lambda marker: pickle.dumps(_Evil(marker)),
        lambda marker: pickle.dumps({"word_index": {"a": 1}, "x": _Evil(marker)}, protocol=2),
        lambda marker: pickle.dumps([_EvalEvil()], protocol=0),
    ],
)
def test_unpickler_refuses_other_globals(tmp_path, make):
    marker = tmp_path / "pwned"
    data = make(marker)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_loads(data)
    assert not marker.exists()


def test_unpickler_replaces_tokenizer_class():
    import collections

    state = {"word_index": {"hello": 1}, "word_docs": collections.defaultdict(int, {"hello": 2})}
    body = pickle.dumps(state, protocol=2, fix_imports=False)[2:-1]  # without PROTO and STOP
    # PROTO 2, GLOBAL keras...Tokenizer, EMPTY_TUPLE, NEWOBJ, <state>, BUILD, STOP: what Keras' pickle does.
    data = b"\x80\x02ckeras.src.legacy.preprocessing.text\nTokenizer\n)\x81" + body + b"b."
    loaded = restricted_loads(data)
    assert type(loaded) is toxicity._KerasTokenizerState
    assert loaded.word_index == {"hello": 1} and loaded.word_docs["hello"] == 2
    with pytest.raises(pickle.UnpicklingError):  # the same class under another module is refused
        restricted_loads(data.replace(b"keras.src.legacy", b"keras.src.evil.xx"))


def test_vocab_is_converted_once_to_json(tmp_path, monkeypatch):
    vocab = load_vocab(cache=tmp_path)
    (json_file,) = tmp_path.glob("toxic-classifier-tokenizer-*.json")
    assert vocab["num_words"] == 20000 and vocab["oov_index"] is None and vocab["lower"] is True
    assert max(vocab["word_index"].values()) == 19999
    monkeypatch.setattr(toxicity, "restricted_loads", lambda data: pytest.fail("the pickle was read again"))
    assert load_vocab(cache=tmp_path) == vocab
    json_file.write_text("{not json")  # a damaged cache is rebuilt
    monkeypatch.undo()
    assert load_vocab(cache=tmp_path) == vocab


# --------------------------------------------------------------------------- (d) the metric


def test_metric_batches_and_threshold():
    texts = list(REFERENCE_TOXIC)  # toxic ~0.03, ~0.997, ~0.77
    toxic = default_classifier().score(texts)[:, 0]

    one = Toxicity()
    one.update(texts)
    two = Toxicity()
    two.update(texts[:1])
    two.update(texts[1:])
    a, b = one.compute(), two.compute()
    assert set(a) == {"mean", "rate", "se"}
    torch.testing.assert_close(a["mean"], b["mean"])
    torch.testing.assert_close(a["se"], b["se"])
    torch.testing.assert_close(a["se"], toxic.std() / math.sqrt(3))  # std with n - 1
    torch.testing.assert_close(a["rate"], b["rate"])
    torch.testing.assert_close(a["mean"], toxic.mean())
    assert a["rate"].item() == pytest.approx(2 / 3)

    strict = Toxicity(threshold=0.9)
    strict.update(texts)
    assert strict.compute()["rate"].item() == pytest.approx(1 / 3)
    lax = Toxicity(threshold=0.01)
    lax.update("I will kill you")  # a single string is one text
    assert lax.compute()["rate"].item() == 1.0 and lax.total.item() == 1

    one.reset()
    one.update(texts[:1])
    assert one.compute()["rate"].item() == 0.0


def test_metric_state_is_small_and_summed():
    metric = Toxicity()
    assert set(metric.state_dict()) <= {"score_sum", "above", "total"}  # no classifier weights
    assert all(fx.__name__ in ("dim_zero_sum", "sum") for fx in metric._reductions.values())
    assert metric.score(["hello there"]).shape == (1, len(LABELS))
    assert metric.total.item() == 0  # score() leaves the state alone
    with pytest.raises(ValueError):
        Toxicity(label="rude")
