"""A toxicity scorer that needs no hub and no TensorFlow: the ``toxic-comment-classifier`` BiLSTM in PyTorch.

The PyPI package ``toxic-comment-classifier==0.3.0`` (MIT; install it with ``--no-deps``: it declares
tensorflow) ships, in ``toxic_classifier/model/``:

- ``model.weights.h5``: Keras 3 weights of ``Embedding(20000, 50) -> Bidirectional(LSTM(50,
  return_sequences=True)) -> GlobalMaxPooling1D -> Dense(50, relu) -> Dropout -> Dense(6, sigmoid)``
  (the architecture is only in the package's ``model.py``; the h5 holds no config, so the LSTM runs with
  Keras' defaults: tanh activation, **sigmoid** recurrent activation, gate order i, f, c, o);
- ``tokenizer.pickle``: a Keras ``Tokenizer`` (``num_words=20000``, ``lower=True``, ``split=" "``, the
  default filters, no OOV token); ``classify`` pads and truncates its sequences at the front ('pre',
  the ``pad_sequences`` defaults) to 100 tokens and applies no other cleaning.

Nothing here imports the package (that would need tensorflow): it is located with ``find_spec``. The
pickle is never loaded with a plain ``pickle.load``: :class:`RestrictedUnpickler` allows only the four
globals the file references (the Keras Tokenizer, replaced by an inert stand-in; ``OrderedDict``;
``defaultdict``; ``int``) and refuses everything else. Its vocabulary is converted once to JSON in the
lineas cache (``lineas.models.cache.cache_dir()``), keyed by the pickle's SHA-256, and read from there afterwards.

``Toxicity`` is a concept scorer (:class:`lineas.metrics.concept.ConceptScore`, a ``torchmetrics.Metric``):
``update(texts)`` scores a list of strings (CPU, batched, no grad) and ``compute()`` gives ``{"mean": mean
"toxic" probability, "rate": fraction above threshold, "se": standard error of the mean}``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.util
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lineas.core.errors import ModelSourceError
from lineas.core.files import write_json
from lineas.metrics.concept import ConceptScore

LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAXLEN = 100
VOCAB_SIZE = 20000
EMBEDDING_DIM = 50
LSTM_UNITS = 50
DENSE_UNITS = 50
PACKAGE = "toxic_classifier"
PIP_HINT = "pip install --no-deps toxic-comment-classifier==0.3.0"
_JSON_FORMAT = 1


# --------------------------------------------------------------------------- locating the package files


def package_dir() -> Path:
    """``toxic_classifier/model/`` of the installed wheel, found without importing it (it needs tensorflow)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"the toxicity scorer's weights come from the PyPI package toxic-comment-classifier: run `{PIP_HINT}`"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


# --------------------------------------------------------------------------- the tokenizer, safely


class _KerasTokenizerState:
    """Inert stand-in for ``keras...Tokenizer``: it only receives the pickled attributes."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected Tokenizer state in the pickle")
        self.__dict__.update(state)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the globals a Keras ``Tokenizer`` pickle needs; anything else is an ``UnpicklingError``.

    The Tokenizer class is never imported: it is replaced by an object that just stores its attributes.
    The other allowed globals (``OrderedDict``, ``defaultdict``, ``int``) are harmless to call with any
    arguments. Persistent ids are refused by the base class.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("keras.src.legacy.preprocessing.text", "Tokenizer"): _KerasTokenizerState,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "int"): int,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a tokenizer pickle") from None


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _vocab_from_tokenizer(tok: Any) -> dict[str, Any]:
    """The parts of a Keras Tokenizer that ``texts_to_sequences`` uses, as JSON-ready data.

    Only words whose index is below ``num_words`` are kept: the others are dropped (or map to the OOV
    index) exactly like words missing from the index, so the result is equivalent and ~10x smaller.
    """
    if not isinstance(tok, _KerasTokenizerState):
        raise pickle.UnpicklingError(f"expected a Keras Tokenizer in the pickle, got {type(tok).__name__}")
    state = tok.__dict__
    if state.get("char_level") or state.get("analyzer") is not None:
        raise ValueError("only word-level Tokenizers without a custom analyzer are supported")
    num_words = state.get("num_words")
    word_index = state["word_index"]
    oov_token = state.get("oov_token")
    oov_index = word_index.get(oov_token) if oov_token is not None else None
    kept = {str(w): int(i) for w, i in word_index.items() if not num_words or int(i) < num_words}
    return {
        "format": _JSON_FORMAT,
        "filters": str(state["filters"]),
        "lower": bool(state["lower"]),
        "split": str(state["split"]),
        "num_words": None if num_words is None else int(num_words),
        "oov_index": oov_index,
        "word_index": kept,
    }


def load_vocab(pickle_path: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """The tokenizer's vocabulary and settings: from the JSON cache, converting the pickle on first use."""
    pickle_path = Path(pickle_path) if pickle_path is not None else package_dir() / "tokenizer.pickle"
    data = pickle_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    if cache is None:
        from lineas.models.cache import cache_dir

        cache = cache_dir()
    path = Path(cache) / f"toxic-classifier-tokenizer-{digest}.json"
    if path.is_file():
        try:
            vocab = json.loads(path.read_text(encoding="utf-8"))
            if vocab.get("format") == _JSON_FORMAT:
                return vocab
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    vocab = _vocab_from_tokenizer(restricted_loads(data))
    write_json(path, vocab)
    return vocab


class TextEncoder:
    """Keras ``Tokenizer.texts_to_sequences`` followed by ``pad_sequences(maxlen, padding, truncating)``."""

    def __init__(self, vocab: dict[str, Any], maxlen: int = MAXLEN, padding: str = "pre", truncating: str = "pre"):
        self.word_index: dict[str, int] = vocab["word_index"]
        self.lower = vocab["lower"]
        self.split = vocab["split"]
        self.num_words = vocab["num_words"]
        self.oov_index = vocab["oov_index"]
        self._table = str.maketrans({c: self.split for c in vocab["filters"]})
        self.maxlen, self.padding, self.truncating = maxlen, padding, truncating

    def words(self, text: str) -> list[str]:
        """``keras...text_to_word_sequence``: lowercase, filter characters to the split string, split."""
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self._table).split(self.split) if w]

    def sequence(self, text: str) -> list[int]:
        out = []
        for w in self.words(text):
            i = self.word_index.get(w)
            if i is not None and not (self.num_words and i >= self.num_words):
                out.append(i)
            elif self.oov_index is not None:
                out.append(self.oov_index)
        return out

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, maxlen)`` int64 ids, 0 where padded (Keras ``pad_sequences``; an empty text is all 0)."""
        ids = torch.zeros(len(texts), self.maxlen, dtype=torch.long)
        for row, text in enumerate(texts):
            seq = self.sequence(text)
            seq = seq[-self.maxlen :] if self.truncating == "pre" else seq[: self.maxlen]
            if not seq:
                continue
            if self.padding == "pre":
                ids[row, self.maxlen - len(seq) :] = torch.tensor(seq)
            else:
                ids[row, : len(seq)] = torch.tensor(seq)
        return ids


# --------------------------------------------------------------------------- the network


class ToxicCommentNet(nn.Module):
    """Embedding -> BiLSTM (sequences) -> max over time -> Dense(relu) -> Dense(sigmoid), as the Keras model."""

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        embedding_dim: int = EMBEDDING_DIM,
        units: int = LSTM_UNITS,
        dense_units: int = DENSE_UNITS,
        n_labels: int = len(LABELS),
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * units, dense_units)
        self.out = nn.Linear(dense_units, n_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` (N, T) int64 -> probabilities (N, n_labels). Dropout is inactive at inference, as in Keras."""
        seq, _ = self.lstm(self.embedding(ids))  # (N, T, 2*units): [forward, backward], both time-aligned
        hidden = torch.relu(self.dense(seq.amax(dim=1)))
        return torch.sigmoid(self.out(hidden))

    @classmethod
    def from_keras_h5(cls, path: str | os.PathLike | None = None) -> "ToxicCommentNet":
        """Build the network and copy the weights of a Keras 3 ``model.weights.h5``."""
        import h5py  # a dependency of lineas; imported here so that importing lineas.metrics stays light

        path = Path(path) if path is not None else package_dir() / "model.weights.h5"
        with h5py.File(path, "r") as f:

            def var(layer: str, i: int) -> torch.Tensor:
                return torch.from_numpy(f[f"layers/{layer}/vars/{i}"][()].astype("float32"))

            emb = var("embedding", 0)
            net = cls(
                vocab_size=emb.shape[0],
                embedding_dim=emb.shape[1],
                units=f["layers/bidirectional/forward_layer/cell/vars/1"].shape[0],
                dense_units=f["layers/dense/vars/0"].shape[1],
                n_labels=f["layers/dense_1/vars/0"].shape[1],
            )
            sd = {
                "embedding.weight": emb,
                "dense.weight": var("dense", 0).T,
                "dense.bias": var("dense", 1),
                "out.weight": var("dense_1", 0).T,
                "out.bias": var("dense_1", 1),
            }
            # Keras LSTM: kernel (in, 4u), recurrent_kernel (u, 4u), bias (4u), gates i, f, c, o = PyTorch's i, f, g, o.
            for direction, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
                kernel, recurrent, bias = (var(f"bidirectional/{direction}/cell", i) for i in range(3))
                sd[f"lstm.weight_ih_l0{suffix}"] = kernel.T
                sd[f"lstm.weight_hh_l0{suffix}"] = recurrent.T
                sd[f"lstm.bias_ih_l0{suffix}"] = bias
                sd[f"lstm.bias_hh_l0{suffix}"] = torch.zeros_like(bias)
        net.load_state_dict({k: v.contiguous() for k, v in sd.items()})
        return net.eval().requires_grad_(False)


class ToxicityClassifier:
    """Text in, the six Jigsaw probabilities out (CPU, batched, no grad). Columns follow :data:`LABELS`."""

    labels = LABELS

    def __init__(self, model_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
        model_dir = Path(model_dir) if model_dir is not None else package_dir()
        self.encoder = TextEncoder(load_vocab(model_dir / "tokenizer.pickle", cache=cache))
        self.net = ToxicCommentNet.from_keras_h5(model_dir / "model.weights.h5")

    @torch.no_grad()
    def score(self, texts: Sequence[str] | str, batch_size: int = 256) -> torch.Tensor:
        """``(N, 6)`` float32 probabilities on the CPU."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = [self.net(self.encoder(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(LABELS))

    __call__ = score


@functools.lru_cache(maxsize=1)
def default_classifier() -> ToxicityClassifier:
    """The packaged classifier, loaded once per process."""
    return ToxicityClassifier()


# --------------------------------------------------------------------------- the metric


class Toxicity(ConceptScore):
    """Mean "toxic" probability and the fraction of texts above ``threshold``, over all ``update`` calls.

    The classifier is not a submodule: it stays on the CPU when the metric moves to a GPU and is not saved in
    the metric's ``state_dict``.
    """

    higher_is_better = False
    name = "toxicity"
    hit_label = "toxic"
    score_label = "toxicity"

    def __init__(self, threshold: float = 0.5, batch_size: int = 256, label: str = "toxic", **kwargs: Any):
        super().__init__(threshold, **kwargs)
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        self.batch_size = int(batch_size)
        self.label = label

    def score(self, texts: Sequence[str] | str) -> torch.Tensor:
        """``(N, 6)`` probabilities of all :data:`LABELS` (CPU), without touching the metric's state."""
        return default_classifier().score(texts, batch_size=self.batch_size)

    def text_scores(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N,)`` probabilities of ``label`` (default "toxic")."""
        return self.score(texts)[:, LABELS.index(self.label)]
