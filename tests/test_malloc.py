"""The tuned allocator: freed memory is reused without new page faults, in the trainer's process too."""

import subprocess
import sys
import textwrap

import pytest

# allocates, fills and frees tensors of several sizes (1 to 31 MiB, as a sample's arrays or a step's activations)
# in rounds; prints the page faults of the four rounds after the first (which faults the memory in whatever the
# settings), in all and the fewest of one round
PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from scenemtl import malloc
    if sys.argv[1] == "tuned":
        assert malloc.tune() and malloc.tune()  # applying twice is harmless
    def step():
        return [torch.empty(size << 20, dtype=torch.uint8).fill_(1) for size in (3, 24, 7, 30, 1, 16, 20, 12, 31)]
    step()
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults), sum(faults))
    """
)


def _numbers(script: str, mode: str) -> list[float]:
    """The numbers ``script`` prints last, run in a fresh process with ``mode`` as its argument."""
    output = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout
    return [float(word) for word in output.splitlines()[-1].split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_malloc_reuses_freed_memory_without_page_faults():
    """glibc's own settings fault blocks in again round after round (fresh mmaps); tuned, a round comes to need no
    new pages at all (the kernel may still take back some idle freed pages in a round: 6–24 k faults over four)."""
    (_, system), (fewest, tuned) = _numbers(PROBE, "system"), _numbers(PROBE, "tuned")
    assert system > 20 * 256, system
    assert fewest < 256 and tuned < system, (fewest, tuned, system)


def test_the_trainer_tunes_its_process_unless_told_not_to(tiny_config):
    script = textwrap.dedent(
        """
        import sys
        from scenemtl import malloc
        from scenemtl.config import load_config
        from scenemtl.engine.trainer import Trainer
        config = load_config(None, [f"out_dir={sys.argv[1]}", "train.steps=1", "train.device=cpu", "data.options.height=32",
                                    "data.options.width=48", "data.options.num_train=4", "data.options.num_val=2",
                                    "data.batch_size=2", "model.backbone.name=test_resnet", sys.argv[2]])
        Trainer(config, progress=False, log=False).fit()
        print(malloc._mode)
        """
    )
    folder = tiny_config().run_dir.parent
    for setting, expected in (("train.allocator=tuned", "tuned"), ("train.allocator=system", "None"), ("train.allocator=lean", "lean")):
        result = subprocess.run([sys.executable, "-c", script, str(folder / setting), setting], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split()[-1] == expected, setting


# allocates and fills 160 blocks of 2 MiB (as a checkpointed step's activations), frees them, and prints how much
# of the 320 MiB the process still holds
RETAINED = textwrap.dedent(
    """
    import sys
    import torch
    from scenemtl import malloc
    assert malloc.tune(sys.argv[1])
    def resident():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096 / 2**20
    before = resident()
    blocks = [torch.empty(2 << 20, dtype=torch.uint8).fill_(1) for _ in range(160)]
    small = torch.ones(1000)  # a small block made after them, still live
    del blocks
    print(resident() - before)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_lean_malloc_gives_freed_blocks_back():
    """``train.allocator: lean``: blocks of 1 MiB and more are returned when freed; ``tuned`` keeps them."""
    retained = {mode: _numbers(RETAINED, mode)[-1] for mode in ("tuned", "lean")}
    assert retained["tuned"] > 250 and retained["lean"] < 32, retained


def test_tune_names_its_modes():
    from scenemtl import malloc

    with pytest.raises(ValueError, match="'tuned' or 'lean'"):
        malloc.tune("greedy")
