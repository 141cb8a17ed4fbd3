"""Runners that inject faults, registered only inside the reliability tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepResult


class FillParams(RunnerParams):
    leave: int = Field(1024, ge=0, description="bytes left free on the run folder's disk")
    marker: str = Field("", description="when set: fill only while this file is absent")


class FillDisk(Runner):
    """Fills the file system of the run folder (a small tmpfs in the test) to `leave` bytes,
    so that the checkpoint and state.json writes after this step meet a full disk."""

    id = "test-fill-disk"
    Params = FillParams

    def run(self, ctx: StepContext, params: FillParams) -> StepResult:
        if params.marker and Path(params.marker).exists():
            return StepResult(model=ctx.model, metrics={})
        filler = Path(ctx.workdir) / "filler.bin"
        st = os.statvfs(ctx.workdir)
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as fh:
            try:
                fh.write(b"\0" * max(0, free - params.leave))
            except OSError:
                pass
        return StepResult(model=ctx.model, metrics={})


class WaitParams(RunnerParams):
    marker: str = Field(description="the step returns once this file exists (at most 60 s)")


class WaitForMarker(Runner):
    """A long step: waits for a marker file, so a test can signal the process mid-step."""

    id = "test-wait"
    Params = WaitParams

    def run(self, ctx: StepContext, params: WaitParams) -> StepResult:
        Path(params.marker + ".started").write_text("in the step")
        deadline = time.monotonic() + 60
        while not Path(params.marker).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return StepResult(model=ctx.model, metrics={})
