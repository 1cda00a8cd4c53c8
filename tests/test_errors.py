"""One exception base: every error edgefuse raises for bad input is an EdgefuseError, and the CLI prints it alone."""

import pytest

from edgefuse.bundle import BundleError
from edgefuse.cli import main
from edgefuse.engines import BackendUnavailable
from edgefuse.errors import EdgefuseError
from edgefuse.gate import AccuracyGateError
from edgefuse.runtime import PolicyError
from edgefuse.specs import ModalitySpec


@pytest.mark.parametrize("cls", [BundleError, BackendUnavailable, AccuracyGateError, PolicyError])
def test_errors_share_one_base(cls):
    assert issubclass(cls, EdgefuseError) and issubclass(cls, ValueError)


def test_bad_input_raises_edgefuse_error_naming_what_was_expected():
    with pytest.raises(EdgefuseError, match="kind 'image' expects a positive per-sample shape of rank 3, got"):
        ModalitySpec("cam", (3, 8), "image")


def test_the_cli_prints_an_edgefuse_error_in_one_line_and_exits_2(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"edgefuse info: error: {tmp_path}: not a bundle (no manifest.json)"
