"""The one rule of what validate and demo may delete or replace in --out: the files its manifest names.

A user's own file of a name validate writes (noise.png, results.json, a checkpoint) is refused in one
line whatever the flags; --overwrite deletes only the earlier run's files (the manifest's), never the
user's my_model.pt beside them, and never anything through a ``checkpoints`` link out of --out.
"""
from __future__ import annotations

import json
import os

import pytest

from hostile import Snapshot, assert_one_line_error, run_main

from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import MANIFEST_NAME, read_manifest, write_manifest
from bsadvisor.runtime.validate import claim_out, earlier_results

LINREG = ["validate", "builtin:linreg", "--schedule", "MultiStepLR(milestones=[2, 4], gamma=0.2)", "--epochs", "6",
          "--tolerance", "1", "--no-noise-monitor"]
RUN_CHECKPOINTS = ("checkpoints/original-seed0.pt", "checkpoints/plan-seed0.pt")


def earlier_run_with_manifest(out):
    """An --out as a finished run of this bsadvisor leaves it: its files and the manifest naming them."""
    (out / "checkpoints").mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"schema": "bsadvisor.validation/1.1"}))
    (out / "report.md").write_text("old report")
    for name in RUN_CHECKPOINTS:
        (out / name).write_bytes(b"old checkpoint")
    write_manifest(out, ["results.json", "report.md", *RUN_CHECKPOINTS])


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_a_users_noise_png_is_never_replaced(tmp_path, flags):
    out = tmp_path / "v"
    out.mkdir()
    (out / "noise.png").write_bytes(b"my own picture")
    before = Snapshot(tmp_path)
    r = run_main([*LINREG, "--out", out, *flags], cwd=tmp_path)
    assert_one_line_error(r, ["noise.png", "did not write", "move it away"])
    before.assert_unchanged()


def test_demo_refuses_a_users_noise_png_too(tmp_path):
    out = tmp_path / "v"
    out.mkdir()
    (out / "noise.png").write_bytes(b"my own picture")
    before = Snapshot(tmp_path)
    r = run_main(["demo", "--out", out, "--overwrite", "--skip-probe"], cwd=tmp_path)
    assert_one_line_error(r, ["noise.png", "did not write"])
    before.assert_unchanged()


def test_overwrite_deletes_only_the_manifests_files(tmp_path):
    out = tmp_path / "v"
    earlier_run_with_manifest(out)
    (out / "checkpoints" / "my_model.pt").write_bytes(b"the user's model")
    (out / "notes.txt").write_text("mine")
    with claim_out(out, overwrite=True, checkpoints=RUN_CHECKPOINTS):
        assert not any((out / n).exists() for n in ("results.json", "report.md", *RUN_CHECKPOINTS))
        assert (out / "checkpoints" / "my_model.pt").read_bytes() == b"the user's model"
        assert (out / "notes.txt").read_text() == "mine"
        (out / RUN_CHECKPOINTS[0]).write_bytes(b"new")  # the run writes one checkpoint, then stops
    # the record names what this run wrote, nothing of the user's
    assert read_manifest(out) == {RUN_CHECKPOINTS[0]}


def test_a_checkpoints_link_out_of_out_is_refused_and_nothing_outside_changes(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("original-seed0.pt", "precious.pt"):
        (elsewhere / name).write_bytes(b"outside --out")
    out = tmp_path / "v"
    out.mkdir()
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    (out / "results.json").write_text(json.dumps({"schema": "bsadvisor.validation/1.1"}))
    write_manifest(out, ["results.json", "checkpoints/original-seed0.pt"])
    before = Snapshot(tmp_path)
    for flags in ([], ["--overwrite"], ["--resume"]):
        r = run_main([*LINREG, "--out", out, *flags], cwd=tmp_path)
        assert_one_line_error(r, ["checkpoints", "link"])
    before.assert_unchanged()
    with pytest.raises(UserError, match="link"):
        with claim_out(out, overwrite=True, checkpoints=RUN_CHECKPOINTS):
            pass
    assert sorted(p.name for p in elsewhere.iterdir()) == ["original-seed0.pt", "precious.pt"]


def test_a_manifest_never_names_a_file_outside_out(tmp_path):
    """A hand-edited manifest naming ../x, an absolute path or a file through a link deletes nothing."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "v"
    out.mkdir()
    (out / "linked").symlink_to(tmp_path)
    (out / MANIFEST_NAME).write_text(json.dumps({"schema": "bsadvisor.manifest/1",
                                                 "files": ["../outside.txt", str(outside), "linked/outside.txt",
                                                           "./results.json", ""]}))
    assert earlier_results(out) == []
    with claim_out(out, overwrite=True, checkpoints=RUN_CHECKPOINTS):
        pass
    assert outside.read_text() == "keep"


def test_a_users_file_at_a_checkpoints_name_is_refused_without_resume(tmp_path):
    out = tmp_path / "v"
    earlier_run_with_manifest(out)
    write_manifest(out, ["results.json", "report.md"])  # the checkpoints are not the earlier run's
    with pytest.raises(UserError, match="did not write"):
        with claim_out(out, overwrite=True, checkpoints=RUN_CHECKPOINTS):
            pass
    assert (out / RUN_CHECKPOINTS[0]).read_bytes() == b"old checkpoint"


def test_a_refused_resume_leaves_no_manifest_behind(tmp_path):
    """A pre-manifest run's damaged checkpoint: --resume is refused and the folder is as it was."""
    out = tmp_path / "v"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "original-seed0.pt").write_bytes(b"garbage")
    (out / ".bsadvisor.lock").write_text("")  # as the killed run left it
    before = Snapshot(tmp_path)
    r = run_main([*LINREG, "--out", out, "--resume"], cwd=tmp_path)
    assert_one_line_error(r, ["original-seed0.pt"])
    before.assert_unchanged()


INDICATIVE_EXIT = 3  # validate's exit code for a verdict from one seed


@pytest.mark.slow
def test_a_run_records_exactly_what_it_wrote_and_overwrite_keeps_the_users_files(tmp_path):
    out = tmp_path / "v"
    r = run_main([*LINREG, "--out", out], cwd=tmp_path)
    assert r.returncode == INDICATIVE_EXIT, r.stderr  # one seed: the verdict is only indicative
    written = {str(p.relative_to(out)) for p in out.rglob("*")
               if p.is_file() and p.name not in (MANIFEST_NAME, ".bsadvisor.lock")}
    assert read_manifest(out) == written and {"results.json", *RUN_CHECKPOINTS} <= written
    (out / "checkpoints" / "my_model.pt").write_bytes(b"the user's model")
    stamp = os.stat(out / "results.json").st_mtime_ns
    r = run_main([*LINREG, "--out", out, "--overwrite"], cwd=tmp_path)
    assert r.returncode == INDICATIVE_EXIT, r.stderr
    assert (out / "checkpoints" / "my_model.pt").read_bytes() == b"the user's model"
    assert os.stat(out / "results.json").st_mtime_ns != stamp
    assert "checkpoints/my_model.pt" not in read_manifest(out)


def test_overwrite_never_deletes_files_no_manifest_names(tmp_path):
    """A folder without a manifest (a bsadvisor before manifests, or the user's own files of validate's names)."""
    out = tmp_path / "v"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "original-seed0.pt").write_bytes(b"the user's, or an old run's")
    (out / ".bsadvisor.lock").write_text("")  # the lock file stays (fileio.FolderLock)
    before = Snapshot(tmp_path)
    r = run_main([*LINREG, "--out", out, "--overwrite"], cwd=tmp_path)
    assert_one_line_error(r, ["original-seed0.pt", "only files a manifest names"])
    before.assert_unchanged()
