"""Built-in targets, usable as ``builtin:NAME``. Nothing is downloaded.

- ``linreg``: linear regression with Gaussian inputs; its gradient noise is known in
  closed form (docs/concepts.md eq. 13), so it is the ground truth for the probe's estimators.
- ``mnist1d-mlp`` / ``mnist1d-cnn``: MNIST-1D (Greydanus 2020), generated offline by
  the ``mnist1d`` package (``pip install 'bsadvisor[examples]'``) and cached as .npz.
- ``charlm``: a small causal transformer on bytes of Python standard-library source (present
  on every machine), AdamW, one epoch with a per-step LinearLR warmup + cosine: the
  language-model case (single pass, per-step schedule, Adam).
- ``wordlm``: a word-level GRU language model on the English text of Python's pydoc topics
  (``pydoc_data.topics``, in every CPython), AdamW, two epochs, per-step warmup + cosine: a
  second language model, other data and another architecture (recurrent, word tokens).
- ``mixer1d``: a small MLP-Mixer on MNIST-1D, AdamW, per-step warmup + cosine: the
  non-language AdamW case (image-like signals, patches mixed across tokens and channels).
- ``sorter``: a small causal transformer that learns to sort 12 numbers in 0..31 (the unsorted
  list, then its sorted copy, one sequence), AdamW, one epoch, per-step warmup + cosine: an
  algorithmic AdamW task on which the linear Adam rule loses (docs/results.md).
"""
from __future__ import annotations

import collections
import io
import os
import random
import re
import sysconfig
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import write_atomic
from bsadvisor.targets.target import Target

LINREG_DIM = 16
LINREG_NOISE = 1.0  # s: standard deviation of the label noise
LINREG_SIZE = 16384


def linreg_truth(weight, w_star, noise: float = LINREG_NOISE) -> tuple[float, float]:
    """Population (tr Σ, |G|²) for loss ½(w·x − y)², x ~ N(0, I_d), y = w*·x + N(0, s²).

    With δ = w − w*: G = δ, so |G|² = |δ|², and tr(Σ) = (d+1)|δ|² + d·s² (docs/concepts.md eq. 13).
    """
    w = np.asarray(weight, dtype=np.float64).ravel()
    delta = w - np.asarray(w_star, dtype=np.float64).ravel()
    d = delta.size
    g2 = float(delta @ delta)
    return (d + 1) * g2 + d * noise**2, g2


def linreg(dim: int = LINREG_DIM, size: int = LINREG_SIZE, noise: float = LINREG_NOISE, seed: int = 0) -> Target:
    gen = torch.Generator().manual_seed(seed)
    w_star = torch.randn(dim, generator=gen, dtype=torch.float64)
    x = torch.randn(size, dim, generator=gen, dtype=torch.float64)
    y = x @ w_star + noise * torch.randn(size, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(dim, 1, bias=False).to(torch.float64)
    with torch.no_grad():
        model.weight.zero_()

    def loss_fn(m, batch):
        xb, yb = batch
        return 0.5 * ((m(xb).squeeze(-1) - yb) ** 2).mean()

    def metric_fn(m, batch):  # negative MSE: higher is better
        xb, yb = batch
        return -float(((m(xb).squeeze(-1) - yb) ** 2).mean())

    test_x = torch.randn(2048, dim, generator=gen, dtype=torch.float64)
    test_y = test_x @ w_star + noise * torch.randn(2048, generator=gen, dtype=torch.float64)
    ds = torch.utils.data.TensorDataset(x, y)
    return Target(model=model, train_dataset=ds, loss_fn=loss_fn, batch_size=64, lr=0.01,
                  momentum=0.0, eval_dataset=torch.utils.data.TensorDataset(test_x, test_y),
                  metric_fn=metric_fn, name="builtin:linreg",
                  metadata={"w_star": w_star.numpy(), "noise": noise,
                            "truth": lambda m: linreg_truth(m.weight.detach().cpu().numpy(), w_star.numpy(), noise)})


def cache_dir() -> Path:
    return Path(os.environ.get("BSADVISOR_CACHE", Path.home() / ".cache" / "bsadvisor"))


def mnist1d_arrays(num_samples: int = 40000, seed: int = 42) -> dict[str, np.ndarray]:
    """MNIST-1D arrays (x, y, x_test, y_test), generated once and cached.

    The generator reseeds Python's and NumPy's global RNGs; we put them back so the
    user's random streams are untouched.
    """
    path = cache_dir() / f"mnist1d-{num_samples}-{seed}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    try:
        import mnist1d  # imports matplotlib, so only on a cache miss
    except ImportError:
        raise UserError("the MNIST-1D targets need the mnist1d package: pip install 'bsadvisor[examples]'") from None
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = mnist1d.get_dataset_args()
        args.num_samples, args.seed = num_samples, seed
        data = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int64),
              "x_test": data["x_test"].astype(np.float32), "y_test": data["y_test"].astype(np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)

    write_atomic(path, buf.getvalue())
    return arrays


def _mnist1d_task():
    """MNIST-1D as the classification every MNIST-1D builtin trains: (train, test, loss_fn, metric_fn),
    the mean cross-entropy and the held-out accuracy."""
    a = mnist1d_arrays()
    train = torch.utils.data.TensorDataset(torch.from_numpy(a["x"]), torch.from_numpy(a["y"]))
    test = torch.utils.data.TensorDataset(torch.from_numpy(a["x_test"]), torch.from_numpy(a["y_test"]))

    def loss_fn(m, batch):
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb)

    def metric_fn(m, batch):  # accuracy
        xb, yb = batch
        return float((m(xb).argmax(-1) == yb).float().mean())

    return train, test, loss_fn, metric_fn


def _mnist1d(model_kind: str, seed: int = 0) -> Target:
    train, test, loss_fn, metric_fn = _mnist1d_task()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if model_kind == "mlp":
            model = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
        else:
            model = nn.Sequential(nn.Unflatten(1, (1, 40)),
                                  nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(125, 10))
    finally:
        torch.random.set_rng_state(gen_state)
    return Target(model=model, train_dataset=train, loss_fn=loss_fn, batch_size=32, lr=0.05, momentum=0.9,
                  eval_dataset=test, metric_fn=metric_fn, name=f"builtin:mnist1d-{model_kind}")


#: Pure-Python standard-library modules present in every CPython ≥ 3.10: the charlm corpus.
CHARLM_FILES = ("textwrap.py", "string.py", "heapq.py", "bisect.py", "functools.py", "fractions.py", "shlex.py",
                "colorsys.py", "calendar.py", "difflib.py", "statistics.py", "abc.py", "copy.py", "fnmatch.py",
                "glob.py", "operator.py", "queue.py", "sched.py", "argparse.py", "typing.py", "inspect.py",
                "tarfile.py", "subprocess.py", "pickle.py", "dataclasses.py", "enum.py", "ast.py", "configparser.py",
                "datetime.py", "pydoc.py", "ipaddress.py")
CHARLM_SEQ_LEN = 64
CHARLM_TRAIN = 16384  # sequences of CHARLM_SEQ_LEN + 1 bytes
CHARLM_EVAL = 512
CHARLM_LR = 2e-3
CHARLM_BATCH = 32
CHARLM_BETA2 = 0.95  # AdamW betas (0.9, 0.95) and clipping at 1.0: GPT-3, Chinchilla, OLMo, nanoGPT
CHARLM_CLIP = 1.0


def charlm_text() -> bytes:
    """The corpus: the CHARLM_FILES that exist here, concatenated (nothing is downloaded)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = [(stdlib / name).read_bytes() for name in CHARLM_FILES if (stdlib / name).is_file()]
    text = b"\n".join(parts)
    need = (CHARLM_TRAIN + CHARLM_EVAL) * (CHARLM_SEQ_LEN + 1)
    if len(text) < need:
        raise UserError(f"builtin:charlm needs {need:,} bytes of Python standard-library source in {stdlib}, "
                        f"found {len(text):,}; is the standard library installed?")
    return text


def _char_model(vocab: int, seq_len: int, width: int = 64, heads: int = 4, layers: int = 2):
    """A causal transformer: byte and position embeddings, pre-norm blocks, a linear head."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            # causal: position i attends to positions ≤ i only, so a prediction never sees its answer
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.norm2(x))

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(seq_len, width)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)
            # small output weights (as GPT-2 initialises them): the first predictions are near
            # uniform, so the loss starts at about ln 256
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

        def forward(self, idx):
            pos = torch.arange(idx.shape[1], device=idx.device)
            return self.head(self.norm(self.blocks(self.tokens(idx) + self.positions(pos))))

    return CharLM()


def charlm(seed: int = 0) -> Target:
    """builtin:charlm: bytes of standard-library source, windows of CHARLM_SEQ_LEN (+1 for the shifted target).

    The first CHARLM_TRAIN windows train, the next CHARLM_EVAL evaluate. The recipe (one
    epoch, AdamW, per-step warmup over 8% of the updates then a cosine to a tenth of the
    LR) is in ``metadata``, where ``bsadvisor validate builtin:charlm`` reads it.
    """
    data = torch.frombuffer(bytearray(charlm_text()), dtype=torch.uint8).long()
    width = CHARLM_SEQ_LEN + 1
    windows = data[:(CHARLM_TRAIN + CHARLM_EVAL) * width].view(-1, width)
    train, test = windows[:CHARLM_TRAIN], windows[CHARLM_TRAIN:]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _char_model(256, CHARLM_SEQ_LEN)
    finally:
        torch.random.set_rng_state(state)  # building a target leaves the caller's RNG alone

    def loss_fn(m, batch):
        x, y = batch
        return nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())

    def metric_fn(m, batch):  # the negative mean cross-entropy on held-out text: higher is better
        x, y = batch
        return -float(nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()).detach())

    steps = -(-CHARLM_TRAIN // CHARLM_BATCH)
    schedule = _warmup_cosine(steps, CHARLM_LR)
    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(train[:, :-1], train[:, 1:]),
                  loss_fn=loss_fn, batch_size=CHARLM_BATCH, lr=CHARLM_LR, momentum=0.9, optimizer="adamw",
                  weight_decay=0.01, eval_dataset=torch.utils.data.TensorDataset(test[:, :-1], test[:, 1:]),
                  metric_fn=metric_fn, name="builtin:charlm",
                  optimizer_kwargs={"betas": (0.9, CHARLM_BETA2)}, max_grad_norm=CHARLM_CLIP,  # the usual LM recipe
                  metadata={"schedule": schedule, "schedule_unit": "step", "epochs": 1, "seq_len": CHARLM_SEQ_LEN,
                            "metric_name": "negative eval cross-entropy (nats per byte)"})


def _warmup_cosine(steps: int, lr: float, share: float = 0.08) -> str:
    """The per-step recipe of the AdamW builtins: LinearLR warmup over ``share`` of the updates, then a
    cosine to a tenth of the LR."""
    warmup = max(1, round(share * steps))
    return (f"SequentialLR([LinearLR(start_factor=0.01, total_iters={warmup}), "
            f"CosineAnnealingLR(T_max={steps - warmup}, eta_min={lr / 10:g})], milestones=[{warmup}])")


WORDLM_SEQ_LEN = 24   # words per training window (+1 for the shifted target)
WORDLM_EVAL = 400     # windows held out (the last ones)
WORDLM_MIN_COUNT = 3  # a word seen fewer times in the training windows becomes <unk>
WORDLM_LR = 3e-3
WORDLM_BATCH = 16
WORDLM_EPOCHS = 2


def wordlm_words() -> list[str]:
    """The corpus: pydoc's topic texts (``pydoc_data.topics``, English prose about Python), in key order,
    lower-cased and split into words, numbers and single punctuation marks."""
    try:
        from pydoc_data.topics import topics  # here: a CPython may lack it, and then only wordlm fails
    except ImportError:  # a CPython built without pydoc_data
        raise UserError("builtin:wordlm needs Python's pydoc_data.topics (part of the standard library); "
                        "is the standard library installed?") from None
    text = "\n".join(topics[k] for k in sorted(topics)).lower()
    return re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", text)


def _word_windows() -> tuple:
    """(train windows, eval windows, vocabulary size) of the word corpus, ids as a LongTensor."""
    words = wordlm_words()
    width = WORDLM_SEQ_LEN + 1
    n = len(words) // width
    if n <= WORDLM_EVAL + 64:
        raise UserError(f"builtin:wordlm: pydoc_data.topics has only {len(words):,} words here; too few to train on")
    cut = (n - WORDLM_EVAL) * width
    counts = collections.Counter(words[:cut])  # the vocabulary comes from the training text alone
    vocab = ["<unk>"] + sorted(w for w, c in counts.items() if c >= WORDLM_MIN_COUNT)
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index.get(w, 0) for w in words[:n * width]], dtype=torch.long).view(n, width)
    return ids[:n - WORDLM_EVAL], ids[n - WORDLM_EVAL:], len(vocab)


def _word_model(vocab: int, width: int = 64, hidden: int = 128):
    """Word embeddings, a one-layer GRU, a linear head over the vocabulary."""
    class WordLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.rnn = nn.GRU(width, hidden, batch_first=True)
            self.head = nn.Linear(hidden, vocab)
            nn.init.normal_(self.head.weight, std=0.02)  # near-uniform first predictions, as charlm
            nn.init.zeros_(self.head.bias)

        def forward(self, idx):
            return self.head(self.rnn(self.embed(idx))[0])

    return WordLM()


def _next_token_fns():
    """(loss_fn, metric_fn) of a next-token model: mean cross-entropy, and its negative on held-out text."""
    def loss_fn(m, batch):
        x, y = batch
        return nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())

    def metric_fn(m, batch):  # higher is better
        x, y = batch
        return -float(nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()).detach())

    return loss_fn, metric_fn


def wordlm(seed: int = 0) -> Target:
    """builtin:wordlm: pydoc's topic texts as words, windows of WORDLM_SEQ_LEN (+1 for the shifted target).

    The last WORDLM_EVAL windows are held out; words seen fewer than WORDLM_MIN_COUNT times in
    the training windows become <unk>. A GRU (embedding 64, hidden 128). The recipe in
    ``metadata``: WORDLM_EPOCHS epochs of AdamW (LR 0.003, weight decay 0.01, batch 16), a
    per-step warmup over 8% of the updates then a cosine to a tenth of the LR.
    """
    train, test, vocab = _word_windows()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _word_model(vocab)
    finally:
        torch.random.set_rng_state(state)  # building a target leaves the caller's RNG alone
    loss_fn, metric_fn = _next_token_fns()
    steps = WORDLM_EPOCHS * -(-len(train) // WORDLM_BATCH)
    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(train[:, :-1], train[:, 1:]),
                  loss_fn=loss_fn, batch_size=WORDLM_BATCH, lr=WORDLM_LR, momentum=0.9, optimizer="adamw",
                  weight_decay=0.01, eval_dataset=torch.utils.data.TensorDataset(test[:, :-1], test[:, 1:]),
                  metric_fn=metric_fn, name="builtin:wordlm",
                  metadata={"schedule": _warmup_cosine(steps, WORDLM_LR), "schedule_unit": "step",
                            "epochs": WORDLM_EPOCHS, "seq_len": WORDLM_SEQ_LEN, "vocab": vocab,
                            "metric_name": "negative eval cross-entropy (nats per word)"})


MIXER_PATCH = 4      # MNIST-1D's 40 samples → 10 patches (tokens)
MIXER_LR = 2e-3
MIXER_BATCH = 32
MIXER_EPOCHS = 2


def _mixer_model(length: int = 40, patch: int = MIXER_PATCH, width: int = 32, layers: int = 2, classes: int = 10):
    """An MLP-Mixer (Tolstikhin et al. 2021) for 1-D signals: patches embedded, then blocks that mix
    across tokens and across channels (pre-norm, residual), mean-pooled into a linear head."""
    tokens = length // patch

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.tokens = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
            self.channels = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

        def forward(self, x):  # x: (batch, tokens, width)
            x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
            return x + self.channels(self.norm2(x))

    class Mixer1D(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(patch, width)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

        def forward(self, x):  # x: (batch, length)
            h = self.embed(x.view(x.shape[0], tokens, patch))
            return self.head(self.norm(self.blocks(h)).mean(1))

    return Mixer1D()


def mixer1d(seed: int = 0) -> Target:
    """builtin:mixer1d: an MLP-Mixer on MNIST-1D (the arrays of builtin:mnist1d-mlp), held-out accuracy.

    The recipe in ``metadata``: MIXER_EPOCHS epochs of AdamW (LR 0.002, weight decay 0.01,
    batch 32), a per-step warmup over 8% of the updates then a cosine to a tenth of the LR.
    """
    train, test, loss_fn, metric_fn = _mnist1d_task()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _mixer_model()
    finally:
        torch.random.set_rng_state(state)
    steps = MIXER_EPOCHS * -(-len(train) // MIXER_BATCH)
    return Target(model=model, train_dataset=train, loss_fn=loss_fn, batch_size=MIXER_BATCH, lr=MIXER_LR,
                  momentum=0.9, optimizer="adamw", weight_decay=0.01, eval_dataset=test, metric_fn=metric_fn,
                  name="builtin:mixer1d",
                  metadata={"schedule": _warmup_cosine(steps, MIXER_LR), "schedule_unit": "step",
                            "epochs": MIXER_EPOCHS, "metric_name": "held-out accuracy"})


SORTER_LEN = 12       # numbers to sort
SORTER_VOCAB = 32     # each in 0..SORTER_VOCAB-1
SORTER_TRAIN = 16384  # sequences (one epoch: SORTER_TRAIN / SORTER_BATCH updates)
SORTER_EVAL = 1024
SORTER_LR = 2e-3
SORTER_BATCH = 32


def sorter_data(count: int, seed: int):
    """``count`` sequences of SORTER_LEN numbers drawn uniformly from 0..SORTER_VOCAB-1 (a fixed generator:
    the same data everywhere), followed by their sorted copy: (count, 2·SORTER_LEN) longs."""
    g = torch.Generator().manual_seed(seed)
    numbers = torch.randint(0, SORTER_VOCAB, (count, SORTER_LEN), generator=g)
    return torch.cat([numbers, numbers.sort(dim=1).values], dim=1)


def sorter(seed: int = 0) -> Target:
    """builtin:sorter: sort 12 numbers in 0..31 with a 2-layer causal transformer of width 64 (charlm's model).

    A sequence is the unsorted numbers then the sorted ones; the model reads it shifted by one
    and is scored on the sorted half only (predicting the first number of the unsorted half is
    not learnable). The metric is the negative held-out cross-entropy of that half (nats per
    number: higher is better). The recipe in ``metadata``: one epoch of AdamW (LR 0.002,
    weight decay 0.01, batch 32), per-step warmup over 8% of the updates then a cosine to a
    tenth of the LR.
    """
    train, test = sorter_data(SORTER_TRAIN, 1234), sorter_data(SORTER_EVAL, 4321)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _char_model(SORTER_VOCAB, 2 * SORTER_LEN - 1)
    finally:
        torch.random.set_rng_state(state)  # building a target leaves the caller's RNG alone

    def sorted_half_ce(m, batch):
        x, y = batch
        # position SORTER_LEN-1 on predicts the sorted numbers (the last unsorted one predicts the first sorted)
        return nn.functional.cross_entropy(m(x)[:, SORTER_LEN - 1:].flatten(0, 1), y[:, SORTER_LEN - 1:].flatten())

    def metric_fn(m, batch):  # higher is better
        return -float(sorted_half_ce(m, batch).detach())

    steps = -(-SORTER_TRAIN // SORTER_BATCH)
    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(train[:, :-1], train[:, 1:]),
                  loss_fn=sorted_half_ce, batch_size=SORTER_BATCH, lr=SORTER_LR, momentum=0.9, optimizer="adamw",
                  weight_decay=0.01, eval_dataset=torch.utils.data.TensorDataset(test[:, :-1], test[:, 1:]),
                  metric_fn=metric_fn, name="builtin:sorter",
                  metadata={"schedule": _warmup_cosine(steps, SORTER_LR), "schedule_unit": "step", "epochs": 1,
                            "metric_name": "negative eval cross-entropy of the sorted half (nats per number)"})


BUILTINS: dict[str, Callable[[], Target]] = {
    "charlm": charlm,
    "wordlm": wordlm,
    "mixer1d": mixer1d,
    "sorter": sorter,
    "linreg": linreg,
    "mnist1d-mlp": lambda: _mnist1d("mlp"),
    "mnist1d-cnn": lambda: _mnist1d("cnn"),
}


def get_builtin(name: str) -> Callable[[], Target]:
    if name not in BUILTINS:
        raise UserError(f"unknown builtin target {name!r}; choose one of: {', '.join('builtin:' + n for n in BUILTINS)}")
    return BUILTINS[name]
