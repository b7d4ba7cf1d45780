"""What each job pays before its work starts: the imports of its script (docs/performance.md,
"Where the demo's time goes"). The jobs that only read rows, draw figures or handle files
never import torch; no script's imports take twice their recorded budget.

Budgets are in units of one ``import torch`` measured in the same test (a fresh interpreter
each), so they hold on a slower or busier machine; they were recorded on a 2-core AMD EPYC
(torch 2.14: ``import torch`` 1.6 s, torchvision on top of it another 1.6 s).
"""

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"

# Scripts whose jobs import no torch (nor torchvision): reports, figures, comparisons, data files.
TORCH_FREE = {
    "bars", "cache_full_images", "cache_images", "compare_models", "correlate", "correlation_figures", "cost",
    "download_weights", "figure", "index_dataset", "make_demo_dataset", "radar", "reconstruction_figures",
    "saliency_figures", "sample_episodes", "summary", "table",
}
# Import time of each script's imports as a multiple of `import torch`, as measured (rounded
# up): torch alone is 1.0; torchvision on top of it (the model jobs) brings about 1.0 more.
BUDGET = {
    "bars": 0.25, "cache_full_images": 0.25, "cache_images": 0.25, "compare_models": 0.25,
    "correlate": 0.75, "correlation_figures": 0.75, "cost": 0.3, "download_weights": 0.1, "figure": 0.25,
    "index_dataset": 0.25, "make_demo_dataset": 0.25, "radar": 0.25, "reconstruction_figures": 0.25,
    "saliency_figures": 0.1, "sample_episodes": 0.25, "summary": 0.25, "table": 0.25,
    "fewshot": 1.25, "knn": 1.25, "linear_probe": 1.25,
    "convert_weights": 2.1, "extract_features": 2.35, "finetune": 2.25, "invariance": 2.4, "make_demo_weights": 2.1,
    "multiview_invariance": 2.4, "reconstruct": 2.3, "saliency": 2.25, "make_demo_lpips_weights": 2.1,
    "score_reconstruction": 2.75,
}
ALL = sorted(p.stem for p in SCRIPTS.glob("*.py"))


def imports_of(script: str) -> str:
    """The script's top-level import statements (what its job loads before its work)."""
    tree = ast.parse((SCRIPTS / f"{script}.py").read_text())
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


def measure(code: str) -> tuple[float, set[str]]:
    """Seconds ``code`` takes to import in a fresh interpreter (``-X importtime``, top-level
    modules summed) and the heavy libraries it loaded."""
    probe = code + "\nimport sys\nprint('LOADED', *sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True,
                          cwd=REPO, check=True)
    top = [int(m.group(1)) for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| (?! )", done.stderr, re.M)]
    loaded = set(done.stdout.split("LOADED", 1)[1].split())
    return sum(top) / 1e6, loaded


@pytest.fixture(scope="module")
def torch_seconds() -> float:
    return min(measure("import torch")[0] for _ in range(2))


def test_every_script_has_a_budget():
    assert sorted(BUDGET) == ALL
    assert TORCH_FREE <= set(ALL)


@pytest.mark.parametrize("script", sorted(TORCH_FREE))
def test_torch_free_jobs_import_no_torch(script):
    _, loaded = measure(imports_of(script))
    assert not loaded & {"torch", "torchvision", "tensorflow", "jax"}, f"{script}.py imports {loaded & {'torch'}}"


@pytest.mark.slow
@pytest.mark.parametrize("script", ALL)
def test_imports_stay_within_budget(script, torch_seconds):
    code = imports_of(script)
    seconds = measure(code)[0]
    if seconds > 2 * BUDGET[script] * torch_seconds:
        seconds = min(seconds, measure(code)[0])  # once more: a busy moment is not a regression
    ratio = seconds / torch_seconds
    assert ratio <= 2 * BUDGET[script], (
        f"{script}.py's imports take {seconds:.2f} s = {ratio:.2f} x `import torch` ({torch_seconds:.2f} s), "
        f"twice its budget {BUDGET[script]}: see what it loads with "
        f"python -X importtime -c '{code.splitlines()[0]} ...'")


def test_the_reconstruction_api_loads_lazily_and_whole():
    """Every public name of ``protocols.reconstruct`` resolves to its object (not a submodule);
    the figures' part loads without torch."""
    code = ("import sys\nfrom medtransfer.protocols.reconstruct import plot_grid, plot_lpips, METRICS\n"
            "assert 'torch' not in sys.modules\n"
            "import types, medtransfer.protocols.reconstruct as r\n"
            "assert sorted(r.__all__) == sorted(r._HOMES)\n"
            "bad = [n for n in r.__all__ if isinstance(getattr(r, n), types.ModuleType)]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_set_threads_loads_no_torch_and_a_later_torch_uses_the_count():
    """Every job script calls runtime.set_threads; it must not import torch itself (the probes,
    the episodes and the comparisons never need it), yet torch imported afterwards runs on the
    rule's threads, and torch already imported is set directly."""
    code = ("import sys; from medtransfer.runtime import set_threads; set_threads(1); "
            "print('torch' in sys.modules); import torch; print(torch.get_num_threads()); "
            "set_threads(2); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "OMP_NUM_THREADS": "2"}).stdout.split()
    assert out == ["False", "1", "2"]
