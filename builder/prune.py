"""Layer pruning with distillation: a K-layer student of the FP32 teacher.

Two measured steps, both on the *calibration* texts (the eval splits stay unseen):

1. **Which layers to keep.** Greedily drop, one at a time, the layer whose removal changes the
   model's output (pooled embedding, or logits) least on a probe set, until K remain. A layer's
   cost is measured with the others already dropped, so the choice accounts for what is gone.
2. **Distillation.** Train the student to reproduce the teacher's outputs (embedding: cosine
   and MSE on the normalised pooled vector; rerank/classify: MSE on the logits) for a bounded
   number of steps and wall-clock seconds on CPU. Length-bucketed batches keep padding low.

The student is written as a normal Hugging Face model directory (config with K layers, the
teacher's tokenizer and pooling files), so the export, quantisation ladders and gate run on it
unchanged. Nothing here runs at import time; torch and transformers are imported lazily.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from artifacts.errors import InputError
from artifacts.manifest import TokenizerSpec
from artifacts.textproc import Encoded, Item, TextEncoder, collate
from artifacts.variants import PruneSpec
from builder.errors import BuildError
from builder.reference import pool
from builder.source import ModelSource, inspect_model_dir

PROBE_TEXTS = 96  # layer choice: outputs compared on this many calibration items
DISTIL_TEXTS = 4096  # distillation: up to this many calibration items
DISTIL_MAX_LEN = 128  # tokens per item while distilling (long texts truncated: speed)


@dataclass
class StudentReport:
    """What the pruning did, for the manifest (``compression``) and the build log."""

    layers_total: int
    kept: list[int]
    drop_order: list[int]  # the layers dropped, first dropped first
    drop_costs: list[float]  # output change (1 - cosine, or logit MSE) when each was dropped
    steps: int = 0
    seconds: float = 0.0
    loss_start: float = 0.0  # distillation loss of the plain layer-dropped student
    loss_end: float = 0.0  # after distillation (same held-back calibration items)
    texts: int = 0
    path: Path | None = None
    history: list[float] = field(default_factory=list)


def layer_list(model: Any) -> tuple[Any, str]:
    """The transformer's ModuleList of layers and the config attribute that counts them."""
    base = getattr(model, "base_model", model)
    for owner_name in ("encoder", "transformer"):
        owner = getattr(base, owner_name, None)
        layers = getattr(owner, "layer", None)
        if layers is not None and hasattr(layers, "__len__"):
            attr = "n_layers" if hasattr(model.config, "n_layers") else "num_hidden_layers"
            return owner, attr
    raise BuildError(
        f"cannot prune a {model.config.model_type} model: no encoder layer list found "
        "(supported: BERT-style encoders with encoder.layer or transformer.layer)"
    )


def _set_layers(model: Any, keep: Sequence[int], originals: Sequence[Any]) -> None:
    import torch

    owner, attr = layer_list(model)
    owner.layer = torch.nn.ModuleList([originals[i] for i in keep])
    setattr(model.config, attr, len(keep))


class _Outputs:
    """The model's task output as a torch tensor (pooled + normalised, or logits)."""

    def __init__(self, task: str, pooling: str) -> None:
        self.task, self.pooling = task, pooling

    def __call__(self, model: Any, feeds: dict[str, Any]) -> Any:
        out = model(**feeds)
        if self.task != "embedding":
            return out.logits.float()
        return pool(out.last_hidden_state, feeds["attention_mask"], self.pooling)


def _loss(task: str, student: Any, teacher: Any) -> Any:
    """Embedding: (1 - cosine) + MSE of the unit vectors; logits: MSE."""
    import torch

    if task == "embedding":
        cos = (student * teacher).sum(-1)
        return (1 - cos).mean() + torch.nn.functional.mse_loss(student, teacher) * student.shape[-1]
    return torch.nn.functional.mse_loss(student, teacher)


def _batches(
    encoded: list[Encoded], names: list[str], pad_id: int, size: int
) -> list[tuple[list[int], dict[str, np.ndarray]]]:
    """Length-sorted batches of item indices with their collated feeds (little padding)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = []
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        out.append((idx, collate([encoded[i] for i in idx], names, pad_id=pad_id)))
    return out


def _feeds(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) for k, v in batch.items()}


def choose_layers(
    model: Any,
    outputs: Callable[[Any, dict[str, Any]], Any],
    batches: list[tuple[list[int], dict[str, np.ndarray]]],
    keep: int,
    task: str,
) -> tuple[list[int], list[int], list[float]]:
    """Greedy layer dropping by measured output change; returns (kept, dropped, costs)."""
    import torch

    owner, _ = layer_list(model)
    originals = list(owner.layer)
    total = len(originals)
    if not 1 <= keep < total:
        raise InputError(
            f"--prune layers={keep}: the model has {total} layers; keep 1..{total - 1}"
        )
    with torch.inference_mode():
        truth = [outputs(model, _feeds(b)) for _, b in batches]

        def change(layers: list[int]) -> float:
            _set_layers(model, layers, originals)
            total_cost, n = 0.0, 0
            for (_, b), ref in zip(batches, truth, strict=True):
                got = outputs(model, _feeds(b))
                if task == "embedding":
                    total_cost += float((1 - (got * ref).sum(-1)).sum())
                else:
                    total_cost += float(((got - ref) ** 2).mean(-1).sum())
                n += got.shape[0]
            return total_cost / max(n, 1)

        current = list(range(total))
        dropped, costs = [], []
        while len(current) > keep:
            trial = {i: change([j for j in current if j != i]) for i in current}
            victim = min(trial, key=lambda i: (trial[i], i))
            current.remove(victim)
            dropped.append(victim)
            costs.append(round(trial[victim], 6))
    _set_layers(model, current, originals)
    return current, dropped, costs


@dataclass
class DistilData:
    """Length-sorted calibration batches with the teacher's outputs: ``train`` to learn from,
    ``held`` (never trained on) to measure the loss before and after."""

    train: list[tuple[list[int], dict[str, np.ndarray]]]
    train_out: list[Any]
    held: list[tuple[list[int], dict[str, np.ndarray]]]
    held_out: list[Any]


LEARNING_RATE = 1e-4


def distil(
    student: Any,
    data: DistilData,
    outputs: Callable[[Any, dict[str, Any]], Any],
    task: str,
    spec: PruneSpec,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[int, float, float, float, list[float]]:
    """Train ``student`` towards the teacher's outputs; (steps, seconds, loss before, after,
    held-back loss every 50 steps). Stops at ``spec.steps`` or ``spec.budget_s``, whichever
    comes first; seeded, so a build bounded by steps is repeatable."""
    import torch

    def held_loss() -> float:
        student.eval()
        with torch.inference_mode():
            losses = [
                float(_loss(task, outputs(student, _feeds(b)), ref)) * len(idx)
                for (idx, b), ref in zip(data.held, data.held_out, strict=True)
            ]
        return sum(losses) / max(1, sum(len(i) for i, _ in data.held))

    torch.manual_seed(0)
    rng = random.Random(0)
    before = held_loss()
    history = [round(before, 6)]
    steps = spec.steps
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.01)
    warmup = max(1, min(50, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / max(steps, 1))
    )
    started = time.monotonic()
    done = 0
    order: list[int] = []
    student.train()
    while done < steps and time.monotonic() - started < spec.budget_s:
        if not order:
            order = list(range(len(data.train)))
            rng.shuffle(order)
        k = order.pop()
        _, feeds = data.train[k]
        loss = _loss(task, outputs(student, _feeds(feeds)), data.train_out[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        done += 1
        if progress is not None and done % 25 == 0:
            progress(done, float(loss.detach()))
        if done % 50 == 0:
            history.append(round(held_loss(), 6))
            student.train()
    seconds = time.monotonic() - started
    student.eval()
    after = held_loss()
    history.append(round(after, 6))
    return done, seconds, before, after, history


def _copy_side_files(teacher_dir: Path, dest: Path) -> None:
    """Tokenizer and sentence-transformers pooling files: the student tokenizes and pools
    exactly like its teacher."""
    for path in teacher_dir.iterdir():
        name = path.name
        if name.startswith(".") or name in (
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
        ):
            continue
        if path.is_file() and (
            name.startswith("tokenizer") or name.endswith((".txt", ".json", ".model"))
        ):
            shutil.copyfile(path, dest / name)
        elif path.is_dir() and name == "1_Pooling":
            shutil.copytree(path, dest / name, dirs_exist_ok=True)


def make_student(  # noqa: PLR0913 - the student's inputs, by keyword past the first
    source: ModelSource,
    task: str,
    spec: PruneSpec,
    tokenizer: tuple[Path, TokenizerSpec],
    texts: list[Item],
    dest: Path,
    *,
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[ModelSource, StudentReport]:
    """Choose the layers, distil, and write the student model directory to ``dest``."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    if threads:
        torch.set_num_threads(threads)
    if source.num_layers and not 1 <= spec.layers < source.num_layers:
        raise InputError(
            f"--prune layers={spec.layers}: {source.name} has {source.num_layers} layers; "
            f"keep 1..{source.num_layers - 1}"
        )
    if source.model_type == "albert":
        raise InputError("ALBERT shares one set of weights across its layers: nothing to prune")
    if len(texts) < 32:
        raise InputError(
            f"pruning needs at least 32 calibration texts to distil on, not {len(texts)}"
        )
    say = progress or (lambda _m: None)
    cls = AutoModel if task == "embedding" else AutoModelForSequenceClassification
    teacher = cls.from_pretrained(str(source.path), dtype=torch.float32)
    teacher.eval()
    outputs = _Outputs(task, source.pooling)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    tok_file, tok_spec = tokenizer
    short = msgspec.structs.replace(tok_spec, max_length=min(tok_spec.max_length, DISTIL_MAX_LEN))
    pad = tok_spec.pad_token_id
    encoded = TextEncoder(tok_file, short).encode(texts)
    rng = random.Random(0)
    index = list(range(len(encoded)))
    rng.shuffle(index)
    n_held = min(128, max(16, len(index) // 10))
    held_idx, train_idx = index[:n_held], index[n_held:]
    probe = _batches([encoded[i] for i in train_idx[:PROBE_TEXTS]], names, pad, 32)
    train = _batches([encoded[i] for i in train_idx], names, pad, 32)
    held = _batches([encoded[i] for i in held_idx], names, pad, 64)

    say(f"teacher outputs on {len(encoded)} calibration items")
    with torch.no_grad():  # plain tensors: autograd uses them as constant targets
        teacher_train = [outputs(teacher, _feeds(b)) for _, b in train]
        teacher_held = [outputs(teacher, _feeds(b)) for _, b in held]
    owner, _ = layer_list(teacher)
    total = len(owner.layer)
    say(f"choosing {spec.layers} of {total} layers (greedy, by output change)")
    kept, dropped, costs = choose_layers(teacher, outputs, probe, spec.layers, task)
    student = teacher  # the teacher's outputs are computed; its weights become the student's
    report = StudentReport(
        layers_total=total, kept=kept, drop_order=dropped, drop_costs=costs, texts=len(encoded)
    )
    for p in student.parameters():
        p.requires_grad_(True)
    say(f"distilling (at most {spec.steps} steps, {spec.budget_s:g} s)")
    steps, seconds, before, after, history = distil(
        student,
        DistilData(train, teacher_train, held, teacher_held),
        outputs,
        task,
        spec,
        lambda s, loss: say(f"step {s}: loss {loss:.4f}"),
    )
    report.steps, report.seconds = steps, round(seconds, 2)
    report.loss_start, report.loss_end, report.history = round(before, 6), round(after, 6), history
    dest.mkdir(parents=True, exist_ok=True)
    student.config.architectures = source.architectures or student.config.architectures
    student.save_pretrained(str(dest), safe_serialization=True)
    _copy_side_files(source.path, dest)
    report.path = dest
    return inspect_model_dir(dest), report
