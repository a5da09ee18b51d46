"""The browser machinery of the frontend tests (tests/test_workflows_frontend.py,
tests/test_comfyui_saved_workflows.py): the frontends (the host's pin and the newest's static
folder, classic canvas and Vue nodes), headless Chromium through Playwright, and ComfyUI servers
with this pack, one per frontend's files, the next one started while the current one is in use;
and what a node shows on screen (its pixels, counted by colour).

Import the `browser` and `frontend` fixtures into a test module to use them there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import comfy_support as cs

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class Frontend:
    """One frontend the tests drive: the host's pin (None) or a static folder served with
    --front-end-root, with or without the Vue node renderer; and where its generation shows
    dialogs and the models a workflow misses (a dialog in 1.27, the issues panel in 1.5x)."""

    def __init__(self, key: str, root: str | None, vue: bool = False):
        self.key, self.root, self.vue = key, root, vue

    @property
    def newer(self) -> bool:
        return self.root is not None

    @property
    def servable(self) -> bool:
        """Whether there are files to serve: the host's own, or a static folder."""
        return not self.newer or os.path.isdir(self.root)

    def __repr__(self):
        return self.key


FRONTENDS = [Frontend("host", None), Frontend("newest", os.environ.get("FRONTEND_NEWEST")),
             Frontend("newest-vue", os.environ.get("FRONTEND_NEWEST"), vue=True)]


@pytest.fixture(scope="module", params=FRONTENDS, ids=repr)
def frontend(request):
    front = request.param
    if not front.servable:
        pytest.skip("FRONTEND_NEWEST does not name a frontend's static folder (.ci/comfy_host prints one)")
    return front


DIALOGS = ".p-dialog, [role=dialog]"


def close_dialogs(page):
    for _ in range(5):
        if not page.locator(DIALOGS).count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not page.locator(DIALOGS).count(), "a dialog did not close"


@pytest.fixture(scope="module")
def browser():
    """(Playwright's sync API, running, and a Chromium), or a skip saying which is missing (before
    a server is started). One Playwright for the module: pages of every frontend come from it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install playwright)")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("the browser tests need Chromium (apt install chromium, or CHROMIUM=/path/to/it)")
    with sync_api.sync_playwright() as playwright:
        yield sync_api, playwright, chromium


def open_page(page, url, sync_api):
    """Go to (or back to) the frontend at `url` and wait until it is ready: its start-up workflow
    loaded, every dialog closed."""
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph", timeout=120_000)
    # Once ready the frontend loads a start-up workflow or, on a first visit (every fresh
    # profile), opens the template browser instead: wait for either, then close every dialog.
    with contextlib.suppress(sync_api.TimeoutError):
        page.wait_for_function(f"window.app.graph.nodes.length > 0 || document.querySelector({DIALOGS!r})", timeout=30_000)
    page.wait_for_timeout(2000)
    close_dialogs(page)


class BrowserSite:
    """A ComfyUI with this pack serving one frontend's files (the host's pin, or the newest's static
    folder for both its renderers) and a Chromium page of it."""

    def __init__(self, browser, server, profile: Path, root: str | None):
        self.sync_api, playwright, chromium = browser
        self.server, self.root = server, root
        self.errors, self.vue = [], None
        self.context = playwright.chromium.launch_persistent_context(str(profile), executable_path=chromium, args=CHROMIUM_ARGS,
                                                                     viewport={"width": 1600, "height": 1000})
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(f"{error}\n{error.stack}"))

    def show(self, frontend, reload: bool = False):
        """The page, in `frontend`'s renderer: a user setting, read as the page loads, so switching
        it reloads the page (as `reload` does, for a new list of models)."""
        if frontend.newer and frontend.vue != self.vue:
            status, _ = self.server.post("/settings/Comfy.VueNodes.Enabled", frontend.vue)
            assert status == 200, status
            reload = True
        if reload or self.vue is None:
            open_page(self.page, self.server.url, self.sync_api)
        if frontend.newer:
            shown = self.page.evaluate("() => app.extensionManager.setting.get('Comfy.VueNodes.Enabled')")
            assert shown == frontend.vue, f"{frontend}: the page's Comfy.VueNodes.Enabled is {shown}"
        self.vue = frontend.vue
        return self.page

    def pack_errors(self) -> list[str]:
        """The page errors of this pack's extension since the last call."""
        errors, self.errors = [e for e in self.errors if "diff-plugin" in e or "extensions/" in e], []
        return errors

    def close(self):
        try:
            self.context.close()
        finally:
            self.server.stop()


def new_server(tmp_path_factory, models: Path, photo_dir: Path, root: str | None) -> cs.ComfyServer:
    """A ComfyUI, not started yet, serving the frontend files in `root` (None: the host's pin),
    with the plugins of `models` and the workflows' photos."""
    plugins_only = tmp_path_factory.mktemp("models")
    (plugins_only / "diff_plugins").symlink_to(models / "diff_plugins", target_is_directory=True)
    photos = cs.workflow_photos(photo_dir)
    photos["example.png"] = cs.COMFYUI_DIR / "input" / "example.png"
    return cs.ComfyServer(tmp_path_factory.mktemp("comfy"), plugins_only, photos, max_side=640, front_end_root=root)


class Sites:
    """The Site of the frontend files the tests are at, one at a time: newest and newest-vue share
    one (the same files), another frontend's closes it. While one is in use, the ComfyUI of the
    next files in `roots` (the order of the tests) starts in the background."""

    def __init__(self, new_server, open_site, roots: list):
        self.new_server, self.open_site, self.roots = new_server, open_site, roots
        self.current, self.starting = None, {}
        self.threads = ThreadPoolExecutor(max_workers=1)

    def of(self, frontend) -> BrowserSite:
        if self.current is None or self.current.root != frontend.root:
            self.close_current()
            server = self.started(frontend.root)
            self.current = self.open_site(server, frontend.root)
            self.start_next(frontend.root)
        return self.current

    def start_next(self, root):
        """Start the ComfyUI of the files after `root` in `roots` in the background."""
        if root in self.roots and root != self.roots[-1]:
            self.start(self.roots[self.roots.index(root) + 1])

    def start(self, root):
        """Start the ComfyUI of `root` in the background, unless it is starting already."""
        if root not in self.starting:
            server = self.new_server(root)
            self.starting[root] = (server, self.threads.submit(server.start))

    def started(self, root) -> cs.ComfyServer:
        """The ComfyUI of `root`, once it answers (stopped, if it does not)."""
        self.start(root)
        server, starting = self.starting.pop(root)
        try:
            starting.result()
        except BaseException:
            server.stop()
            raise
        return server

    def close_current(self):
        if self.current is not None:
            site, self.current = self.current, None
            site.close()

    def close(self):
        self.close_current()
        for server, starting in self.starting.values():  # started for tests that did not come
            with contextlib.suppress(Exception):
                starting.result()
            server.stop()
        self.threads.shutdown()


def open_site(server, make_site):
    """make_site(): a site of `server`, which is stopped if this pack did not import there, or no page opens."""
    try:
        failed = [line for line in server.log_text().splitlines() if "IMPORT FAILED" in line and "diff-plugin" in line]
        assert not failed, f"the pack did not import:\n{server.log_text()[-4000:]}"
        return make_site()
    except BaseException:
        server.stop()
        raise


def site_roots(request) -> list:
    """The frontend files (roots) the selected tests of the calling module use, in their order."""
    fronts = [item.callspec.params["frontend"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "frontend" in item.callspec.params]
    return list(dict.fromkeys(front.root for front in fronts if front.servable))


# ---------------------------------------------------------------------- what a node shows on screen

NODE_BOX = """id => { const node = app.graph.getNodeById(id);
    app.canvas.centerOnNode?.(node); app.canvas.setDirty(true, true);
    const element = document.querySelector(`[data-node-id="${id}"]`);
    if (element) { const r = element.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }
    const canvas = app.canvas.canvas.getBoundingClientRect(), ds = app.canvas.ds;
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
    return [canvas.x + x, canvas.y + y, node.size[0] * ds.scale, (node.size[1] + LiteGraph.NODE_TITLE_HEIGHT) * ds.scale]; }"""


def node_pixels(page, node_id, path):
    """The node as the frontend shows it on screen (centred first): an RGB image, saved to `path`."""
    from PIL import Image

    box = page.evaluate(NODE_BOX, node_id)
    page.wait_for_timeout(500)
    box = page.evaluate(NODE_BOX, node_id)
    page.screenshot(path=str(path), clip={"x": box[0], "y": box[1], "width": box[2], "height": box[3]})
    return Image.open(path).convert("RGB")


def count_near(image, colour, tolerance=40) -> int:
    """Pixels within `tolerance` (summed over R, G, B) of `colour`."""
    import numpy as np

    return int((np.abs(np.asarray(image, dtype=int) - np.array(colour)).sum(axis=-1) <= tolerance).sum())


def count_light(image, floor=120) -> int:
    """Pixels of text on a node (every channel above `floor`; the node's background is dark)."""
    import numpy as np

    return int((np.asarray(image).min(axis=-1) > floor).sum())
