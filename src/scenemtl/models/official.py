"""Official checkpoints of the seed methods: key maps from their module names to ours.

A ``KeyMap`` is a table of rules, each an official key pattern and ours, with placeholders:

- ``{t}``: a task's name (the official name on the official side: ``sal`` for saliency);
- ``{s}``: a second task's name, spelled as ``{t}`` (DenseMTL's pairwise modules: the source task
  of a message to task ``{t}``);
- ``{ti}``: a task's index in the official task order (``OFFICIAL_ORDER``: semseg, depth,
  human_parts, sal, normals, edge), where the official code keeps per-task modules in lists;
- ``{n}``, ``{m}``: a number copied as is; ``{rest}``: any remaining dotted path, copied as is.

Every official key is either mapped by a rule or named by a ``drop`` pattern (parameters the
official forward never uses, so our modules do not have them, or a second name of a tensor a rule
already maps: DenseMTL registers its modules twice); anything else is an unknown key,
and every model key no rule produced is a missing key: ``convert_state`` lists both and converts
nothing. One conversion besides renaming, exact: a two-class (softmax) output convolution
becomes the one-logit convolution of our binary tasks (``w₁ − w₀``, ``b₁ − b₀``: the sigmoid of the
difference is the softmax's second probability, and the task's balanced BCE on it equals the
seeds' weighted two-class cross-entropy). A position embedding stored on another grid is
rejected with the key named (set the model's ``img_size`` to the checkpoint's training size).

The official InvPT/TaskPrompter checkpoints (``*.pth.tar``) are ``{'model': state_dict,
'optimizer': …, 'scheduler': …, 'epoch': …, 'iter_count': …}`` written under
DistributedDataParallel, so keys start with ``module.``. DenseMTL's released weights
(``{sy,vk,cs}_densemtl_{SD,SDN}.pkl``) are a bare state dict: its trainer writes
``torch.save(self.model.state_dict(), 'model_<step>.pkl')`` (astra-vision/DenseMTL:training/base.py,
``save_model``; the model is the ``OursAtt`` module itself, no DataParallel wrapper, and its
``--evaluate`` reads the file back with ``load_state_dict(state, strict=False)``, which only works on
a bare state dict); its ``resume.pkl`` is ``{'model': …, 'optimizer': …, 'scheduler': …, 'step': …,
'best': …}``. ``read_official`` accepts all of these (a bare state dict, ``model`` and ``state_dict``
wrappers, ``module.`` prefixes) and reads them with ``torch.load(weights_only=True)``: tensors,
numbers, strings and plain containers only, so no pickled code runs. The key maps of each
architecture live beside it (``invpt.py``, ``taskprompter/``, ``xtam.py``).

Pickled objects. A file that also pickles Python classes (an optimizer or config object, a
Namespace/EasyDict, NumPy scalars such as a ``best`` metric) cannot be read weights-only, and
scenemtl never falls back to ``weights_only=False``: it raises a CheckpointError naming the file and
this one-off step. Where you trust the file's origin, keep only its tensors, once, with PyTorch
itself (this unpickles the file, i.e. may run code from it), in Python::

    import torch
    raw = torch.load("IN.pkl", map_location="cpu", weights_only=False)  # only for a file you trust
    state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else raw.state_dict()
    torch.save({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, "OUT.pth")

then give ``OUT.pth`` to ``scenemtl convert``/``eval`` (with the config of its model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scenemtl.fileio import read_torch
from scenemtl.errors import CheckpointError, key_mismatch, short_list
from scenemtl.tasks.official import (  # noqa: F401  (the key maps' task vocabulary, re-exported)
    OFFICIAL_ORDER,
    TWO_CLASS,
    canonical_order,
    official_channels,
    official_name,
    two_class_to_logit,
)


_PLACEHOLDERS = {
    "t": r"(?P<t>[a-z][a-z_]*?)",
    "s": r"(?P<s>[a-z][a-z_]*?)",
    "ti": r"(?P<ti>\d+)",
    "n": r"(?P<n>\d+)",
    "m": r"(?P<m>\d+)",
    "rest": r"(?P<rest>.+)",
}


def _regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    out = []
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            out.append(_PLACEHOLDERS[part[1:-1]])
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True)
class Rule:
    """One official key pattern and ours; ``two_class``: an output conv whose official width is 2."""

    official: str
    ours: str
    two_class: bool = False


@dataclass
class KeyMap:
    """The official module names of one architecture, and ours."""

    method: str
    rules: Sequence[Rule]
    #: official key patterns not loaded, and why: parameters the official forward never uses, second names of mapped tensors
    drop: Mapping[str, str] = field(default_factory=dict)
    #: a key only this method's checkpoints have (to recognise a checkpoint of another method)
    signature: str = ""

    def __post_init__(self) -> None:
        self._official = [(_regex(r.official), r) for r in self.rules]
        self._ours = [(_regex(r.ours), r) for r in self.rules]
        self._drop = [(_regex(p), why) for p, why in self.drop.items()]

    # -- task placeholders ----------------------------------------------------------------------
    @staticmethod
    def _fill(template: str, values: Mapping[str, str]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)

    @staticmethod
    def _task_values(groups: Mapping[str, str], tasks: Sequence[str], official: bool) -> dict[str, str] | None:
        values = {k: v for k, v in groups.items() if v is not None}
        ours = {official_name(t): t for t in tasks} if official else {t: t for t in tasks}
        if "s" in values:  # a second task (DenseMTL's source task), translated as {t}
            if values["s"] not in ours:
                return None
            source = ours[values["s"]]
            values["s"] = source if official else official_name(source)
        if "t" in values:
            name = values["t"]
            if name not in ours:
                return None
            task = ours[name]
        elif "ti" in values:
            index = int(values["ti"])
            if index >= len(tasks):
                return None
            task = tasks[index]
        else:
            return values
        values["t"] = task if official else official_name(task)
        values["ti"] = str(tasks.index(task))
        return values

    def _translate(self, key: str, tasks: Sequence[str], official: bool) -> tuple[str, Rule] | None:
        for regex, rule in self._official if official else self._ours:
            match = regex.match(key)
            if match:
                values = self._task_values(match.groupdict(), tasks, official=official)
                if values is not None:
                    return self._fill(rule.ours if official else rule.official, values), rule
        return None

    def to_ours(self, key: str, tasks: Sequence[str]) -> tuple[str, Rule] | None:
        """Our key for an official key (tasks in the model's order), or None if no rule fits."""
        return self._translate(key, tasks, official=True)

    def to_official(self, key: str, tasks: Sequence[str]) -> tuple[str, Rule] | None:
        """The official key for one of ours (the inverse of ``to_ours``)."""
        return self._translate(key, tasks, official=False)

    def dropped(self, key: str) -> str | None:
        """Why an official key is not loaded (unused by the official forward, or a second name of a mapped tensor), or None."""
        for regex, why in self._drop:
            if regex.match(key):
                return why
        return None


def convert_state(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, key_map: KeyMap, tasks: Sequence[str], source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from an official one, and the official keys left out as unused.

    Raises a CheckpointError listing every unknown, missing or mis-shaped key (nothing is loaded then).
    """
    expected = model.state_dict()
    if key_map.signature and not any(k.startswith(key_map.signature) for k in state):
        raise CheckpointError(
            f"{source} is not a {key_map.method} checkpoint (no '{key_map.signature}…' keys; "
            f"it starts with {short_list(sorted(state)[:3], 3)}); use the config of the model it was "
            "trained as"
        )
    out: dict[str, torch.Tensor] = {}
    unknown, dropped, shapes = [], [], []
    for key, value in state.items():
        mapped = key_map.to_ours(key, tasks)
        if mapped is None or mapped[0] not in expected:
            if key_map.dropped(key) is not None:
                dropped.append(key)
            else:
                unknown.append(key if mapped is None else f"{key} (→ {mapped[0]})")
            continue
        ours, rule = mapped
        target = expected[ours]
        if rule.two_class and value.shape[0] == 2 and target.shape[0] == 1 and _two_class_task(key):
            value = value[1:2] - value[0:1]
        if value.shape != target.shape:
            shapes.append(f"{key} {tuple(value.shape)} vs {ours} {tuple(target.shape)}")
            continue
        out[ours] = value.to(target.dtype)
    missing = sorted(set(expected) - set(out) - {k for k in expected if _is_derived(k)})
    if unknown or missing or shapes:
        hint = ""
        heads = sorted({m.group(1) for k in state for m in [re.match(r"heads\.([a-z_]+)\.", k)] if m})
        if heads:
            hint = f" The checkpoint has heads for {heads}; the config's tasks are {[official_name(t) for t in tasks]} (official names)."
        raise CheckpointError(
            f"{source} does not fit this {key_map.method} model ({key_mismatch(missing, unknown, shapes, limit=8)}).{hint}"
        )
    for key in expected:
        if key not in out:  # derived buffers (e.g. batch-norm step counters) keep the model's values
            out[key] = expected[key]
    return out, sorted(dropped)


def _is_derived(key: str) -> bool:
    """Buffers no official checkpoint needs to carry (batch norms' ``num_batches_tracked``)."""
    return key.endswith("num_batches_tracked")


def to_official_state(model: torch.nn.Module, key_map: KeyMap, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model's weights under the official names (two-class heads as ``[0, w]``): the inverse map."""
    out = {}
    for key, value in model.state_dict().items():
        mapped = key_map.to_official(key, tasks)
        if mapped is None:
            if _is_derived(key):
                continue
            raise KeyError(f"no official name for {key}")
        name, rule = mapped
        if rule.two_class and value.shape[0] == 1 and _two_class_task(name):
            value = torch.cat([torch.zeros_like(value), value])
        out[name] = value.clone()
    return out


def _two_class_task(official_key: str) -> bool:
    return any(f".{official_name(t)}." in f".{official_key}" for t in TWO_CLASS)


#: the end of read_torch's refusal of a file it cannot read weights-only (or of a corrupt one)
_READ_FIX = (
    "for a file of pickled objects, the one-off step that keeps only its tensors is in the docstring of "
    "scenemtl.models.official ('Pickled objects'); an official InvPT/TaskPrompter/DenseMTL file that fails "
    "otherwise may not have downloaded completely"
)


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The model state dict of an official ``.pth.tar``/``.pkl`` (``module.`` prefixes removed) and its other entries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    raw = read_torch(path, "checkpoint", _READ_FIX, error=CheckpointError)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict or a {{'model': …}} checkpoint")
    extra: dict[str, object] = {}
    state = raw
    for wrapper in ("model", "state_dict"):
        if wrapper in raw and isinstance(raw[wrapper], Mapping):
            state = raw[wrapper]
            extra = {k: v for k, v in raw.items() if k != wrapper and isinstance(v, (int, float, str))}
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} has no tensors under 'model', 'state_dict' or at its top level")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors, extra


def is_official_file(path: str | Path) -> bool:
    """True for a PyTorch pickle/zip checkpoint (``.pth``, ``.pth.tar``, ``.pt``, DenseMTL's ``.pkl``), not a safetensors file."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(8)
    # safetensors starts with an 8-byte little-endian header length followed by '{'
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000:
        with open(path, "rb") as handle:
            handle.seek(8)
            if handle.read(1) == b"{":
                return False
    return head[:2] == b"PK" or head[:1] == b"\x80" or path.name.endswith((".pth", ".pth.tar", ".pt", ".tar", ".pkl"))


def load_official_into(model: torch.nn.Module, path: str | Path) -> dict[str, object]:
    """Convert and load an official checkpoint into ``model``; returns the file's other entries and the dropped keys."""
    key_map = getattr(model, "official_key_map", None)
    if key_map is None:
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint, but architecture '{getattr(model, 'arch', '?')}' has "
            "no official key map (invpt, taskprompter, xtam have); give a scenemtl model.safetensors"
        )
    state, extra = read_official(path)
    converted, dropped = convert_state(state, model, key_map, list(model.task_names), source=str(path))
    model.load_state_dict(converted)
    return {**extra, "dropped": dropped}


def official_parameter_count(model: torch.nn.Module) -> int | None:
    """Parameters of the same model in the official layout (None where the official code has no such model).

    Our parameters under their official names (a two-class head counts twice its one-logit
    width) plus those the official code builds but its forward never uses
    (``model.unbuilt_official_parameters()``).
    """
    key_map = getattr(model, "official_key_map", None)
    if key_map is None:
        return None
    total = 0
    for key, value in model.named_parameters():
        mapped = key_map.to_official(key, model.task_names)
        if mapped is None:  # a configuration the official code does not have (e.g. InvPT on a Swin)
            return None
        name, rule = mapped
        twice = rule.two_class and value.shape[0] == 1 and _two_class_task(name)
        total += value.numel() * (2 if twice else 1)
    return total + model.unbuilt_official_parameters()
