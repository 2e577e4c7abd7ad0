"""``scenemtl data check``: walk a copy of a dataset and report everything that is wrong with it.

Every split is opened with every task the dataset provides; a split that cannot be opened
(missing split file or folder) is one problem, and every sample of the splits that open is read
through the real loader, so a missing or unreadable file, an id in a split list without files,
a target whose size differs from its image and a value outside the task's range are each
reported with the file or sample they concern. Image sizes that differ from the release's
(``DenseDataset.release_sizes``) are warnings: a user may have resized a copy on purpose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from scenemtl.data.base import DATASETS, DatasetInfo, DenseDataset
from scenemtl.errors import ConfigError, DataError


@dataclass
class CheckReport:
    """What ``check_dataset`` found: problems make the copy broken; warnings do not."""

    dataset: str
    root: str | None
    variant: str | None = None
    samples: dict[str, int] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is broken."""
        return not self.problems

    def format(self, limit: int = 50) -> str:
        """A human-readable report; at most ``limit`` problems are listed, the rest counted."""
        lines = [f"dataset {self.dataset} at {self.root}"]
        if self.variant:
            lines.append(f"release: {self.variant}")
        for split, count in self.samples.items():
            lines.append(f"split {split}: {count} samples")
        if self.sizes:
            common = ", ".join(f"{h}×{w} ({n})" for (h, w), n in self.sizes.most_common(5))
            lines.append(f"image sizes: {common}" + (" …" if len(self.sizes) > 5 else ""))
        for kind, items in (("warning", self.warnings), ("problem", self.problems)):
            for item in items[:limit]:
                lines.append(f"{kind}: {item}")
            if len(items) > limit:
                lines.append(f"… and {len(items) - limit} more {kind}s")
        lines.append("OK" if self.ok else f"BROKEN: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _task(name: str, info: DatasetInfo):
    from scenemtl.tasks import build_task

    return build_task(name, {}, info.class_names, info.palettes, types=info.task_types)


def sample_problems(sample: dict, info: DatasetInfo, where: str) -> list[str]:
    """Contract violations of one decoded sample: target sizes and value ranges."""
    problems: list[str] = []
    image = sample["image"]
    if image.ndim != 3 or image.shape[0] != 3:
        return [f"{where}: image has shape {tuple(image.shape)}, expected [3, H, W]"]
    size = tuple(image.shape[-2:])
    for task in info.tasks:
        if task not in sample:
            continue
        target = sample[task]
        checker = _task(task, info)
        if checker.is_image_level:  # one value per image (a class id): no size to compare
            problem = checker.check_target(target)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            continue
        if not isinstance(target, torch.Tensor):  # an instance target (3D boxes): its task checks it
            problem = _task(task, info).check_target([target], sample=True)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            continue
        if tuple(target.shape[-2:]) != size:
            problems.append(f"{where}: {task} is {tuple(target.shape[-2:])} but the image is {size}")
            continue
        problem = _task(task, info).check_target(target, sample=True)
        if problem is not None:
            problems.append(f"{where}: {problem}")
    return problems


def check_dataset(
    name: str,
    root: str | None,
    splits: Iterable[str] | None = None,
    options: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    tasks: Iterable[str] | None = None,
) -> CheckReport:
    """Open every split of dataset ``name`` at ``root`` with all its tasks (or ``tasks``) and read every sample."""
    cls = DATASETS.get(name)
    report = CheckReport(dataset=name, root=root)
    for split in splits or [s for s in cls.splits if s not in cls.union_splits]:
        if split not in cls.splits:
            raise ConfigError(f"dataset '{name}' has no split '{split}'; it has {list(cls.splits)}")
        try:
            dataset: DenseDataset = cls(root=root, split=split, tasks=list(tasks or cls.info.tasks), **(options or {}))
        except DataError as error:
            report.problems.append(f"split {split}: {error}")
            continue
        report.variant = report.variant or dataset.variant
        report.warnings.extend(dataset.notes)
        report.samples[split] = len(dataset)
        release = dataset.release_sizes
        for index in range(len(dataset)):
            where = f"{split}[{index}] ({dataset.sample_id(index)})"
            try:
                sample = dataset.sample(index)
            except DataError as error:
                report.problems.append(f"{where}: {error}")
                continue
            size = tuple(int(s) for s in sample["image"].shape[-2:])
            report.sizes[size] += 1
            if release and size not in release:
                expected = " or ".join(f"{h}×{w}" for h, w in release)
                report.warnings.append(f"{where}: image is {size[0]}×{size[1]}, the release's are {expected}")
            report.problems.extend(sample_problems(sample, cls.info, where))
            if progress is not None:
                progress(split, index + 1, len(dataset))
    return report
