"""`patchmoi demo` with the dashboard: the demo's service and release driver run inside the app."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.binding import Binding

from patchmoi.core.demo import Demo
from patchmoi.tui.app import PatchmoiApp
from patchmoi.tui.client import LocalClient


class DemoApp(PatchmoiApp):
    BINDINGS = [*PatchmoiApp.BINDINGS, Binding("n", "next_release", "Next release")]
    HELP_EXTRA = (("n", "demo: the upstream cuts its next release now"),)

    def __init__(self, demo: Demo, cycles: int | None = None, **kwargs: Any) -> None:
        super().__init__(LocalClient(demo.world.settings(), workspace=demo.world.fork), **kwargs)
        self.demo = demo
        self.cycles = cycles
        self.sub_title = f"demo {demo.root}"
        demo.listeners.append(lambda line: self.notify(line[10:], title="demo", timeout=4))

    def on_ready(self) -> None:
        # Not on_mount: Textual also runs the base class's on_mount (it walks the MRO), which loads the tabs.
        self.run_demo()

    @work(exclusive=True, group="demo", exit_on_error=False)
    async def run_demo(self) -> None:
        await self.demo.start()
        await self.refresh_health()
        assert self.demo.driver is not None
        await self.demo.driver.run(self.cycles)
        self.notify(
            "demo cycles done; press q to quit"
            if self.demo.driver.ok
            else "demo: an outcome differed from the story; see the Attempts tab",
            title="demo",
        )

    def action_next_release(self) -> None:
        if self.demo.driver is not None:
            self.demo.driver.next_now.set()
            self.notify("cutting the next upstream release now", title="demo")

    async def on_unmount(self) -> None:
        # PatchmoiApp.on_unmount (closing the client) runs too: Textual calls every class's handler.
        await self.demo.stop()
