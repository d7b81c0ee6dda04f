#!/usr/bin/env python3
"""A Starling executor in Python, using only the standard library.

An agent whose skill is in api mode, e.g.

    starling agent --key agent.key --skill words:advanced --handler words=api

hands each part of a task for that skill to whichever program asks for it through
its control API. This program is such an executor: it follows the agent's event
stream (GET /v1/events), takes every `task_assigned` event for its skill, claims
the part (POST /v1/tasks/{id}/claim, so two executors never do the same part),
reports progress (POST /v1/tasks/{id}/progress) and completes it
(POST /v1/tasks/{id}/complete). Parts that were handed out before it started are
picked up from GET /v1/assignments.

    python3 examples/python_executor.py --api http://127.0.0.1:7401 --skill words

The work itself is `work()` below: replace it with your own.
"""

import argparse
import base64
import collections
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def work(description, payload, progress):
    """Counts the words of the payload; returns the result as bytes.

    `progress(fraction, checkpoint=None)` reports how far the part is; the
    checkpoint (bytes) lets a replacement resume if this agent fails.
    """
    text = payload.decode("utf-8", errors="replace")
    words = text.split()
    progress(0.5, checkpoint=json.dumps({"counted": len(words)}).encode())
    common = collections.Counter(w.lower() for w in words).most_common(3)
    result = {
        "description": description,
        "words": len(words),
        "lines": len(text.splitlines()),
        "most_common": [w for w, _ in common],
    }
    return json.dumps(result, sort_keys=True).encode()


class Api:
    """The agent's control API."""

    def __init__(self, url, token=None):
        self.url = url.rstrip("/")
        self.token = token

    def _request(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        return urllib.request.urlopen(req, timeout=timeout)

    def call(self, method, path, body=None):
        """Returns (status, JSON answer); API errors come back as their status."""
        try:
            with self._request(method, path, body) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                answer = json.load(e)
            except ValueError:
                answer = {"error": {"message": str(e)}}
            return e.code, answer

    def events(self):
        """Yields (kind, data) from the event stream until it ends."""
        with self._request("GET", "/v1/events", timeout=None) as resp:
            kind, data = "message", []
            for raw in resp:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line:
                    if data:
                        yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))


def log(*parts):
    print(*parts, flush=True)


class Executor:
    def __init__(self, api, skill, max_tasks):
        self.api = api
        self.skill = skill
        self.max_tasks = max_tasks
        self.done = 0
        self.seen = set()
        self.lock = threading.Lock()
        self.finished = threading.Event()

    def offer(self, assignment):
        """Starts a part if it is for our skill, in api mode, and new to us."""
        if assignment.get("skill") != self.skill or assignment.get("executor") != "api":
            return
        task_id = assignment["task_id"]
        with self.lock:
            if task_id in self.seen:
                return
            self.seen.add(task_id)
        threading.Thread(target=self.run, args=(assignment,), daemon=True).start()

    def run(self, assignment):
        task_id = assignment["task_id"]
        quoted = urllib.parse.quote(task_id)
        status, answer = self.api.call("POST", f"/v1/tasks/{quoted}/claim")
        if status != 200:
            log("skipped", task_id, answer.get("error", {}).get("message", status))
            return
        payload = base64.b64decode(assignment.get("payload_base64") or "")

        def progress(fraction, checkpoint=None):
            body = {"progress": fraction}
            if checkpoint is not None:
                body["checkpoint_base64"] = base64.b64encode(checkpoint).decode()
            self.api.call("POST", f"/v1/tasks/{quoted}/progress", body)

        try:
            result, success = work(assignment.get("description", ""), payload, progress), True
        except Exception as e:  # the part fails; the executor carries on
            result, success = f"{type(e).__name__}: {e}".encode(), False
        status, answer = self.api.call(
            "POST",
            f"/v1/tasks/{quoted}/complete",
            {"success": success, "result_base64": base64.b64encode(result).decode()},
        )
        log("completed" if status == 200 else "not accepted", task_id, status)
        with self.lock:
            self.done += 1
            if self.max_tasks and self.done >= self.max_tasks:
                self.finished.set()

    def follow(self):
        """Follows the event stream, reconnecting if it breaks."""
        while not self.finished.is_set():
            try:
                for kind, data in self.api.events():
                    if kind == "ready":
                        # Subscribed: now pick up parts handed out before.
                        skill = urllib.parse.quote(self.skill)
                        status, waiting = self.api.call("GET", f"/v1/assignments?skill={skill}")
                        if status == 200:
                            for a in waiting:
                                if not a.get("claimed"):
                                    self.offer(a)
                        log("ready", self.skill, self.api.url)
                    elif kind == "task_assigned":
                        self.offer(data)
                    elif kind == "node_stopped":
                        break
                    if self.finished.is_set():
                        return
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                log("event stream unavailable:", e)
            time.sleep(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", default="http://127.0.0.1:7401", help="the agent's control API")
    p.add_argument("--skill", required=True, help="the api-mode skill to serve")
    p.add_argument("--token", default=None, help="bearer token, if the API needs one")
    p.add_argument("--max-tasks", type=int, default=0, help="exit after this many parts (0: never)")
    args = p.parse_args()
    executor = Executor(Api(args.api, args.token), args.skill, args.max_tasks)
    follower = threading.Thread(target=executor.follow, daemon=True)
    follower.start()
    try:
        while follower.is_alive() and not executor.finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    # Let the last completion's log line out before exiting.
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
