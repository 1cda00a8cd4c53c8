"""The README and docs/ name files and sections that must exist: a renamed script or a moved
result file fails here, not in a reader's shell."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    "README.md",
    "docs/kernels.md",
    "docs/runtime.md",
    "docs/benchmarks.md",
    "docs/compatibility.md",
    "docs/architecture.md",
    "docs/ros.md",
)
#: top-level folders whose files the docs cite; outputs of a run (runs/, bench/results/local) are not in the tree
TRACKED = (
    "bench/",
    "docs/",
    "edgefuse/",
    "kernels/",
    "engines/",
    "calibration/",
    "tests/",
    ".ci/",
    "scenarios/",
    "tools/",
)
#: what a file's name ends with (``kernels/_launch.launch`` names a function, not a file)
FILE = re.compile(r"\.(py|sh|json|txt|png|md|toml|xml|tgz)$|/$")


def cited_paths(text: str) -> set[str]:
    """Repository paths quoted in backticks: `tools/fuzz_kernels.py`, `bench/results/aot/*.json`."""
    out = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split("::")[0]
        if token.startswith(TRACKED) and not token.startswith("bench/results/local") and FILE.search(token):
            out.add(token)
    return out


def slug(header: str) -> str:
    """GitHub's anchor for a markdown header."""
    s = header.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_file_exists(doc):
    text = (ROOT / doc).read_text()
    paths = cited_paths(text)
    assert len(paths) >= 5, f"{doc}: expected it to cite repository files, found {sorted(paths)}"
    missing = [p for p in sorted(paths) if not (ROOT / p).exists() and not any(ROOT.glob(p))]
    assert not missing, f"{doc} cites files that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_resolves(doc):
    text = (ROOT / doc).read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"{doc}: link {target} names no section; sections: {sorted(anchors)}"
        else:
            path = (ROOT / doc).parent / target.split("#")[0]
            assert path.exists(), f"{doc}: link {target} names no file ({path})"


def test_cited_paths_picks_out_repository_files_only():
    text = (
        "run `bench/gpu_check.sh`, see `bench/results/aot/*.json` and `tests/tools/test_aot.py::test_x`; "
        "not `runs/demo/bundle/`, `bench/results/local/kernels.json`, `--batch/--dim` or `kernels/_launch.launch`"
    )
    assert cited_paths(text) == {"bench/gpu_check.sh", "bench/results/aot/*.json", "tests/tools/test_aot.py"}


def test_slug_follows_github():
    assert slug("On a GPU: `bench/gpu_check.sh`") == "on-a-gpu-benchgpu_checksh"
    assert slug("Launching without Triton's dispatch") == "launching-without-tritons-dispatch"
