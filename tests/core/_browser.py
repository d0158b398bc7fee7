"""Headless Chromium driven over the DevTools protocol, with tornado's websocket client.

Only what the dashboard tests need: open a page, evaluate JavaScript, wait for a condition, take a
screenshot, and collect the page's JavaScript errors.
"""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import time

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900"]


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, profile_dir, executable=CHROMIUM, width=1280, height=900):
        self.profile_dir = str(profile_dir)
        self.executable = executable
        self.size = (width, height)
        self.loop = asyncio.new_event_loop()
        self.proc = None
        self.ws = None
        self.session = None
        self.errors: list = []
        self._id = 0

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self):
        os.makedirs(self.profile_dir, exist_ok=True)
        port_file = os.path.join(self.profile_dir, "DevToolsActivePort")
        if os.path.exists(port_file):  # left by an earlier run with this profile
            os.unlink(port_file)
        self.log_path = os.path.join(self.profile_dir, "chromium.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self.profile_dir}",
                 "--remote-debugging-port=0", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self.loop.run_until_complete(self._connect())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.ws is not None:
            async def close():  # inside our loop: tornado looks for the running one
                self.ws.close()

            self.loop.run_until_complete(close())
        # chromium keeps its singleton socket in a directory of its own under $TMPDIR (a path
        # under the profile would be too long for a socket), and may leave it: removed below
        link = os.path.join(self.profile_dir, "SingletonSocket")
        singleton = os.path.dirname(os.readlink(link)) if os.path.islink(link) else None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if singleton:
            shutil.rmtree(singleton, ignore_errors=True)
        self.loop.close()

    async def _connect(self, timeout=30.0):
        from tornado.websocket import websocket_connect

        path = os.path.join(self.profile_dir, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not os.path.exists(path) or len(open(path).read().split()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(f"chromium did not start its DevTools endpoint; its output:\n"
                                   f"{open(self.log_path, errors='replace').read()[-3000:]}")
            await asyncio.sleep(0.05)
        port, browser_path = open(path).read().split()[:2]
        self.ws = await websocket_connect(f"ws://127.0.0.1:{port}{browser_path}",
                                          max_message_size=64 << 20)
        target = (await self._send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await self._send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        width, height = self.size
        await self._send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1,
                          "mobile": False}, self.session)
        await self._send("Runtime.enable", {}, self.session)
        await self._send("Page.enable", {}, self.session)

    async def _send(self, method, params, session=None, timeout=30.0):
        self._id += 1
        msg_id = self._id
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.write_message(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method} within {timeout} s")
            raw = await asyncio.wait_for(self.ws.read_message(), left)
            if raw is None:
                raise BrowserError("chromium closed the DevTools connection")
            reply = json.loads(raw)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, msg):
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(details.get("exception", {}).get("description")
                               or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in params.get("args", [])))

    # -- page ---------------------------------------------------------------------------------

    def call(self, method, params=None):
        return self.loop.run_until_complete(self._send(method, params or {}, self.session))

    def open(self, url):
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=20.0, what=None):
        """Evaluate *expression* until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is still loading
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"{what or expression} not true after {timeout} s (last: {value!r}); "
                           f"page errors: {self.errors}")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path
