"""The Kubernetes API in memory, for unit tests of KubeCluster's pod tracking.

A KubeCluster makes every API call through ``cluster.kube`` (a KubeAPI); FakeKube takes its
place and keeps pods as the API lists them, in a dict. Tests move pods between states (the
status objects are those a real kubelet writes: see test_kubernetes.py's pod_status cases),
remove them as ``kubectl delete`` would and make the list call fail, then run one poll
(``cluster._sync(cluster._poll_step())``) and look at what the cluster concluded.

Only the API is fake: the cluster and its scheduler are real. The same code runs against the
real Kubernetes in test_kubernetes.py.
"""
from __future__ import annotations

import collections
import copy
import re

from jobqueue.deploy.kubernetes import KubernetesError


class FakeKube:
    namespace = "fake"

    def __init__(self):
        self.pods: dict[str, dict] = {}          # name -> pod, as the API lists it
        self.secrets: dict[str, dict] = {}
        self.calls: collections.Counter = collections.Counter()
        self.history: list = []
        self.fail_list: list[str] = []            # errors the next list calls raise

    def _record(self, *call):
        self.history.append(call)
        self.calls[call[0]] += 1

    @staticmethod
    def _names(label_selector: str):
        match = re.search(r"jobqueue/worker in \(([^)]*)\)", label_selector)
        return None if match is None else set(match.group(1).split(","))

    async def list_pods(self, label_selector: str) -> list:
        self._record("list", label_selector)
        if self.fail_list:
            raise KubernetesError(f"GET pods in namespace fake failed: {self.fail_list.pop(0)}")
        return [copy.deepcopy(p) for p in self.pods.values()]

    async def create(self, plural: str, body: dict) -> dict:
        self._record("create", plural, body["metadata"]["name"])
        store = self.pods if plural == "pods" else self.secrets
        store[body["metadata"]["name"]] = {"metadata": dict(body["metadata"]),
                                           "status": {"phase": "Pending"}}
        return body

    async def delete_collection(self, plural: str, label_selector: str, grace=None):
        self._record("delete_collection", plural, label_selector, grace)
        names = self._names(label_selector)
        for name in list(self.pods):
            if names is None or name in names:
                del self.pods[name]

    async def delete(self, plural: str, name: str):
        self._record("delete", plural, name)
        self.secrets.pop(name, None)

    async def logs(self, pod: str, tail_lines=None) -> str:
        self._record("logs", pod)
        return f"log of {pod}\n"

    async def aclose(self):
        pass

    # -- what tests do to the pods -----------------------------------------------------------

    def set(self, name: str, phase: str = "Pending", **status):
        self.pods[name]["status"] = {"phase": phase, **status}

    def waiting(self, name: str, reason: str, message: str = ""):
        self.set(name, containerStatuses=[{"name": "worker", "state": {
            "waiting": {"reason": reason, "message": message}}}])

    def exited(self, name: str, code: int, reason: str = "Error"):
        self.set(name, "Failed" if code else "Succeeded", containerStatuses=[
            {"name": "worker", "state": {"terminated": {"exitCode": code, "reason": reason}}}])
