"""A small Hugging Face Hub on 127.0.0.1, held in memory, for tests that must not reach the internet.

It is a real HTTP server, not a mock of any client: huggingface_hub, transformers and peft talk to it
over HTTP once `HF_ENDPOINT` points at it. It speaks the part of the Hub's API those clients use
(read from huggingface_hub 1.33's hf_api.py, _commit_api.py, lfs.py and file_download.py):

    POST /api/repos/create                         create a repo (409, still with a `url`, if it exists)
    POST /api/validate-yaml                        check a README's YAML header
    POST /api/{type}s/{repo}/preupload/{rev}       say how each file is sent: `regular` or `lfs`
    POST /api/{type}s/{repo}/commit/{rev}          one commit from an NDJSON body
    POST /api/{type}s/{repo}/branch/{branch}       create a branch
    GET  /api/{type}s/{repo}[/revision/{rev}]      repo info: sha, siblings
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]   list files and folders
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}  file metadata and content
    POST /[{type}s/]{repo}.git/info/lfs/objects/batch  LFS upload instructions (basic transfer)
    PUT  /lfs-upload/{oid}?sig=...                 the presigned upload that the batch answer points to
    POST /[{type}s/]{repo}.git/info/lfs/objects/verify  confirm an upload

Xet is never offered: no `X-Xet-Hash` on downloads and no `xetHash` in trees. huggingface_hub >= 1.20
uploads every `lfs` file through Xet when hf_xet is installed, with no fallback, so a server built with
`lfs=True` is only usable by clients running with `HF_HUB_DISABLE_XET=1`; the default (`lfs=False`)
answers `regular` for every file, as a Hub without large-file storage would.

Writes need `Authorization: Bearer <token>` with a token from `tokens` (401 otherwise), and a token
may write only to its user's namespace (403 otherwise). Every request is recorded in `requests`.
"""

import base64
import fnmatch
import hashlib
import http.server
import json
import secrets
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
tokenizer.json filter=lfs diff=lfs merge=lfs -text
"""
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob, which the Hub reports as a file's `oid` and regular files' ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    content: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def oid(self) -> str:
        """git's id of what the repo stores: the file itself, or its LFS pointer."""
        return git_blob_id(lfs_pointer(self.sha256, len(self.content)) if self.lfs else self.content)


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def add_commit(self, branch: str, summary: str, files: dict[str, Blob]) -> Commit:
        parent = self.branches.get(branch)
        seed = f"{self.repo_id}|{parent}|{summary}|{len(self.commits)}|" + "|".join(
            f"{path}:{blob.oid}" for path, blob in sorted(files.items())
        )
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, summary, files)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit

    def lfs_patterns(self) -> list[str]:
        head = self.resolve("main")
        attributes = head.files.get(".gitattributes") if head else None
        lines = attributes.content.decode().splitlines() if attributes else []
        return [line.split()[0] for line in lines if "filter=lfs" in line]


class HubError(Exception):
    """An HTTP error answer, with the `X-Error-Code` that huggingface_hub maps to its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Request:
    method: str
    path: str
    user: str | None
    status: int = 0


class HubServer:
    """Run with `with HubServer() as hub:`; `hub.url` is what `HF_ENDPOINT` should be."""

    def __init__(self, tokens: dict[str, str] | None = None, lfs: bool = False):
        self.tokens = tokens if tokens is not None else {"test-token": "tester"}
        self.lfs = lfs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.pending_uploads: dict[str, tuple[str, int]] = {}  # oid -> (signature, size)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # What tests look at.

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def pushed_commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """Commits made through the commit API, oldest first (not the repo's initial commit)."""
        commits = self.repo(repo_id, repo_type).commits.values()
        return [c for c in commits if c.parent is not None]

    # The API.

    def user_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        return self.tokens.get(authorization.removeprefix("Bearer "))

    def require_writer(self, user: str | None, repo_id: str) -> None:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to create or write to {repo_id}")

    def find_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and repo_id.split("/")[0] != user):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def find_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def create_repo(self, body: dict, user: str | None) -> tuple[int, dict]:
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        repo_type = body.get("type") or "model"
        self.require_writer(user, repo_id)
        url = f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": f"You already created this {repo_type} repo", "url": url}
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private)
        repo.add_commit("main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES)})
        return 200, {"url": url, "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        """The Hub refuses a header that is not YAML, and a `base_model` that is not a Hub model id."""
        content = body.get("content", "")
        if not content.startswith("---"):
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            meta = yaml.safe_load(content.split("---")[1]) or {}
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": f"YAML: {exc}"}]}
        bases = meta.get("base_model") or []
        errors = [
            {"message": f'"base_model" with value "{base}" is not valid. Use a model id from https://hf.co/models.'}
            for base in ([bases] if isinstance(bases, str) else bases)
            if not isinstance(base, str) or base.count("/") != 1 or base.startswith(("/", "."))
        ]
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        head = self.find_commit(repo, revision)
        patterns = repo.lfs_patterns() if self.lfs else []
        answers = []
        for entry in body["files"]:
            path, size = entry["path"], entry["size"]
            lfs = size > 0 and any(fnmatch.fnmatch(path.split("/")[-1], p) for p in patterns)
            existing = head.files.get(path)
            remote_oid = None
            if existing is not None:
                remote_oid = existing.sha256 if existing.lfs else git_blob_id(existing.content)
            answers.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote_oid}
            )
        return {"files": answers, "commitOid": head.oid}

    def commit(self, repo: Repo, revision: str, ndjson: bytes) -> dict:
        head = self.find_commit(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"Can only commit to a branch, not to {revision}")
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                content = self.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = Blob(content, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        commit = repo.add_commit(revision, header["summary"], files)
        url = f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        return {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}

    def create_branch(self, repo: Repo, branch: str, body: dict) -> tuple[int, dict]:
        if branch in repo.branches:
            return 409, {"error": f"Reference refs/heads/{branch} already exists"}
        repo.branches[branch] = self.find_commit(repo, body.get("startingPoint") or "main").oid
        return 200, {}

    def repo_info(self, repo: Repo, revision: str) -> dict:
        commit = self.find_commit(repo, revision)
        siblings = [
            {
                "rfilename": path,
                "size": len(blob.content),
                "blobId": blob.oid,
                **({"lfs": {"sha256": blob.sha256, "size": len(blob.content), "pointerSize": 134}} if blob.lfs else {}),
            }
            for path, blob in sorted(commit.files.items())
        ]
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.oid,
            "private": repo.private,
            "siblings": siblings,
            "tags": [],
        }

    def tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> list[dict]:
        commit = self.find_commit(repo, revision)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        under = [p for p in sorted(commit.files) if p.startswith(prefix)]
        if prefix and not under:
            raise HubError(404, f"{folder} does not exist at {revision}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for path in under:
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder_path = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    folder_path,
                    {"type": "directory", "oid": git_blob_id(folder_path.encode()), "size": 0, "path": folder_path},
                )
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                blob = commit.files[path]
                entry = {"type": "file", "oid": blob.oid, "size": len(blob.content), "path": path}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": 134}
                entries[path] = entry
        return list(entries.values())

    def lfs_batch(self, repo: Repo, body: dict) -> dict:
        if body.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for obj in body["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                signature = secrets.token_hex(8)
                self.pending_uploads[obj["oid"]] = (signature, obj["size"])
                prefix = f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}?sig={signature}"},
                    "verify": {"href": f"{prefix}.git/info/lfs/objects/verify"},
                }
            objects.append(answer)
        return {"transfer": "basic", "objects": objects}

    def lfs_upload(self, oid: str, signature: str, content: bytes) -> None:
        """Like a presigned S3 URL: authorized by the signature in the query, not by a header."""
        expected = self.pending_uploads.get(oid)
        if expected is None or expected[0] != signature:
            raise HubError(403, "Request signature does not match")
        if len(content) != expected[1] or hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match its oid and size")
        self.lfs_objects[oid] = content
        del self.pending_uploads[oid]

    def lfs_verify(self, body: dict) -> dict:
        content = self.lfs_objects.get(body["oid"])
        if content is None or len(content) != body["size"]:
            raise HubError(404, f"LFS object {body['oid']} not found")
        return {}


def _split(path: str) -> list[str]:
    return [unquote(part) for part in path.strip("/").split("/")]


def _handler_for(hub: HubServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            url = urlsplit(self.path)
            user = hub.user_for(self.headers.get("Authorization"))
            record = Request(self.command, url.path, user)
            body = self._body() if self.command in ("POST", "PUT") else b""
            with hub.lock:
                hub.requests.append(record)
                try:
                    status, payload, headers = self._route(url.path, parse_qs(url.query), body, user)
                except HubError as err:
                    status, payload = err.status, {"error": err.message}
                    headers = {"X-Error-Message": err.message, **({"X-Error-Code": err.code} if err.code else {})}
                record.status = status
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers.setdefault("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _route(
            self, path: str, query: dict, body: bytes, user: str | None
        ) -> tuple[int, dict | list | bytes, dict]:
            parts = _split(path)
            method = self.command
            if method == "POST" and parts == ["api", "repos", "create"]:
                status, payload = hub.create_repo(json.loads(body), user)
                return status, payload, {}
            if method == "POST" and parts == ["api", "validate-yaml"]:
                status, payload = hub.validate_yaml(json.loads(body))
                return status, payload, {}
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in REPO_TYPES:
                return self._api(REPO_TYPES[parts[1]], "/".join(parts[2:4]), parts[4:], method, query, body, user)
            if method == "PUT" and parts[:1] == ["lfs-upload"] and len(parts) == 2:
                hub.lfs_upload(parts[1], query.get("sig", [""])[0], body)
                return 200, {}, {}
            repo_type = "model"
            if parts[0] in REPO_TYPES and len(parts) > 2 and parts[0] != "models":
                repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
            if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                repo_id = f"{parts[0]}/{parts[1].removesuffix('.git')}"
                hub.require_writer(user, repo_id)
                return (
                    200,
                    hub.lfs_batch(hub.find_repo(repo_type, repo_id, user), json.loads(body)),
                    {"Content-Type": "application/vnd.git-lfs+json"},
                )
            if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "verify"]:
                hub.require_writer(user, f"{parts[0]}/{parts[1].removesuffix('.git')}")
                return 200, hub.lfs_verify(json.loads(body)), {}
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(hub.find_repo(repo_type, "/".join(parts[:2]), user), parts[3], "/".join(parts[4:]))
            raise HubError(404, f"no route for {method} {path}")

        def _api(
            self, repo_type: str, repo_id: str, rest: list[str], method: str, query: dict, body: bytes, user: str | None
        ):
            repo = hub.find_repo(repo_type, repo_id, user)
            if method == "GET" and not rest:
                return 200, hub.repo_info(repo, "main"), {}
            if method == "GET" and rest[:1] == ["revision"] and len(rest) == 2:
                return 200, hub.repo_info(repo, rest[1]), {}
            if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return 200, hub.tree(repo, rest[1], "/".join(rest[2:]), recursive), {}
            if method == "POST" and len(rest) == 2 and rest[0] in ("preupload", "commit", "branch"):
                hub.require_writer(user, repo_id)
                if rest[0] == "preupload":
                    return 200, hub.preupload(repo, rest[1], json.loads(body)), {}
                if rest[0] == "commit":
                    return 200, hub.commit(repo, rest[1], body), {}
                status, payload = hub.create_branch(repo, rest[1], json.loads(body or b"{}"))
                return status, payload, {}
            raise HubError(404, f"no route for {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

        def _resolve(self, repo: Repo, revision: str, path: str):
            commit = hub.find_commit(repo, revision)
            blob = commit.files.get(path)
            headers = {"X-Repo-Commit": commit.oid}
            if blob is None:
                return 404, {"error": f"{path} does not exist"}, {**headers, "X-Error-Code": "EntryNotFound"}
            etag = blob.sha256 if blob.lfs else git_blob_id(blob.content)
            headers.update({"ETag": f'"{etag}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"})
            if blob.lfs:
                headers["X-Linked-Etag"] = f'"{etag}"'
                headers["X-Linked-Size"] = str(len(blob.content))
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged.endswith("-"):
                start = int(ranged[6:-1])
                headers["Content-Range"] = f"bytes {start}-{len(blob.content) - 1}/{len(blob.content)}"
                return 206, blob.content[start:], headers
            return 200, blob.content, headers

    return Handler
