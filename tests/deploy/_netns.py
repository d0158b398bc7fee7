"""Simulated hosts for the SSH tests: network namespaces on a private bridge, each with its sshd.

    bridge jqbr<S> 10.123.<S>.1/24 (this machine's side)
      veth jq<S>v<i> <-> eth0 10.123.<S>.<10+i>/24 in namespace jq<S>-h<i>, sshd on :2222
                                                 (all but the last: a host that refuses ssh)

The addresses exist only inside this machine: the namespaces have no default route and
ip_forward is left alone, so nothing they send can leave it. Where Docker runs (it loads
br_netfilter, so bridged frames pass iptables' FORWARD chain, and sets its policy to DROP), one
rule lets frames from one port of our bridge to another through, and is removed with it. Commands run inside a namespace
through ``nsenter --net=/run/netns/NAME`` (``ip netns exec`` would remount /sys).

Each test run claims its own slot S (creating the bridge is the atomic claim; its alias names
the owner's pid), so test runs on one machine do not tear down each other's hosts; slots
whose owner died are cleaned up by the next claim.

    python tests/deploy/_netns.py up|down [SLOT]      # by hand, for debugging
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWNER = "jobqueue-test pid "


def _run(*argv, check=True):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited with {out.returncode}: "
                           f"{out.stderr.strip() or out.stdout.strip()}")
    return out


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/usr/sbin/sshd") and not shutil.which("apt-get"):
        return "sshd is not installed"
    return None


class Hosts:
    def __init__(self, slot: int, n: int = 4):
        self.slot = slot
        self.n = n
        self.bridge = f"jqbr{slot}"
        self.bridge_address = f"10.123.{slot}.1"

    def name(self, i: int) -> str:
        return f"jq{self.slot}-h{i}"

    def address(self, i: int) -> str:
        return f"10.123.{self.slot}.{10 + i}"

    def in_ns(self, i: int, *argv, check=True):
        return _run("nsenter", f"--net=/run/netns/{self.name(i)}", *argv, check=check)

    def up(self, sshd: int = 3) -> list:
        """Make the hosts (the bridge exists: claim() made it), sshd in the first ``sshd``."""
        _run("ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        if shutil.which("iptables"):
            _run("iptables", "-I", "FORWARD", *self._within_bridge())
        for i in range(self.n):
            outside, inside = f"jq{self.slot}v{i}", f"jq{self.slot}p{i}"
            _run("ip", "netns", "add", self.name(i))
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _run("ip", "link", "set", inside, "netns", self.name(i))
            self.in_ns(i, "ip", "link", "set", inside, "name", "eth0")
            self.in_ns(i, "ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            self.in_ns(i, "ip", "link", "set", "eth0", "up")
            self.in_ns(i, "ip", "link", "set", "lo", "up")
            _run("ip", "link", "set", outside, "master", self.bridge)
            _run("ip", "link", "set", outside, "up")
        start = os.path.join(ROOT, "ci", "sshd", "start.sh")
        with ThreadPoolExecutor(sshd) as pool:
            list(pool.map(lambda i: _run("bash", start, self.name(i), self.address(i)),
                          range(sshd)))
        return [self.address(i) for i in range(self.n)]

    def down(self):
        """Stop the sshds, delete the namespaces (with their veths) and the bridge."""
        stop = os.path.join(ROOT, "ci", "sshd", "stop.sh")
        names = [self.name(i) for i in range(self.n)
                 if os.path.exists(f"/run/netns/{self.name(i)}")]
        with ThreadPoolExecutor(max(1, len(names))) as pool:
            list(pool.map(lambda name: _run("bash", stop, name, check=False), names))
        for i in range(self.n):     # what a failed test left behind: a namespace outlives
            for pid in self.pids(i):  # its mount point while any process is in it
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for i in range(self.n):
            _run("ip", "netns", "del", self.name(i), check=False)
            _run("ip", "link", "del", f"jq{self.slot}v{i}", check=False)
            shutil.rmtree(os.path.join(ROOT, "ci", "state", "sshd", "netns", self.name(i)),
                          ignore_errors=True)
        _run("ip", "link", "del", self.bridge, check=False)
        if shutil.which("iptables"):
            while _run("iptables", "-D", "FORWARD", *self._within_bridge(),
                       check=False).returncode == 0:
                pass

    def _within_bridge(self) -> list:
        """The iptables match and target for frames between two hosts of this bridge."""
        return ["-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    def pids(self, i: int) -> list:
        if not os.path.exists(f"/run/netns/{self.name(i)}"):
            return []
        out = _run("ip", "netns", "pids", self.name(i), check=False)
        return [int(p) for p in out.stdout.split()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def claim(n: int = 4) -> Hosts:
    """A free slot, its bridge made and marked with this process's pid."""
    bridges = json.loads(_run("ip", "-j", "link", "show", "type", "bridge").stdout or "[]")
    taken = set()
    for b in bridges:
        name, alias = b.get("ifname", ""), b.get("ifalias") or ""
        if not (name.startswith("jqbr") and name[4:].isdigit()):
            continue
        slot = int(name[4:])
        if alias.startswith(OWNER) and not _pid_alive(int(alias[len(OWNER):])):
            Hosts(slot, n).down()       # left by a run that died
        else:
            taken.add(slot)
    start = os.getpid() % 200
    for k in range(200):
        slot = (start + k) % 200 + 20
        if slot in taken or _run("ip", "link", "add", f"jqbr{slot}", "type", "bridge",
                                 check=False).returncode:
            continue
        _run("ip", "link", "set", f"jqbr{slot}", "alias", f"{OWNER}{os.getpid()}")
        return Hosts(slot, n)
    raise RuntimeError("no free slot for test hosts (bridges jqbr20..jqbr219 all exist)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["up"]:
        hosts = claim()
        _run("ip", "link", "set", hosts.bridge, "alias", f"{OWNER}1")   # kept: owned by init
        print(hosts.slot, hosts.up())
    elif sys.argv[1:2] == ["down"] and len(sys.argv) == 3:
        Hosts(int(sys.argv[2])).down()
    else:
        sys.exit(__doc__)
