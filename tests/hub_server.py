"""A small in-memory stand-in for the Hugging Face Hub, for tests of `push_to_hub` / `from_pretrained` by repo id.

It speaks the subset of the Hub HTTP API that the installed `huggingface_hub` client uses for uploads (create repo,
preupload, NDJSON commit, git-LFS batch + PUT + verify) and downloads (repo info, tree, paths-info, resolve with the
`X-Repo-Commit` / `ETag` / `X-Linked-*` headers). It binds 127.0.0.1 only and keeps everything in memory.

Point a client at it with `HF_ENDPOINT=http://127.0.0.1:PORT HF_HUB_DISABLE_XET=1 HF_TOKEN=<anything>`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


# Files with these endings go through git-LFS, like the Hub's default `.gitattributes`; so do large files.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow", ".npy", ".npz", ".wav")
LFS_MIN_SIZE = 10 * 1024 * 1024
LFS_POINTER_SIZE = 134
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
TIMESTAMP = "2026-01-01T00:00:00.000Z"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's `oid` and `ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubFile:
    def __init__(self, content: bytes, lfs: bool):
        self.content = content
        self.lfs = lfs
        self.blob_id = git_blob_sha1(content)
        self.sha256 = hashlib.sha256(content).hexdigest() if lfs else None

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "oid": self.blob_id, "size": len(self.content), "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": LFS_POINTER_SIZE}
        return entry

    def sibling(self, path: str) -> dict:
        sibling = {"rfilename": path, "size": len(self.content), "blobId": self.blob_id}
        if self.lfs:
            sibling["lfs"] = {"sha256": self.sha256, "size": len(self.content), "pointerSize": LFS_POINTER_SIZE}
        return sibling


class HubRepo:
    """One repository: immutable snapshots `{path: HubFile}` by commit sha, and branch heads."""

    def __init__(self, repo_type: str, repo_id: str):
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.commits: dict[str, dict[str, HubFile]] = {}
        self.refs: dict[str, str] = {}
        self.refs["main"] = self.add_commit({}, "initial commit")

    def add_commit(self, files: dict[str, HubFile], summary: str) -> str:
        sha = hashlib.sha1(f"{self.repo_type}/{self.repo_id}/{len(self.commits)}/{summary}".encode()).hexdigest()
        self.commits[sha] = files
        return sha

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubServer(ThreadingHTTPServer):
    """`HubServer(("127.0.0.1", 0))`; `.endpoint` is the base URL; `.requests` logs `(method, path, status)`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address=("127.0.0.1", 0)):
        if address[0] != "127.0.0.1":
            raise ValueError(f"HubServer binds 127.0.0.1 only, got host {address[0]!r}")
        super().__init__(address, HubRequestHandler)
        self.lock = threading.RLock()  # re-entrant: error answers sent while holding it log the request under it too
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    # ------------------------------------------------------------------------------------------- plumbing
    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None, head=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        with self.server.lock:
            self.server.requests.append((self.command, self.path, status))

    def send_json(self, obj, status: int = 200, headers=None):
        self.send(status, json.dumps(obj).encode(), headers=headers)

    def send_error_code(self, status: int, code: str | None, message: str, headers=None, head=False):
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self.send(status, json.dumps({"error": message}).encode(), headers=extra, head=head)

    def find_repo(self, repo_type: str, repo_id: str) -> HubRepo | None:
        return self.server.repos.get((repo_type, repo_id))

    def repo_not_found(self, head=False):
        self.send_error_code(404, "RepoNotFound", "Repository not found", head=head)

    # ------------------------------------------------------------------------------------------- routing
    def do_HEAD(self):
        self.route("HEAD")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def route(self, method: str):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self.read_body() if method in ("POST", "PUT") else b""
        try:
            self.dispatch(method, parts, query, body)
        except Exception as exc:  # a bug in the fake server must show up as a readable failure, not a hang
            self.send_error_code(500, None, f"hub_server error: {type(exc).__name__}: {exc}")

    def dispatch(self, method: str, parts: list[str], query: dict, body: bytes):
        if parts[:2] == ["api", "whoami-v2"] and method == "GET":
            return self.send_json({"type": "user", "name": "user", "fullname": "Test User", "orgs": [],
                                   "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self.create_repo(json.loads(body or b"{}"))
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self.send_json({"errors": [], "warnings": []})
        if parts[0] == "__lfs":
            return self.lfs_object(method, parts[1:], body)
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[parts[1]], "/".join(parts[2:4]), parts[4:]
            return self.api_repo(method, repo_type, repo_id, rest, query, body)
        # Non-API routes: `{id}/resolve/...`, `{id}.git/info/lfs/objects/batch`, with a `datasets/` prefix if needed.
        repo_type = "model"
        if parts[0] in ("datasets", "spaces") and len(parts) >= 3:
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if len(parts) >= 4 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self.resolve(method, repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self.lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}", json.loads(body))
        return self.send_error_code(404, None, f"hub_server: no route for {method} /{'/'.join(parts)}",
                                    head=method == "HEAD")

    # ------------------------------------------------------------------------------------------- repos
    def create_repo(self, payload: dict):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.server.endpoint}/{prefix}{repo_id}"
        with self.server.lock:  # not held while answering: `send` takes it too
            exists = (repo_type, repo_id) in self.server.repos
            if not exists:
                self.server.repos[(repo_type, repo_id)] = HubRepo(repo_type, repo_id)
        if exists:
            # The Hub answers 409 with the repo's url, which `create_repo(exist_ok=True)` returns.
            return self.send_json({"error": "You already created this repo", "url": url}, status=409)
        self.send_json({"url": url, "name": repo_id, "id": repo_id})

    def api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict, body: bytes):
        repo = self.find_repo(repo_type, repo_id)
        if repo is None:
            return self.repo_not_found(head=method == "HEAD")
        if not rest or (rest[0] == "revision" and len(rest) == 2):
            return self.repo_info(method, repo, rest[1] if rest else "main")
        if len(rest) < 2:
            return self.send_error_code(404, None, f"hub_server: no route for {self.path}")
        action, revision, sub_path = rest[0], rest[1], "/".join(rest[2:])
        sha = repo.resolve(revision)
        if sha is None and action != "commit":
            return self.send_error_code(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if action == "preupload" and method == "POST":
            return self.preupload(repo, sha, json.loads(body))
        if action == "commit" and method == "POST":
            return self.commit(repo, unquote(revision), body)
        if action == "tree" and method == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self.tree(repo, sha, sub_path, recursive)
        if action == "paths-info" and method == "POST":
            form = parse_qs(body.decode())
            return self.paths_info(repo, sha, form.get("paths", []))
        return self.send_error_code(404, None, f"hub_server: no route for {method} {self.path}")

    def repo_info(self, method: str, repo: HubRepo, revision: str):
        sha = repo.resolve(revision)
        if sha is None:
            return self.send_error_code(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[sha]
        self.send_json({
            "id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": sha,
            "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": TIMESTAMP, "createdAt": TIMESTAMP, "cardData": {},
            "siblings": [files[path].sibling(path) for path in sorted(files)],
        })

    def preupload(self, repo: HubRepo, sha: str, payload: dict):
        files = repo.commits[sha]
        out = []
        for item in payload["files"]:
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_SIZE
            existing = files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.blob_id
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self.send_json({"files": out, "commitOid": sha})

    def commit(self, repo: HubRepo, revision: str, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self.send_error_code(400, None, "commit payload must start with a header line")
        with self.server.lock:
            parent = repo.refs.get(revision)
            if parent is None:
                return self.send_error_code(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = dict(repo.commits[parent])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        return self.send_error_code(400, None, f"unsupported encoding {value.get('encoding')}")
                    files[value["path"]] = HubFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    content = self.server.lfs_objects.get(value["oid"])
                    if content is None:
                        return self.send_error_code(400, None, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = HubFile(content, lfs=True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(folder)}
                else:
                    return self.send_error_code(400, None, f"unsupported commit operation {key!r}")
            sha = repo.add_commit(files, lines[0]["value"].get("summary", ""))
            repo.refs[revision] = sha
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self.send_json({"success": True, "commitOid": sha, "pullRequestUrl": None,
                        "commitUrl": f"{self.server.endpoint}/{prefix}{repo.repo_id}/commit/{sha}"})

    def tree(self, repo: HubRepo, sha: str, sub_path: str, recursive: bool):
        files = repo.commits[sha]
        prefix = sub_path.strip("/") + "/" if sub_path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            return self.send_error_code(404, "EntryNotFound", f"{sub_path} does not exist on {sha}")
        entries, folders = [], set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix):].split("/")
            for depth in range(1, len(relative)):  # the folders on the way to this file
                if not recursive and depth > 1:
                    break
                folders.add(prefix + "/".join(relative[:depth]))
            if recursive or len(relative) == 1:
                entries.append(files[path].tree_entry(path))
        entries += [self.folder_entry(f) for f in sorted(folders)]
        self.send_json(entries)

    @staticmethod
    def folder_entry(path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def paths_info(self, repo: HubRepo, sha: str, paths: list[str]):
        files = repo.commits[sha]
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(files[path].tree_entry(path))
            elif any(p.startswith(path + "/") for p in files):
                out.append(self.folder_entry(path))
        self.send_json(out)

    # ------------------------------------------------------------------------------------------- downloads
    def resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str):
        head = method == "HEAD"
        repo = self.find_repo(repo_type, repo_id)
        if repo is None:
            return self.repo_not_found(head=head)
        sha = repo.resolve(revision)
        if sha is None:
            return self.send_error_code(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        file = repo.commits[sha].get(path)
        if file is None:
            return self.send_error_code(404, "EntryNotFound", f"{path} does not exist on {sha}",
                                        headers={"X-Repo-Commit": sha}, head=head)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{file.blob_id}"', "Accept-Ranges": "bytes"}
        if file.lfs:
            headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(len(file.content))})
        content, status = file.content, 200
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes="):
            start_text, end_text = byte_range[len("bytes="):].split(",")[0].split("-")
            total = len(file.content)
            if start_text:
                start, end = int(start_text), int(end_text) if end_text else total - 1
            else:  # a suffix range: the last N bytes
                start, end = max(total - int(end_text), 0), total - 1
            end = min(end, total - 1)
            if start >= total:
                return self.send(416, b"", headers={"Content-Range": f"bytes */{total}", **headers}, head=head)
            content, status = file.content[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self.send(status, content, content_type="application/octet-stream", headers=headers, head=head)

    # ------------------------------------------------------------------------------------------- git-LFS
    def lfs_batch(self, repo_type: str, repo_id: str, payload: dict):
        if self.find_repo(repo_type, repo_id) is None:
            return self.repo_not_found()
        if payload.get("operation") != "upload":
            return self.send_error_code(400, None, "hub_server only supports LFS uploads")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server.lfs_objects:  # no `actions` means "already there"
                entry["actions"] = {
                    "upload": {"href": f"{self.server.endpoint}/__lfs/{obj['oid']}"},
                    "verify": {"href": f"{self.server.endpoint}/__lfs/verify"},
                }
            objects.append(entry)
        self.send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                  content_type="application/vnd.git-lfs+json")

    def lfs_object(self, method: str, parts: list[str], body: bytes):
        if method == "PUT" and len(parts) == 1:
            oid = parts[0]
            if hashlib.sha256(body).hexdigest() != oid:
                return self.send_error_code(400, None, f"uploaded content does not match sha256 {oid}")
            with self.server.lock:
                self.server.lfs_objects[oid] = body
            return self.send(200, b"")
        if method == "POST" and parts == ["verify"]:
            obj = json.loads(body)
            content = self.server.lfs_objects.get(obj["oid"])
            if content is None or len(content) != obj["size"]:
                return self.send_error_code(404, None, f"LFS object {obj['oid']} not found")
            return self.send_json({"oid": obj["oid"], "size": obj["size"]})
        return self.send_error_code(404, None, f"hub_server: no route for {method} {self.path}")
